"""Training a :class:`~georet.models.tower_clip.TowerCLIP` from tower features, cached or live.

The loop is the same for every method; only where tower outputs come from
differs. :class:`CachedFeatures` reads them from a :class:`FeatureCache`
(frozen towers: ``lit``, ``focus``, and the image side of ``mrs``);
:class:`LiveImages` / :class:`LiveTexts` run the tower every step (``full``,
and MiniLM with its MRS adapters). Model selection uses validation mR only.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from georet.errors import GeoretError
from georet.models import Preprocess
from georet.models.tower_clip import TowerCLIP
from georet.training.data import load_image
from georet.training.feature_cache import FeatureCache, augment_view, resize_square
from georet.training.losses import FeatureQueues, hmmc_loss, info_nce
from georet.training.metrics import retrieval_recalls
from georet.training.step import MAX_LOGIT_SCALE, make_optimizer


class ImageSource(Protocol):
    def features(self, items: np.ndarray, train: bool) -> tuple[list[torch.Tensor], torch.Tensor]: ...


class TextSource(Protocol):
    def features(self, items: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]: ...


@dataclass
class CachedFeatures:
    """Tower outputs from a cache; training batches draw a random view of each image."""

    cache: FeatureCache
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def features(self, items: np.ndarray, train: bool = False):
        views = self.rng.integers(self.cache.views, size=len(items)) if train and self.cache.views > 1 else 0
        return self.cache.batch(items, views)


@dataclass
class LiveImages:
    """The image tower run on every batch (gradients flow when the tower trains)."""

    model: TowerCLIP
    paths: Sequence[Path]
    preprocess: Preprocess
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def features(self, items: np.ndarray, train: bool = False):
        pixels = [load_image(self.paths[i]) for i in items]
        if train:
            size = pixels[0].shape[0]
            pixels = [resize_square(augment_view(p, self.rng), size) if self.rng.random() < 0.67 else p
                      for p in pixels]
        with torch.set_grad_enabled(train and torch.is_grad_enabled()):
            return self.model.image_features(self.preprocess.apply(np.stack(pixels)))


@dataclass
class LiveTexts:
    """The text tower run on every batch, from token ids."""

    model: TowerCLIP
    ids: torch.Tensor

    def features(self, items: np.ndarray):
        return self.model.text_features(self.ids[torch.from_numpy(np.asarray(items))])


@dataclass(frozen=True)
class Pairs:
    """Training pairs: caption j shows image ``image[j]``; its text is ``text[j]`` (``scene_text[j]`` scene-prefixed)."""

    image: np.ndarray
    text: np.ndarray
    scene_text: np.ndarray | None = None


@dataclass(frozen=True)
class EvalSet:
    """Images and captions to rank: rows of the image and text sources, and each caption's image (0-based in ``image``)."""

    image: np.ndarray
    text: np.ndarray
    caption_image: np.ndarray


@dataclass(frozen=True)
class Schedule:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    eval_every: int = 250
    queue_size: int = 0
    queue_weight: float = 1.0
    queue_warmup_steps: int = 200
    scene_aug_p: float = 0.0
    #: "infonce", or "hmmc": PE-RSITR's loss, whose intra-modal terms need a second view of each side
    #: (another cached view of the image; the text again through dropout, in MRS's adapters or side branch)
    loss: Literal["infonce", "hmmc"] = "infonce"
    #: stop after this many seconds of training (None: run all steps), for equal-wall-clock baselines
    time_budget_s: float | None = None
    seed: int = 0


@dataclass
class TrainResult:
    best_step: int
    best_val: dict[str, float]
    history: list[dict[str, float]]
    samples_per_s: float
    state: dict[str, torch.Tensor] = field(repr=False)


def embed(model: TowerCLIP, images: ImageSource, texts: TextSource, data: EvalSet, batch_size: int = 512
          ) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length embeddings of an evaluation set's images and captions."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        img = [F.normalize(model.embed_image(*images.features(data.image[s:s + batch_size])), dim=-1)
               for s in range(0, len(data.image), batch_size)]
        txt = [F.normalize(model.embed_text(*texts.features(data.text[s:s + batch_size])), dim=-1)
               for s in range(0, len(data.text), batch_size)]
    model.train(was_training)
    return torch.cat(img).numpy(), torch.cat(txt).numpy()


