"""How tile pixels become model input: resize, crop and normalise, as open_clip does."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocess:
    """How tile pixels become model input; stored with the index.

    open_clip derives this from the pretrained config; loading a bare weights
    file would otherwise silently fall back to the architecture's defaults
    (open_clip #1068), so the index keeps the values it was built with.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> "Preprocess":
        size = cfg["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            size=(int(size[0]), int(size[1])),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            resize_mode=str(cfg.get("resize_mode", "shortest")),
        )

    def apply(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 tiles (N, H, W, 3) -> normalised float tensor (N, 3, h, w).

        Shortest-side resize then centre crop, as open_clip's own transform does
        for ``resize_mode='shortest'``; tiles are square in practice, so this is
        a plain resize. Runs in torch so it can overlap the model in a thread.
        """
        import torch  # here, not at the top: query text is encoded without torch (georet.models.text_query)
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
        out_h, out_w = self.size
        in_h, in_w = x.shape[-2:]
        if (in_h, in_w) != (out_h, out_w):
            scale = max(out_h / in_h, out_w / in_w)
            mid_h, mid_w = max(out_h, round(in_h * scale)), max(out_w, round(in_w * scale))
            mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
            x = F.interpolate(x, size=(mid_h, mid_w), mode=mode, antialias=True, align_corners=False)
            top, left = (mid_h - out_h) // 2, (mid_w - out_w) // 2
            x = x[..., top : top + out_h, left : left + out_w].clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


def tower_preprocess(image_size: int) -> Preprocess:
    """The input of georet's tower models (georet-base): square, scaled to [-1, 1], bicubic."""
    return Preprocess(size=(image_size, image_size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
