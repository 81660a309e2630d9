"""Frozen-tower features computed once, so CMER trains on 2 CPU cores.

Under ``lit`` and ``focus`` nothing before the side branches trains, so the
towers' outputs (tapped token maps and pooled features) are the same at every
step. Computing them once, in float16 on disk, and training the side branches
and heads over the cache for many epochs turns hours of backbone passes into
minutes. Each image is cached in the views the model itself embeds (its
quarter turns and centre crop, :meth:`TowerCLIP.views`: validation averages
them as inference does) and then a few augmented views (flips, 90° turns,
crops: aerial imagery has no "up"), so training batches do not see the same
features every epoch; optionally views with a sensor shift as well
(:func:`sensor_shift`), the look of imagery the training chips do not have.

Layout of a cache folder: one ``.npy`` per array (memory-mapped on load) and
``meta.json`` naming the model config, the image size and the views, so a
cache is never used with a model it was not made for.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from georet.errors import ConflictError, GeoretError
from georet.models import Preprocess
from georet.models.tower_clip import TowerCLIP
from georet.training.data import load_image, same_size


@dataclass
class FeatureCache:
    """Tower outputs: ``taps[k]`` (views, items, tokens, C), ``pooled`` (views, items, P); text adds ``mask``.

    The first ``model_views`` views are the model's own (what inference averages).
    """

    taps: list[np.ndarray]
    pooled: np.ndarray
    mask: np.ndarray | None = None
    model_views: int = 1

    @property
    def views(self) -> int:
        return self.pooled.shape[0]

    def batch(self, items: np.ndarray, views: np.ndarray | int = 0, device: torch.device | str = "cpu"):
        """Torch tensors (float32) for the given items, each from its view."""
        def take(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[views, items])).float().to(device)

        taps = [take(t) for t in self.taps]
        pooled = take(self.pooled)
        if self.mask is None:
            return taps, pooled
        return taps, torch.from_numpy(self.mask[items]).to(device), pooled

    @classmethod
    def concat(cls, caches: Sequence["FeatureCache"]) -> "FeatureCache":
        """Image caches of consecutive parts of one table (same views), as one; a single cache as it is."""
        if len(caches) == 1:
            return caches[0]
        if len({(c.views, c.model_views) for c in caches}) != 1:
            raise ConflictError("feature caches of one table must have the same views")
        return cls([np.concatenate([c.taps[k] for c in caches], axis=1) for k in range(len(caches[0].taps))],
                   np.concatenate([c.pooled for c in caches], axis=1), None, caches[0].model_views)

    def save(self, folder: Path, meta: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for k, tap in enumerate(self.taps):
            np.save(folder / f"tap{k}.npy", tap)
        np.save(folder / "pooled.npy", self.pooled)
        if self.mask is not None:
            np.save(folder / "mask.npy", self.mask)
        (folder / "meta.json").write_text(json.dumps({**meta, "model_views": self.model_views}, indent=1))

    @classmethod
    def load(cls, folder: Path, expect_meta: dict) -> "FeatureCache":
        meta_file = folder / "meta.json"
        if not meta_file.is_file():
            raise GeoretError(f"{folder} is not a feature cache (no meta.json)")
        meta = json.loads(meta_file.read_text())
        model_views = meta.pop("model_views", None)
        if model_views is None or meta != json.loads(json.dumps(expect_meta)):
            raise ConflictError(f"feature cache {folder} was made for another model or data; delete it to rebuild")
        taps = [np.load(p, mmap_mode="r") for p in sorted(folder.glob("tap*.npy"))]
        mask = np.load(folder / "mask.npy") if (folder / "mask.npy").is_file() else None
        return cls(taps, np.load(folder / "pooled.npy", mmap_mode="r"), mask, int(model_views))


def augment_view(pixels: np.ndarray, rng: np.random.Generator, min_crop: float = 0.6) -> np.ndarray:
    """A random flip / 90° turn / square crop of one (H, W, 3) image."""
    pixels = np.rot90(pixels, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    h, w = pixels.shape[:2]
    side = int(round(min(h, w) * rng.uniform(min_crop, 1.0)))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    return np.ascontiguousarray(pixels[top:top + side, left:left + side])


def sensor_shift(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random shift of what another sensor or product does to an (H, W, 3) uint8 image.

    Blur (optics, resampling), coarser pixels (a 10 m sensor, an overview), a
    bluish haze with lifted blacks and a colour cast (uint8 "visual" products),
    JPEG artefacts: the shifts that cost the default model most on validation
    chips (experiments/prompt_ensembles).
    """
    from PIL import Image, ImageFilter

    image = Image.fromarray(pixels)
    kind = int(rng.integers(5))
    if kind == 0:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.7, 2.5))))
    elif kind == 1:
        factor = float(rng.uniform(2.0, 5.0))
        small = (max(8, round(image.width / factor)), max(8, round(image.height / factor)))
        image = image.resize(small, Image.BILINEAR).resize(image.size, Image.BILINEAR)
    elif kind == 4:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(15, 50)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    else:
        x = np.asarray(image, np.float32)
        if kind == 2:  # haze: contrast down, blacks lifted towards a bluish grey
            keep = float(rng.uniform(0.5, 0.8))
            x = x * keep + (1 - keep) * np.array([200.0, 215.0, 240.0]) * float(rng.uniform(0.7, 1.1))
        else:  # colour cast
            x = x * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-25.0, 25.0, size=3)
        return np.clip(x, 0, 255).round().astype(np.uint8)
    return np.array(image)  # writable, as torch.from_numpy wants


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """An (h, w, 3) uint8 view resized to (size, size, 3): augmented crops go back to the chips' size."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


@torch.inference_mode()
def cache_images(model: TowerCLIP, paths: Sequence[Path], preprocess: Preprocess, augmented: int = 0,
                 seed: int = 0, batch_size: int = 64, pooled_only: bool = False,
                 progress: bool = True, sensor: int = 0) -> FeatureCache:
    """Image tower outputs, float16: the model's own views of every image, then ``augmented`` random views,
    then ``sensor`` random views with a sensor shift."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    bar = tqdm(total=len(paths), desc="image features", unit="img", disable=not progress)
    chunks = []  # per batch: ([per view: taps], [per view: pooled])
    model_views = None
    for start in range(0, len(paths), batch_size):
        pixels = same_size([load_image(p) for p in paths[start:start + batch_size]])
        views = model.views(preprocess.apply(np.stack(pixels)))
        model_views = len(views)
        for _ in range(augmented):
            views.append(preprocess.apply(np.stack([resize_square(augment_view(p, rng), p.shape[0]) for p in pixels])))
        for _ in range(sensor):
            views.append(preprocess.apply(np.stack([resize_square(sensor_shift(augment_view(p, rng), rng), p.shape[0])
                                                    for p in pixels])))
        outputs = [model.image_features(view) for view in views]
        chunks.append(([[] if pooled_only else [t.half().numpy() for t in taps] for taps, _ in outputs],
                       [pooled.half().numpy() for _, pooled in outputs]))
        bar.update(len(pixels))
    bar.close()
    n_views = len(chunks[0][1])
    pooled = np.stack([np.concatenate([c[1][v] for c in chunks]) for v in range(n_views)])
    taps = [] if pooled_only else [
        np.stack([np.concatenate([c[0][v][k] for c in chunks]) for v in range(n_views)])
        for k in range(len(chunks[0][0][0]))]
    return FeatureCache(taps, pooled, None, model_views)


@torch.inference_mode()
def cache_texts(model: TowerCLIP, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> FeatureCache:
    """Text tower outputs of every text (one view), float16, with the padding mask."""
    from tqdm.auto import tqdm

    tokenizer = model.text.tokenizer()
    taps_parts, pooled_parts, masks = [], [], []
    for start in tqdm(range(0, len(texts), batch_size), desc="text features", disable=not progress):
        taps, mask, pooled = model.text_features(tokenizer(list(texts[start:start + batch_size])))
        taps_parts.append([t.half().numpy() for t in taps])
        pooled_parts.append(pooled.half().numpy())
        masks.append(mask.numpy())
    taps = [np.concatenate([p[k] for p in taps_parts])[None] for k in range(len(taps_parts[0]))]
    return FeatureCache(taps, np.concatenate(pooled_parts)[None], np.concatenate(masks))
