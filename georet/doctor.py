"""``georet doctor``: what georet sees on this machine, for users and bug reports.

Versions (georet, Python, torch, open_clip, rasterio with GDAL/PROJ, lancedb),
the device georet would use and why, whether the default model can load
offline, where weights are cached, and (with ``db``) whether an index folder
is writable. :func:`markdown` renders it as a block to paste into an issue,
with paths under the home folder shortened to ``~``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from georet.errors import GeoretError


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device() -> dict[str, Any]:
    from georet.models import has_torch

    if not has_torch():
        return {"device": "cpu", "why": "torch is not installed: the bundled model runs on ONNX "
                                        "(pip install 'georet[torch]' for GPUs, training and other models)"}
    import torch

    cuda_build = torch.version.cuda
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return {"device": "cuda", "why": f"CUDA {cuda_build} build and {torch.cuda.device_count()} GPU(s): {name}"}
    if torch.backends.mps.is_available():
        return {"device": "mps", "why": "Apple MPS backend available"}
    if cuda_build:
        why = f"torch is a CUDA {cuda_build} build but no GPU/driver is visible"
    else:
        why = "torch is a CPU-only build"
    return {"device": "cpu", "why": why}


def _default_model() -> dict[str, Any]:
    from georet.errors import GeoretError
    from georet.models import BUNDLED_WEIGHTS, DEFAULT_ARCH, DEFAULT_PRETRAINED
    from georet.models.backbones import backbone_files
    from georet.models.identity import tower_config

    weights = BUNDLED_WEIGHTS[DEFAULT_ARCH]
    found = weights.is_file()
    hint = None if found else f"bundled weights missing at {weights}: reinstall georet"
    config = tower_config(DEFAULT_ARCH)
    if found and config:  # the pretrained backbones come from their own packages, or the torch-free files
        try:
            backbone_files(config["image_tower"])
        except GeoretError as exc:
            from georet.models.shipped import light_manifest

            if light_manifest() is None:
                found, hint = False, str(exc)
    return {"name": f"{DEFAULT_ARCH}/{DEFAULT_PRETRAINED}", "available_offline": found,
            "weights": str(weights) if found else None, "hint": hint}


def _caches() -> dict[str, str]:
    hub = os.environ.get("HF_HUB_CACHE") or str(Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
                                                  / "hub")
    return {"huggingface_hub": hub,
            "open_clip_url_cache": str(Path.home() / ".cache" / "clip"),
            "torch_home": os.environ.get("TORCH_HOME", str(Path.home() / ".cache" / "torch"))}


def _db_status(db: str | Path) -> dict[str, Any]:
    from georet.index import MANIFEST_NAME, TileStore

    if TileStore.in_object_store(db):  # no permissions to read there, only whether it answers
        try:
            state = "georet index" if TileStore.exists(str(db)) else "does not exist yet"
        except GeoretError as exc:
            state = f"unreachable: {exc}"
        return {"path": str(db), "state": state, "writable": None}
    path = Path(db).expanduser()
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    writable = os.access(probe, os.W_OK | os.X_OK)
    if not path.exists():
        state = "does not exist yet" + ("" if writable else f"; {probe} is not writable")
    elif (path / MANIFEST_NAME).is_file():
        from georet.index.repair import diagnose

        state = "georet index"
        return {"path": str(path), "state": state, "writable": writable, "health": diagnose(path).to_dict()}
    elif path.is_dir() and not any(path.iterdir()):
        state = "empty folder"
    else:
        state = "exists and is not a georet index"
    return {"path": str(path), "state": state, "writable": writable}


def report(db: str | Path | None = None) -> dict[str, Any]:
    """Everything doctor checks, as a JSON-ready dict."""
    import pyproj
    import rasterio

    from georet import __version__

    out: dict[str, Any] = {
        "georet": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(dist) for name, dist in (
            ("torch", "torch"), ("torchvision", "torchvision"), ("open_clip", "open_clip_torch"),
            ("rasterio", "rasterio"), ("geopandas", "geopandas"), ("shapely", "shapely"),
            ("pyproj", "pyproj"), ("lancedb", "lancedb"), ("pylance", "pylance"))},
        "gdal": rasterio.__gdal_version__,
        "proj": pyproj.proj_version_str,
        **_device(),
        "default_model": _default_model(),
        "caches": _caches(),
        "executable": sys.executable,
    }
    if db is not None:
        out["db"] = _db_status(db)
    return out


def _short(value: Any) -> str:
    home = str(Path.home())
    text = str(value)
    return "~" + text[len(home):] if home not in ("/", "") and text.startswith(home) else text


def markdown(info: dict[str, Any]) -> str:
    """A fenced block for bug reports; home-folder paths shortened to ``~``."""
    lines = [f"georet {info['georet']} · Python {info['python']} · {info['platform']}"]
    lines += [f"{name}: {ver or 'not installed'}" for name, ver in info["packages"].items()]
    lines += [f"GDAL: {info['gdal']} · PROJ: {info['proj']}",
              f"device: {info['device']} ({info['why']})",
              f"default model: {info['default_model']['name']} — "
              + ("available offline" if info["default_model"]["available_offline"] else "NOT available offline"),
              *[f"cache {k}: {_short(v)}" for k, v in info["caches"].items()],
              f"python executable: {_short(info['executable'])}"]
    if "db" in info:
        db = info["db"]
        access = "" if db["writable"] is None else f", {'writable' if db['writable'] else 'NOT writable'}"
        lines.append(f"index {_short(db['path'])}: {db['state']}{access}")
        health = db.get("health")
        if health:
            lines += [f"manifest: {health['manifest']}", f"tiles table: {health['table']}"]
            if "repair" in health:
                lines.append(f"repair: {health['repair']}")
    return "```text\n" + "\n".join(lines) + "\n```"
