"""What names a model and what pins it, without importing torch.

A model's *identity* (architecture, weights hash, embedding size,
preprocessing, backbone files) is stored with every index so that a query is
never answered by vectors from another model. Both the torch factory
(:mod:`georet.models.factory`) and the torch-free query encoder
(:mod:`georet.models.text_query`) build it here, so the two can never disagree
about which model an index was made with.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

#: Architecture configs shipped with georet (open_clip JSON format, or ``"family": "tower-clip"``).
MODEL_CONFIG_DIR = Path(__file__).parent / "configs"

#: ``--pretrained bundled``: the weights shipped inside the package, so georet
#: works offline at once. Stored by tag (not path) so an index survives a
#: reinstall; the weights hash still pins the exact file.
BUNDLED_TAG = "bundled"
#: georet-small's weights are a package of their own (``packages/georet-small-weights``): with them inside,
#: georet's wheel would pass PyPI's 100 MB limit
SMALL_WEIGHTS_PACKAGE = "georet-small-weights"


def _bundled_weights(arch: str) -> Path:
    """Where ``arch``'s bundled weights file lies (or would lie: its package may not be installed)."""
    if arch == "georet-small":
        found = importlib.util.find_spec(SMALL_WEIGHTS_PACKAGE.replace("-", "_"))
        if found is not None and found.origin:
            return Path(found.origin).with_name("georet-small.pt")
    return Path(__file__).parent / "weights" / f"{arch}.pt"


BUNDLED_WEIGHTS = {arch: _bundled_weights(arch) for arch in ("georet-small", "georet-base")}


def missing_weights_advice(arch: str) -> str:
    """What a user does when ``arch``'s bundled weights file is missing."""
    return f"pip install {SMALL_WEIGHTS_PACKAGE}" if arch == "georet-small" else "reinstall georet"

#: The model used when none is named. Kept here and nowhere else.
DEFAULT_ARCH = "georet-base"
DEFAULT_PRETRAINED = BUNDLED_TAG

#: What georet's tower-model weights files say they are (:func:`georet.models.tower_clip.save_tower_weights`).
TOWER_WEIGHTS_FORMAT = "georet-tower-weights/1"

#: Seed of the random init used when no weights are named; fixed so that the
#: same ``--pretrained none`` model is rebuilt identically at query time.
RANDOM_INIT_SEED = 0


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file: pins weights and checkpoints in model identities."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def cached_sha256(path: Path) -> str:
    """:func:`file_sha256`, computed once per process for an unchanged file (backbones are ~110 MB)."""
    stat = path.stat()
    return _sha256_of(path, stat.st_size, stat.st_mtime_ns)


def tower_config(arch: str) -> dict[str, Any] | None:
    """The config of a georet tower model (``"family": "tower-clip"``), or None for open_clip architectures."""
    path = MODEL_CONFIG_DIR / f"{arch}.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    return cfg if cfg.get("family") == "tower-clip" else None


def is_file_reference(pretrained: str) -> bool:
    """Whether ``--pretrained`` names a file (by a path separator or a weights suffix) rather than a tag."""
    return os.sep in pretrained or Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors", ".npz"}


def describe_weights(pretrained: str | None) -> str:
    """How an identity names the weights: the tag, a file's name (not its path), or the random init."""
    if pretrained is None:
        return f"random-init(seed={RANDOM_INIT_SEED})"
    return Path(pretrained).name if is_file_reference(pretrained) else pretrained


def model_identity(arch: str, pretrained: str | None, weights_id: str, checkpoint_id: str | None, dim: int,
                   preprocess: dict[str, Any], backbones: dict[str, str] | None = None,
                   zoo_name: str | None = None) -> dict[str, Any]:
    """What must match between an index and the model that queries or extends it (JSON-normalised, as stored).

    Tower models add ``backbones``: the file name and sha256 of each
    pretrained backbone weight file they run on. Zoo weights are named by
    their zoo entry (``remoteclip``), whether fetched by name or passed as a
    file; ``weights_id`` is the file's sha256 either way.
    """
    return json.loads(json.dumps({
        "arch": arch,
        "pretrained": zoo_name or describe_weights(pretrained),
        **({"zoo": zoo_name} if zoo_name else {}),
        "weights_id": weights_id,
        "checkpoint_id": checkpoint_id,
        "dim": dim,
        "preprocess": preprocess,
        **({"backbones": backbones} if backbones else {}),
    }))
