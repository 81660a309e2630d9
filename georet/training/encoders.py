"""Batch encoders: rows of a :class:`~georet.training.pairs.PairTable` in, unit-length embeddings out.

The training loop (:func:`georet.training.trainer.fit`) sees only these, so it
is the same loop for every model family and method:

* :class:`ClipEncoder` runs an open_clip model wrapped in its method
  (:class:`~georet.models.AdaptedCLIP`) on images and tokens every batch.
* :class:`TowerEncoder` runs a :class:`~georet.models.TowerCLIP` from tower
  outputs that come from a feature cache (:class:`CachedImages`,
  :class:`CachedTexts`: frozen towers, what CMER's frozen backbone allows) or
  from the towers themselves (:class:`LiveImages`, :class:`LiveTexts`: full
  fine-tuning, and MiniLM with its MRS-Adapter).

``rng`` given means a training batch (random augmentations and views, dropout
where the model has it); ``None`` means evaluation, embedded as inference
embeds. ``view=1`` asks for HMMC's second view of the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from georet.models import AdaptedCLIP, Preprocess
from georet.models.tower_clip import TowerCLIP
from georet.training.data import load_image, same_size
from georet.training.feature_cache import FeatureCache, augment_view, resize_square

#: share of live training images given a random flip/turn/crop (the rest stay as they are)
AUGMENT_P = 0.67


class Encoder(Protocol):
    """What the loop and the evaluation need of a model."""

    model: torch.nn.Module

    def images(self, rows: np.ndarray, rng: np.random.Generator | None = None, view: int = 0) -> torch.Tensor: ...

    def texts(self, rows: np.ndarray, rng: np.random.Generator | None = None, view: int = 0) -> torch.Tensor: ...

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    @property
    def logit_scale(self) -> float: ...


class _PromptText:
    """``encode_text``/``logit_scale`` over an encoder's own text side, for zero-shot scene prompts."""

    model: torch.nn.Module

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        with torch.no_grad():
            return self._encode_strings(list(texts)).float().cpu().numpy()


@dataclass
class ClipEncoder(_PromptText):
    """An open_clip model under its method; training images get random flips (aerial views have no "up")."""

    model: AdaptedCLIP
    preprocess: Preprocess
    tokenizer: object
    paths: Sequence[Path]
    table_texts: Sequence[str]
    device: torch.device
    #: HMMC's second view: token dropout of this probability in both towers
    token_dropout: float = 0.2

    def images(self, rows, rng=None, view=0):
        pixels = [load_image(self.paths[r]) for r in rows]
        if rng is not None:
            pixels = [p[:, ::-1] if rng.random() < 0.5 else p for p in pixels]
            pixels = [p[::-1] if rng.random() < 0.5 else p for p in pixels]
        x = self.preprocess.apply(np.stack(pixels).copy()).to(self.device)
        return self.model.encode_image(x, normalize=True, token_dropout=self.token_dropout if view else 0.0)

    def texts(self, rows, rng=None, view=0):
        tokens = self.tokenizer([self.table_texts[r] for r in rows]).to(self.device)
        return self.model.encode_text(tokens, normalize=True, token_dropout=self.token_dropout if view else 0.0)

    def _encode_strings(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)


@dataclass
class CachedImages:
    """Image tower outputs from a cache.

    Training draws one view per image among the cache's views and, with
    ``view_mean`` (heads-only training, where the head reads the mean of the
    views' pooled features at inference), that mean as one more view.
    Evaluation averages the fused features of the model's own views, as
    :meth:`TowerCLIP.encode_image` does.
    """

    cache: FeatureCache
    device: torch.device
    view_mean: bool = False

    def sample(self, model: TowerCLIP, rows: np.ndarray, rng: np.random.Generator):
        views = self.cache.views
        pick = rng.integers(views + int(self.view_mean), size=len(rows))
        taps, pooled = self.cache.batch(rows, np.minimum(pick, views - 1), self.device)
        if self.view_mean:
            mean = self.model_view_mean(rows)
            pooled = torch.where(torch.from_numpy(pick == views).to(self.device)[:, None], mean, pooled)
        return taps, pooled

    def model_view_mean(self, rows: np.ndarray) -> torch.Tensor:
        """The mean of the model's own views' pooled features: what a heads-only model's head reads."""
        return torch.stack([self.cache.batch(rows, v, self.device)[1]
                            for v in range(self.cache.model_views)]).mean(0)

    def inference(self, model: TowerCLIP, rows: np.ndarray) -> torch.Tensor:
        fused = [model.fused_image_feature(*self.cache.batch(rows, v, self.device))
                 for v in range(self.cache.model_views)]
        return model.image_head(torch.stack(fused).mean(0))


@dataclass
class LiveImages:
    """The image tower run on every batch (gradients flow when the tower trains)."""

    paths: Sequence[Path]
    preprocess: Preprocess
    device: torch.device

    def sample(self, model: TowerCLIP, rows: np.ndarray, rng: np.random.Generator):
        pixels = [load_image(self.paths[r]) for r in rows]
        size = pixels[0].shape[0]
        pixels = [resize_square(augment_view(p, rng), size) if rng.random() < AUGMENT_P else p for p in pixels]
        return model.image_features(self.preprocess.apply(np.stack(pixels)).to(self.device))

    def inference(self, model: TowerCLIP, rows: np.ndarray) -> torch.Tensor:
        pixels = np.stack(same_size([load_image(self.paths[r]) for r in rows]))
        views = model.views(self.preprocess.apply(pixels).to(self.device))
        return model.image_head(torch.stack([model.fused_image_feature(*model.image_features(v))
                                             for v in views]).mean(0))


@dataclass
class CachedTexts:
    cache: FeatureCache
    device: torch.device

    def features(self, model: TowerCLIP, rows: np.ndarray):
        return self.cache.batch(rows, 0, self.device)


@dataclass
class LiveTexts:
    """The text tower run on every batch, from token ids."""

    ids: torch.Tensor
    device: torch.device

    def features(self, model: TowerCLIP, rows: np.ndarray):
        return model.text_features(self.ids[torch.from_numpy(np.asarray(rows))].to(self.device))


@dataclass
class TowerEncoder(_PromptText):
    model: TowerCLIP
    image_source: CachedImages | LiveImages
    text_source: CachedTexts | LiveTexts
    device: torch.device

    def images(self, rows, rng=None, view=0):
        if rng is None:
            return F.normalize(self.image_source.inference(self.model, rows), dim=-1)
        return F.normalize(self.model.embed_image(*self.image_source.sample(self.model, rows, rng)), dim=-1)

    def texts(self, rows, rng=None, view=0):
        return F.normalize(self.model.embed_text(*self.text_source.features(self.model, rows)), dim=-1)

    def _encode_strings(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.model.text.tokenizer()(texts).to(self.device)), dim=-1)


def embed_rows(encoder: Encoder, rows, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length embeddings of an evaluation set's images and captions, as inference makes them."""
    model = encoder.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        images = [encoder.images(rows.image[s:s + batch_size]).float().cpu()
                  for s in range(0, len(rows.image), batch_size)]
        texts = [encoder.texts(rows.text[s:s + batch_size]).float().cpu()
                 for s in range(0, len(rows.text), batch_size)]
    model.train(was_training)
    return torch.cat(images).numpy(), torch.cat(texts).numpy()
