"""Model factory: one place that turns (architecture, weights, checkpoint) into an
embedding model for tiles and queries.

Any open_clip architecture works. Weights come from an open_clip pretrained tag
(downloaded once, for users who are online), a local weights file (offline
users), or nothing (a deterministic random init, for tests with the tiny
``georet-tiny`` architecture registered here). A model's *identity* (arch,
weights hash, embedding size, preprocessing) is recorded with every index so
that a query is never answered by vectors from another model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from georet.errors import GeoretError

#: Architecture configs shipped with georet (open_clip JSON format).
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"

#: ``--pretrained bundled``: the weights shipped inside the package, so georet
#: works offline at once. Stored by tag (not path) so an index survives a
#: reinstall; the weights hash still pins the exact file.
BUNDLED_TAG = "bundled"
BUNDLED_WEIGHTS = {"georet-small": Path(__file__).parent / "weights" / "georet-small.pt"}

#: The model used when none is named. Kept here and nowhere else.
DEFAULT_ARCH = "georet-small"
DEFAULT_PRETRAINED = BUNDLED_TAG

#: Seed of the random init used when no weights are named; fixed so that the
#: same ``--pretrained none`` model is rebuilt identically at query time.
RANDOM_INIT_SEED = 0

_NETWORK_PROBE_TIMEOUT_S = 3.0
_configs_registered = False


def _open_clip():
    """Import open_clip lazily (it pulls torchvision) and register our configs once."""
    global _configs_registered
    import open_clip

    if not _configs_registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _configs_registered = True
    return open_clip


def list_architectures() -> list[str]:
    """All architecture names open_clip knows, georet's own included."""
    return list(_open_clip().list_models())


