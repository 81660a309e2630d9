"""Training objectives: in-batch InfoNCE, negative sample recycling (feature queues)
and PE-RSITR's HMMC.

All functions take L2-normalised features and a logit scale (1/temperature).
``image_ids`` name the image each row comes from: captions of the same image
(siblings) are never used as each other's negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_cross_entropy(logits: torch.Tensor, false_negatives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the positive on the diagonal; ``false_negatives`` entries are removed."""
    logits = logits.masked_fill(false_negatives, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _siblings(image_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) True where two rows share an image but are not the same row."""
    same = image_ids[:, None] == image_ids[None, :]
    return same & ~torch.eye(len(image_ids), dtype=torch.bool, device=image_ids.device)


def info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
             image_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric in-batch InfoNCE; row i of ``image`` and ``text`` form a positive pair."""
    logits = logit_scale * image @ text.T
    siblings = _siblings(image_ids)
    return 0.5 * (_masked_cross_entropy(logits, siblings) + _masked_cross_entropy(logits.T, siblings))


def intra_modal_nce(clean: torch.Tensor, augmented: torch.Tensor, logit_scale: torch.Tensor | float,
                    image_ids: torch.Tensor) -> torch.Tensor:
    """SimCSE-style term: a feature must find its own dropout-augmented view among the batch."""
    return info_nce(clean, augmented, logit_scale, image_ids)


def hmmc_loss(image: torch.Tensor, text: torch.Tensor, image_aug: torch.Tensor, text_aug: torch.Tensor,
              logit_scale: torch.Tensor | float, image_ids: torch.Tensor,
              weight_image: float = 1.0, weight_text: float = 1.0) -> torch.Tensor:
    """HMMC as re-implemented here (the paper's formula is not public, methods.md §1.4):

        L = L_cm(I, T) + λ_v · L_intra(I, I_aug) + λ_t · L_intra(T, T_aug)

    every term a symmetric InfoNCE over in-batch cosine similarities, with
    captions of the same image masked out as negatives. The intra-modal terms
    push apart the very similar images (and captions) of RS datasets.
    """
    return (info_nce(image, text, logit_scale, image_ids)
            + weight_image * intra_modal_nce(image, image_aug, logit_scale, image_ids)
            + weight_text * intra_modal_nce(text, text_aug, logit_scale, image_ids))


class FeatureQueues(torch.nn.Module):
    """Negative sample recycling: FIFO queues of past image and text features.

    Features are stored detached (no extra encoder, no gradient into the past),
    with their image ids so that sibling captions are masked as negatives. The
    pool size is independent of the batch size.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, dim))
        self.register_buffer("texts", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))

    @property
    def filled(self) -> int:
        return int((self.ids >= 0).sum())

    @torch.no_grad()
    def push(self, image: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor) -> None:
        n = min(len(image_ids), self.size)
        slots = (self.cursor + torch.arange(n, device=self.ids.device)) % self.size
        self.images[slots] = image[-n:].detach().to(self.images.dtype)
        self.texts[slots] = text[-n:].detach().to(self.texts.dtype)
        self.ids[slots] = image_ids[-n:].to(self.ids.device)
        self.cursor.copy_((self.cursor + n) % self.size)

    def loss(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
             image_ids: torch.Tensor) -> torch.Tensor:
        """InfoNCE of each in-batch pair against the queued features of the other modality."""
        valid = self.ids >= 0
        if not bool(valid.any()):
            return image.new_zeros(())
        queued_ids = self.ids[valid]
        positive = (image * text).sum(-1, keepdim=True)
        stale_same = image_ids[:, None] == queued_ids[None, :]  # the anchor's own image or its captions

        def term(anchor: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            neg = (anchor @ negatives.T).masked_fill(stale_same, float("-inf"))
            logits = logit_scale * torch.cat([positive, neg], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))

        return 0.5 * (term(image, self.texts[valid]) + term(text, self.images[valid]))
