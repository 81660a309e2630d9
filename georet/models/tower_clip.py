"""TowerCLIP: pretrained single-modality towers (EfficientNet-Lite, MiniLM) joined into one space.

georet-base is built from this. Each tower runs frozen (except under full
fine-tuning) and hands on *tapped* intermediate token maps and a pooled
feature; what trains sits after the towers. The methods are those of
:mod:`georet.models.adapters`, with the same modules:

``frozen``
    the two heads only (LiT: locked image tower, here both locked).
``full``
    both towers and the heads (full fine-tuning baseline).
``mrs``
    PE-RSITR's MRS-Adapter (:class:`~georet.models.adapters.MRSAdapter`)
    inside the transformer tower (MiniLM; the CNN has no blocks with an MLP to
    run parallel to) plus the heads.
``focus``
    CMER's Focus-Adapter (:class:`~georet.models.adapters.SideBranch`) over
    CNN stage maps (each spatial position a token) and BERT hidden states
    (with their padding mask). Its output is added to the frozen pooled
    feature *before* the head ("fusion before the projection"), so it can
    rewrite what the head sees, not only nudge the end embedding.

Because nothing before the side branches trains under ``frozen``/``focus``,
the tower outputs can be computed once and cached
(:mod:`georet.training.feature_cache`): :meth:`TowerCLIP.embed_image` and
:meth:`TowerCLIP.embed_text` take those outputs, so training and inference run
the same code.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from georet.errors import ConflictError, GeoretError
from georet.files import atomic_write
from georet.models import backbones
from georet.models.adapters import METHODS, Method, MRSAdapter, SideBranch, SideConfig
from georet.models.efficientnet_lite import LITE_VARIANTS, EfficientNetLiteTower
from georet.models.identity import TOWER_WEIGHTS_FORMAT
from georet.models.io import load_torch_file
from georet.models.minilm import MiniLMTower

#: the method name tower weights files written before the one vocabulary used for ``frozen``
_LEGACY_METHODS = {"lit": "frozen"}


class Projection(nn.Linear):
    """A tower's head into the joint space: a linear map, plus a residual MLP beside it when ``hidden`` > 0.

    A subclass of ``nn.Linear`` so that linear heads keep their key names
    (``image_head.weight``) and weights saved before the MLP existed load
    unchanged. The MLP's output layer starts at zero: training begins from the
    linear head and adds only what a linear map cannot express.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__(in_dim, out_dim)
        self.hidden = nn.Linear(in_dim, hidden) if hidden else None
        self.out = nn.Linear(hidden, out_dim) if hidden else None
        self.dropout = dropout
        if self.out is not None:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.hidden is None:
            return y
        return y + self.out(F.dropout(F.gelu(self.hidden(x)), self.dropout, self.training))

    @torch.no_grad()
    def rotate_output(self, rotation: torch.Tensor) -> None:
        """Make this head output ``head(x) @ rotation`` (an orthogonal (out, out) matrix), exactly, by
        turning the weights of its output layers: how :class:`HeadEnsemble` puts its members in one space."""
        for layer in (self, self.out):
            if layer is not None:
                layer.weight.copy_(rotation.T @ layer.weight)
                layer.bias.copy_(layer.bias @ rotation)