def evaluate(model: TowerCLIP, images: ImageSource, texts: TextSource, data: EvalSet) -> dict[str, float]:
    image_feats, text_feats = embed(model, images, texts, data)
    return retrieval_recalls(image_feats @ text_feats.T, data.caption_image)


def train(model: TowerCLIP, images: ImageSource, texts: TextSource, pairs: Pairs, val: EvalSet,
          schedule: Schedule, progress: bool = True) -> TrainResult:
    """AdamW with warm-up + cosine over the model's trainable parameters; keeps the best-on-validation state."""
    from tqdm.auto import tqdm

    if schedule.loss not in ("infonce", "hmmc"):
        raise GeoretError(f"unknown loss {schedule.loss!r}; use infonce or hmmc")
    torch.manual_seed(schedule.seed)
    rng = np.random.default_rng(schedule.seed)
    for name, param in model.named_parameters():
        param.requires_grad_(model.is_trainable(name))
    optimizer = make_optimizer(model, schedule.lr, schedule.weight_decay)

    def lr_at(step: int) -> float:
        if step < schedule.warmup_steps:
            return schedule.lr * (step + 1) / schedule.warmup_steps
        progress_ = (step - schedule.warmup_steps) / max(1, schedule.steps - schedule.warmup_steps)
        return schedule.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    queues = FeatureQueues(schedule.queue_size, model.cfg.embed_dim) if schedule.queue_size else None
    best = TrainResult(-1, {"mR": -1.0}, [], 0.0, {})
    order = np.array([], dtype=np.int64)
    seen, train_seconds = 0, 0.0
    model.train()
    bar = tqdm(range(schedule.steps), desc=f"train {model.cfg.method}", disable=not progress)
    for step in bar:
        if len(order) < schedule.batch_size:
            order = np.concatenate([order, rng.permutation(len(pairs.image))])
        batch, order = order[:schedule.batch_size], order[schedule.batch_size:]
        text_rows = pairs.text[batch]
        if pairs.scene_text is not None and schedule.scene_aug_p > 0:
            use_scene = (rng.random(len(batch)) < schedule.scene_aug_p) & (pairs.scene_text[batch] >= 0)
            text_rows = np.where(use_scene, pairs.scene_text[batch], text_rows)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        started = time.perf_counter()
        image = F.normalize(model.embed_image(*images.features(pairs.image[batch], train=True)), dim=-1)
        text = F.normalize(model.embed_text(*texts.features(text_rows)), dim=-1)
        image_ids = torch.from_numpy(pairs.image[batch])
        scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        if schedule.loss == "hmmc":
            image_aug = F.normalize(model.embed_image(*images.features(pairs.image[batch], train=True)), dim=-1)
            text_aug = F.normalize(model.embed_text(*texts.features(text_rows)), dim=-1)
            loss = hmmc_loss(image, text, image_aug, text_aug, scale, image_ids)
        else:
            loss = info_nce(image, text, scale, image_ids)
        if queues is not None and step >= schedule.queue_warmup_steps:
            loss = loss + schedule.queue_weight * queues.loss(image, text, scale, image_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if queues is not None:
            queues.push(image.detach(), text.detach(), image_ids)
        train_seconds += time.perf_counter() - started
        seen += len(batch)
        out_of_time = schedule.time_budget_s is not None and train_seconds >= schedule.time_budget_s
        if (step + 1) % schedule.eval_every == 0 or step + 1 == schedule.steps or out_of_time:
            metrics = evaluate(model, images, texts, val)
            best.history.append({"step": step + 1, "loss": float(loss.detach()), **metrics})
            bar.set_postfix(val_mR=f"{metrics['mR']:.2f}")
            if metrics["mR"] > best.best_val["mR"]:
                best.best_step, best.best_val = step + 1, metrics
                best.state = copy.deepcopy(model.trainable_state_dict())
        if out_of_time:
            break
    best.samples_per_s = seen / max(train_seconds, 1e-9)
    model.load_state_dict(best.state, strict=False)
    return best
