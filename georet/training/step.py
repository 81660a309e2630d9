"""One training step for every method: forward both towers, the configured loss, backward, update.

The trainer and ``benchmarks/train_efficiency.py`` both run exactly this, so
the memory and throughput measured there are those of real training.
"""

from __future__ import annotations

import torch

from georet.models import AdaptedCLIP
from georet.training.config import LossConfig
from georet.training.losses import FeatureQueues, hmmc_loss, info_nce

#: Upper bound of the learned logit scale (1/temperature), as in CLIP, so training cannot diverge through it.
MAX_LOGIT_SCALE = 100.0


def make_optimizer(adapted: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW | None:
    """AdamW over the trainable parameters only (None when nothing trains); no decay on gains and biases."""
    params = [p for p in adapted.parameters() if p.requires_grad]
    if not params:
        return None
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr)


class TrainingStep:
    """The loss of a batch and one optimiser update, with the feature queues that outlive batches."""

    def __init__(self, adapted: AdaptedCLIP, loss: LossConfig, embed_dim: int, device: torch.device,
                 amp: bool = True):
        self.adapted = adapted
        self.loss_config = loss
        self.device = device
        self.use_amp = amp and device.type == "cuda"
        self.queues = FeatureQueues(loss.queue_size, embed_dim).to(device) if loss.queue_size else None

    def loss(self, images: torch.Tensor, tokens: torch.Tensor, image_ids: torch.Tensor, step: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, image features, text features) of one batch; the queue joins after its warm-up steps."""
        cfg, model = self.loss_config, self.adapted
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            image = model.encode_image(images, normalize=True)
            text = model.encode_text(tokens, normalize=True)
            scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
            if cfg.name == "hmmc":
                p = cfg.hmmc_token_dropout
                loss = hmmc_loss(image, text, model.encode_image(images, True, p), model.encode_text(tokens, True, p),
                                 scale, image_ids, cfg.hmmc_weight_image, cfg.hmmc_weight_text)
            else:
                loss = info_nce(image, text, scale, image_ids)
            if self.queues is not None and step >= cfg.queue_warmup_steps:
                loss = loss + cfg.queue_weight * self.queues.loss(image, text, scale, image_ids)
        return loss, image, text

    def __call__(self, optimizer: torch.optim.Optimizer, images: torch.Tensor, tokens: torch.Tensor,
                 image_ids: torch.Tensor, step: int) -> float:
        """One update; returns the batch loss."""
        loss, image, text = self.loss(images, tokens, image_ids, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if self.queues is not None:
            self.queues.push(image.float(), text.float(), image_ids)
        return float(loss.detach())