def pretrained_tags(arch: str) -> list[str]:
    """Pretrained tags of one architecture: open_clip's, or ``bundled`` for georet-small."""
    return [BUNDLED_TAG] if arch in BUNDLED_WEIGHTS else list(_open_clip().list_pretrained_tags_by_model(arch))


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


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: enough to rebuild the same model later."""

    arch: str = DEFAULT_ARCH
    pretrained: str | None = DEFAULT_PRETRAINED  # tag, local file, or None = random init
    checkpoint: str | None = None


class EmbeddingModel:
    """An open_clip model ready to embed tiles and queries into one L2-normalised space."""

    def __init__(self, model: torch.nn.Module, tokenizer, spec: ModelSpec, preprocess: Preprocess,
                 weights_id: str, checkpoint_id: str | None, device: torch.device):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.spec = spec
        self.preprocess = preprocess
        self.device = device
        self.weights_id = weights_id
        self.checkpoint_id = checkpoint_id
        with torch.inference_mode():
            probe = self.model.encode_text(self.tokenizer(["probe"]).to(device))
        self.dim = int(probe.shape[-1])

    @property
    def identity(self) -> dict[str, Any]:
        """What must match between an index and the model that queries or extends it."""
        return json.loads(json.dumps({  # JSON-normalised, as stored in the manifest
            "arch": self.spec.arch,
            "pretrained": _describe_weights(self.spec.pretrained),
            "weights_id": self.weights_id,
            "checkpoint_id": self.checkpoint_id,
            "dim": self.dim,
            "preprocess": self.preprocess.to_dict(),
        }))

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().exp()) if scale is not None else 100.0

    def encode_images(self, images: torch.Tensor) -> np.ndarray:
        """Preprocessed images (N, 3, h, w) -> float32 (N, dim), unit length."""
        with torch.inference_mode(), _autocast(self.device):
            feats = self.model.encode_image(images.to(self.device, non_blocking=True))
        return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, dim), unit length."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            feats = self.model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1).cpu().numpy()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def _describe_weights(pretrained: str | None) -> str:
    if pretrained is None:
        return f"random-init(seed={RANDOM_INIT_SEED})"
    return Path(pretrained).name if _is_file_reference(pretrained) else pretrained


def _is_file_reference(pretrained: str) -> bool:
    return os.sep in pretrained or Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors", ".npz"}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit choice must exist."""
    name = (name or "auto").lower()
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise GeoretError("--device cuda asked for, but torch sees no CUDA GPU (is this a CPU-only torch build?)")
    if name == "mps" and not mps:
        raise GeoretError("--device mps asked for, but this torch has no Apple MPS backend")
    if name not in {"cpu", "cuda", "mps"}:
        raise GeoretError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _host_reachable(host: str, port: int = 443) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_NETWORK_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached_tag_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Where a pretrained tag's weights already lie on disk, if anywhere."""
    hub = cfg.get("hf_hub")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub.rstrip("/")) if hub.endswith((".bin", ".pt", ".safetensors")) \
            else (hub.rstrip("/"), None)
        for name in [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url")
    if url:
        local = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def _fetch_tag(arch: str, tag: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Local weights file for a tag; downloads only when the hub answers.

    open_clip alone would retry for about a minute without network; we probe the
    host first so that offline users get an immediate, actionable error.
    """
    if tag == BUNDLED_TAG:
        bundled = BUNDLED_WEIGHTS.get(arch)
        if bundled is None:
            raise GeoretError(f"georet bundles weights only for {', '.join(BUNDLED_WEIGHTS)}, not {arch}")
        if not bundled.is_file():
            raise GeoretError(f"the bundled weights {bundled} are missing; reinstall georet")
        return str(bundled), {}
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise GeoretError(f"unknown pretrained tag {tag!r} for {arch} (known tags: {known}; or pass a weights file)")
    cached = _cached_tag_file(cfg, cache_dir)
    if cached:
        return cached, cfg
    host = "huggingface.co" if cfg.get("hf_hub") else urllib.parse.urlparse(cfg.get("url", "")).hostname
    if not host or not _host_reachable(host):
        raise GeoretError(
            f"weights {arch}/{tag} are not cached and {host or 'the model hub'} cannot be reached; "
            f"download them where you are online and pass the file: --pretrained /path/to/weights.bin"
        )
    from open_clip.pretrained import download_pretrained

    path = download_pretrained(cfg, cache_dir=cache_dir)
    if not path:
        raise GeoretError(f"could not download weights {arch}/{tag}")
    return path, cfg


def load_model(spec: ModelSpec | None = None, device: str = "auto", cache_dir: str | None = None) -> EmbeddingModel:
    """Build the embedding model named by ``spec`` (default: :data:`DEFAULT_ARCH`/:data:`DEFAULT_PRETRAINED`)."""
    spec = spec or ModelSpec()
    open_clip = _open_clip()
    if spec.arch not in open_clip.list_models():
        raise GeoretError(f"unknown model architecture {spec.arch!r} (see `georet models`)")
    torch_device = resolve_device(device)

    tag_cfg: dict[str, Any] = {}
    weights_file: str | None = None
    if spec.pretrained is not None:
        if _is_file_reference(spec.pretrained) or Path(spec.pretrained).is_file():
            if not Path(spec.pretrained).is_file():
                raise GeoretError(f"weights file not found: {spec.pretrained}")
            weights_file = spec.pretrained
        else:
            weights_file, tag_cfg = _fetch_tag(spec.arch, spec.pretrained, cache_dir)

    preprocess_override = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    torch.manual_seed(RANDOM_INIT_SEED)
    logging.getLogger().disabled, was_disabled = True, logging.getLogger().disabled  # open_clip's "randomly initialised" warning
    try:
        model = open_clip.create_model(
            spec.arch,
            pretrained=None,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg=preprocess_override or None,
        )
    finally:
        logging.getLogger().disabled = was_disabled
    if weights_file is not None:
        try:
            open_clip.load_checkpoint(model, weights_file)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise GeoretError(f"weights file {weights_file} does not fit {spec.arch}: {str(exc).splitlines()[0]}") from exc
    weights_id = file_sha256(weights_file) if weights_file else _describe_weights(None)

    checkpoint_id = None
    if spec.checkpoint:
        model, checkpoint_id = apply_checkpoint(model, spec.arch, spec.checkpoint)

    preprocess = Preprocess.from_open_clip(model.visual.preprocess_cfg)
    return EmbeddingModel(model, open_clip.get_tokenizer(spec.arch), spec, preprocess,
                          weights_id, checkpoint_id, torch_device)


def apply_checkpoint(model: torch.nn.Module, arch: str, path: str) -> tuple[torch.nn.Module, str]:
    """Rebuild the adapted model a georet training checkpoint describes.

    A checkpoint holds only the trained parameters plus the method and its
    configuration (see :mod:`georet.train`); the frozen weights come from the
    base model. Returns the adapted model and the checkpoint's sha256, which
    becomes part of the model identity.
    """
    from georet.adapters import METHODS, AdaptedCLIP

    if not Path(path).is_file():
        raise GeoretError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise GeoretError(f"{path} is not a readable torch checkpoint") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise GeoretError(f"{path} is not a georet checkpoint (no 'state_dict')")
    if ckpt.get("arch", arch) != arch:
        raise GeoretError(f"checkpoint {path} was trained on {ckpt['arch']}, not {arch}; pass --model {ckpt['arch']}")
    method = ckpt.get("method", "full")
    if method not in METHODS:
        raise GeoretError(f"checkpoint {path} uses method {method!r}, which this georet does not know")
    adapted = AdaptedCLIP(model, method, **ckpt.get("method_config", {}))
    own = adapted.state_dict()
    unknown = [k for k in ckpt["state_dict"] if k not in own]
    if unknown:
        raise GeoretError(f"checkpoint {path} has parameters this model lacks (e.g. {unknown[0]})")
    adapted.load_state_dict(ckpt["state_dict"], strict=False)
    return adapted.eval(), file_sha256(path)
