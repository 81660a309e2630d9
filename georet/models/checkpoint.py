"""georet training checkpoints: the one place that writes, reads, verifies and applies them.

A checkpoint holds only what training changed (the trainable parameters), the
method that wraps the base model (:class:`~georet.models.adapters.AdapterConfig`),
the base model it was trained from, the preprocessing, and the full training
config for the record. The frozen weights come from the base model, so a
Focus-Adapter checkpoint of ViT-B-32 is a few MB, not 600.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from georet.errors import GeoretError, NotFoundError
from georet.files import atomic_write
from georet.models.adapters import METHODS, AdaptedCLIP, AdapterConfig
from georet.models.identity import file_sha256
from georet.models.io import load_torch_file

CHECKPOINT_FORMAT = "georet-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """A verified georet checkpoint as read from disk."""

    path: Path
    sha256: str
    arch: str
    pretrained: str | None
    adapter: AdapterConfig
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    #: everything else stored with it (training config, preprocessing, step, validation metrics)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


def save_checkpoint(path: str | Path, adapted: AdaptedCLIP, arch: str, pretrained: str | None,
                    preprocess: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write ``adapted``'s trainable parameters atomically (write, then rename)."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "arch": arch, "pretrained": pretrained, "method": adapted.method,
               "method_config": adapted.config.options(), "state_dict": adapted.trainable_state_dict(),
               "preprocess": json.loads(json.dumps(preprocess)), **(extra or {})}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint; every defect is a :class:`GeoretError` naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"checkpoint not found: {path}")
    payload = load_torch_file(path, "torch checkpoint")
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise GeoretError(f"{path} is not a georet checkpoint (no 'state_dict')")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise GeoretError(f"{path}: checkpoint format {payload.get('format')!r} is not {CHECKPOINT_FORMAT!r}; "
                          "it was written by another georet version")
    method = payload.get("method")
    if method not in METHODS:
        raise GeoretError(f"checkpoint {path} uses method {method!r}, which this georet does not know")
    try:
        adapter = AdapterConfig(name=method, **payload.get("method_config", {}))
    except (TypeError, ValueError) as exc:
        raise GeoretError(f"checkpoint {path}: bad method_config ({exc})") from None
    known = {"format", "arch", "pretrained", "method", "method_config", "state_dict"}
    return Checkpoint(path, file_sha256(path), str(payload["arch"]), payload.get("pretrained"), adapter,
                      payload["state_dict"], {k: v for k, v in payload.items() if k not in known})


def apply_checkpoint(model: torch.nn.Module, arch: str, checkpoint: Checkpoint) -> tuple[AdaptedCLIP, str]:
    """Wrap ``model`` (the base, built for ``arch``) with the checkpoint's method and trained parameters.

    Returns the adapted model in eval mode and the checkpoint's sha256, which
    becomes part of the model identity stored in indexes.
    """
    if checkpoint.arch != arch:
        raise GeoretError(f"checkpoint {checkpoint.path} was trained on {checkpoint.arch}, not {arch}; "
                          f"pass --model {checkpoint.arch}")
    adapted = AdaptedCLIP(model, checkpoint.adapter)
    own = adapted.state_dict()
    unknown = [k for k in checkpoint.state_dict if k not in own]
    if unknown:
        raise GeoretError(f"checkpoint {checkpoint.path} has parameters this model lacks (e.g. {unknown[0]})")
    adapted.load_state_dict(checkpoint.state_dict, strict=False)
    return adapted.eval(), checkpoint.sha256