class HeadEnsemble(nn.Module):
    """Several heads trained apart (other seeds), in one space: the mean of their unit-length outputs.

    Heads trained from different seeds agree on which pairs match but each
    has its own rotation of the joint space; the members are turned into the
    first one's space when assembled (Procrustes on training embeddings,
    :func:`georet.training.ensemble.assemble_heads`), so the ensemble keeps
    ``embed_dim`` and the index keeps its size. Only this head is repeated:
    the towers run once.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.members = nn.ModuleList(Projection(in_dim, out_dim, hidden, dropout) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.normalize(member(x), dim=-1) for member in self.members]).mean(0)


def _head(cfg: "TowerCLIPConfig", in_dim: int) -> nn.Module:
    if cfg.head_members == 1:
        return Projection(in_dim, cfg.embed_dim, cfg.head_hidden, cfg.head_dropout)
    return HeadEnsemble(cfg.head_members, in_dim, cfg.embed_dim, cfg.head_hidden, cfg.head_dropout)


@dataclass(frozen=True)
class TowerCLIPConfig:
    """Model config as data (``georet/models/configs/georet-base.json``); unknown keys are errors."""

    image_tower: str = "efficientnet-lite0"
    image_size: int = 224
    image_taps: tuple[int, ...] = (4, 6)
    text_context_length: int = 32
    text_taps: tuple[int, ...] = (3, 6)
    embed_dim: int = 256
    method: Method = "focus"
    image_side: SideConfig = field(default_factory=lambda: SideConfig(focus_keep=0.5))
    text_side: SideConfig = field(default_factory=SideConfig)
    mrs_bottleneck: int = 64
    mrs_shared: int = 64
    mrs_dropout: float = 0.1
    #: quarter turns of each image embedded and averaged (1, 2: 0° and 180°, or 4). Aerial imagery has no
    #: "up", but ImageNet features do: the mean over turns is a steadier embedding (4 turns: rsicd_aid test
    #: mR 17.5 -> 20.0, chosen on validation among the view sets that keep indexing >= 25 tiles/s; see
    #: docs/research/georet-base-selection.md). The heads read the mean of the views' pooled features.
    image_views: int = 1
    #: also embed the centre crop of this fraction of the side, upsampled back to the input size, as one
    #: more view in the mean (None: no crop view). A closer look at the middle of the tile: validation mR
    #: 29.3 against 28.8 for the turns alone, at 5 forward passes a tile (docs/research/georet-base-selection.md)
    centre_crop_view: float | None = None
    #: width of the residual MLP beside each linear head (0: linear heads). Frozen ImageNet and MiniLM
    #: features are not linearly aligned; a zero-initialised MLP starts equal to the linear head and learns
    #: what it cannot map (validation mR 26.4 -> 28.7 at 1024; docs/research/georet-base-selection.md)
    head_hidden: int = 0
    head_dropout: float = 0.2
    #: heads per tower: > 1 is an ensemble of heads trained from that many seeds (:class:`HeadEnsemble`)
    head_members: int = 1
    #: ground one input image should cover, in metres, where it differs from the scene-chip scale of
    #: remote-sensing training sets (``georet index`` cuts tiles of this size: docs/search.md#tile-size)
    tile_ground_m: float | None = None

    def __post_init__(self) -> None:
        if self.head_hidden < 0 or not 0.0 <= self.head_dropout < 1.0:
            raise GeoretError(f"head_hidden must be >= 0 and head_dropout in [0, 1), got {self.head_hidden}, "
                              f"{self.head_dropout}")
        if self.tile_ground_m is not None and not self.tile_ground_m > 0:
            raise GeoretError(f"tile_ground_m must be positive, got {self.tile_ground_m}")
        if self.head_members < 1:
            raise GeoretError(f"head_members must be >= 1, got {self.head_members}")
        if self.image_views not in (1, 2, 4):
            raise GeoretError(f"image_views must be 1, 2 or 4 quarter turns, got {self.image_views}")
        if self.centre_crop_view is not None and not 0.0 < self.centre_crop_view < 1.0:
            raise GeoretError(f"centre_crop_view must lie in (0, 1), got {self.centre_crop_view}")
        if self.method not in METHODS:
            raise GeoretError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.image_tower not in LITE_VARIANTS:
            raise GeoretError(f"unknown image tower {self.image_tower!r} (known: {', '.join(LITE_VARIANTS)})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TowerCLIPConfig":
        data = dict(data)
        data.pop("family", None)
        data["method"] = _LEGACY_METHODS.get(data.get("method"), data.get("method", "focus"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeoretError(f"unknown model config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for side in ("image_side", "text_side"):
            if side in data:
                side_known = {f.name for f in fields(SideConfig)}
                bad = sorted(set(data[side]) - side_known)
                if bad:
                    raise GeoretError(f"unknown {side} key(s) {', '.join(bad)}; known: {', '.join(sorted(side_known))}")
                data[side] = SideConfig(**data[side])
        for taps in ("image_taps", "text_taps"):
            if taps in data:
                data[taps] = tuple(int(t) for t in data[taps])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({"family": "tower-clip", **asdict(self)}))  # as stored: lists, not tuples


class TowerCLIP(nn.Module):
    """Two pretrained towers, optional side branches, two heads, one logit scale.

    ``encode_image``/``encode_text`` behave like open_clip's, so indexing and
    search treat it as any other model; ``image_features``/``embed_image``
    split the frozen and trained halves for feature-cache training.
    """

    def __init__(self, cfg: TowerCLIPConfig, lazy_image_tower: bool = False):
        """``lazy_image_tower``: build the image trunk on its first image (inference: text-only searches skip it)."""
        super().__init__()
        self.cfg = cfg
        self.visual = EfficientNetLiteTower(cfg.image_tower, cfg.image_taps, lazy=lazy_image_tower)
        self.text = MiniLMTower(cfg.text_context_length, cfg.text_taps)
        self.mrs = MRSAdapter({"text": self.text.pooled_dim}, cfg.mrs_bottleneck, cfg.mrs_shared, cfg.mrs_dropout) \
            if cfg.method == "mrs" else None
        if self.mrs is not None:
            self.text.use_adapter(functools.partial(self.mrs, modality="text"))
        self.image_side = SideBranch(self.visual.tap_dims, self.visual.pooled_dim, cfg.image_side) \
            if cfg.method == "focus" else None
        self.text_side = SideBranch(self.text.tap_dims, self.text.pooled_dim, cfg.text_side) \
            if cfg.method == "focus" else None
        self.image_head = _head(cfg, self.visual.pooled_dim)
        self.text_head = _head(cfg, self.text.pooled_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # -- weights -----------------------------------------------------------------------
    def load_backbones(self) -> dict[str, str]:
        """Load both towers' pretrained weights; returns {tower: weights file}."""
        return {"image": str(self.visual.load_pretrained()), "text": str(self.text.load_pretrained())}

    def is_trainable(self, name: str) -> bool:
        """Whether a parameter trains under this model's method."""
        if self.cfg.method == "full":
            return True
        return not name.startswith(("visual.", "text."))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        trainable = {n for n, _ in self.named_parameters() if self.is_trainable(n)}
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k in trainable}

    def tower_modules_frozen(self) -> bool:
        """True when the towers' outputs do not change in training (features may be cached)."""
        return self.cfg.method in ("frozen", "focus")

    # -- frozen halves ------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.visual(images)

    def text_features(self, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        return self.text(ids)

    # -- trained halves -----------------------------------------------------------------
    def embed_image(self, taps: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.fused_image_feature(taps, pooled))

    def fused_image_feature(self, taps: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        """The pooled feature the image head reads: the tower's, plus the side branch's rewrite."""
        pooled = pooled.to(self.logit_scale.dtype)
        return pooled + self.image_side(taps) if self.image_side is not None else pooled

    def embed_text(self, taps: list[torch.Tensor], mask: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.to(self.logit_scale.dtype)
        if self.text_side is not None:
            pooled = pooled + self.text_side(taps, mask)
        return self.text_head(pooled)

    # -- open_clip-compatible interface -------------------------------------------------
    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The views of each image the model embeds: its quarter turns and, with ``centre_crop_view``, the crop."""
        turns, crop = self.cfg.image_views, self.cfg.centre_crop_view
        step = 4 // turns  # one forward per view: on CPU a 4x batch runs slower per image than the batch itself
        views = [quarter_turns(images, k * step) for k in range(turns)]
        return views + ([centre_crop_view(images, crop)] if crop is not None else [])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> embeddings of the features averaged over the config's views.

        The head reads the mean of the views' fused features, as in training;
        with an MLP head, averaging the per-view embeddings instead would be
        another function (test mR 21.57 against 21.82 for the same heads).
        """
        views = self.views(images)
        if len(views) == 1:
            return self.embed_image(*self.image_features(images))
        return self.image_head(torch.stack([self.fused_image_feature(*self.image_features(v)) for v in views]).mean(0))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_text(*self.text_features(ids))


def quarter_turns(images: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.rot90(images, k, dims=(2, 3))`` made of flips and a transpose, which ONNX exports (rot90 does not)."""
    k %= 4
    if k == 1:
        return images.flip(3).transpose(2, 3)
    if k == 2:
        return images.flip(2).flip(3)
    if k == 3:
        return images.transpose(2, 3).flip(3)
    return images


def centre_crop_view(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """The centre ``fraction`` of each image's side, upsampled (bicubic) back to the images' size."""
    height, width = int(images.shape[-2]), int(images.shape[-1])  # plain ints: an ONNX export fixes the size
    top, left = round(height * (1 - fraction) / 2), round(width * (1 - fraction) / 2)
    return F.interpolate(images[..., top:height - top, left:width - left], size=(height, width), mode="bicubic",
                         align_corners=False)


def save_tower_weights(path: str | Path, model: TowerCLIP, record: dict[str, Any] | None = None) -> None:
    """Write the trained parameters (float16), the model config and the backbone files' sha256s, atomically.

    The backbones are not stored: they come from their packages, and the
    hashes make sure the trained parts are only ever joined to the exact
    backbone weights they were trained on.
    """
    path = Path(path)
    payload = {"format": TOWER_WEIGHTS_FORMAT, "config": model.cfg.to_dict(),
               "backbones": backbone_ids(model),
               "state_dict": {k: v.half() if v.is_floating_point() else v
                              for k, v in model.trainable_state_dict().items()},
               "record": json.loads(json.dumps(record or {}))}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def backbone_ids(model: TowerCLIP) -> dict[str, str]:
    """``{"image": "<file name>:<sha256>", "text": ...}`` of the installed backbone weight files."""
    return backbones.backbone_ids({"image": model.visual.variant.weights_path(), "text": model.text.weights_path()})


def _read_tower_weights(path: Path) -> dict[str, Any]:
    payload = load_torch_file(path, "torch file")
    if not isinstance(payload, dict) or payload.get("format") != TOWER_WEIGHTS_FORMAT:
        raise GeoretError(f"{path} is not a georet tower-model weights file ({TOWER_WEIGHTS_FORMAT})")
    return payload


def tower_weights_config(path: str | Path) -> TowerCLIPConfig:
    """The model config a weights file was trained for (a run's method, heads and views travel with it)."""
    return TowerCLIPConfig.from_dict(_read_tower_weights(Path(path))["config"])


def load_tower_weights(model: TowerCLIP, path: str | Path) -> None:
    """Load trained parameters into ``model``, refusing any mismatch of config, backbones or keys."""
    path = Path(path)
    payload = _read_tower_weights(path)
    if TowerCLIPConfig.from_dict(payload["config"]) != model.cfg:  # keys added since it was written take defaults
        raise ConflictError(f"{path} was trained for another model config than {model.cfg.image_tower} "
                          f"{model.cfg.method} @ {model.cfg.image_size} px")
    installed = backbone_ids(model)
    for tower, wanted in payload["backbones"].items():
        if installed[tower] != wanted:
            raise GeoretError(f"{path} was trained on {tower} backbone {wanted}, but the installed one is "
                              f"{installed[tower]}; reinstall the backbone package version georet declares")
    own = model.trainable_state_dict()
    state = payload["state_dict"]
    if set(state) != set(own):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise GeoretError(f"{path} does not fit the model: missing {missing[:2]}, unexpected {extra[:2]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
