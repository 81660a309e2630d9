"""Where the model files shipped for torch-free installs live, and whether they fit the weights installed.

Both the torch-free georet-base (:mod:`georet.models.light`) and the torch-free
query encoder of a torch install (:mod:`georet.models.text_query`) run these
files; ``training/export_light.py`` makes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from georet.models.identity import BUNDLED_WEIGHTS, DEFAULT_ARCH, cached_sha256

LIGHT_DIR = Path(__file__).parent / "weights" / "georet-base-light"
LIGHT_FORMAT = "georet-light/1"
#: what a torch-free install can run: the bundled georet-base
LIGHT_ARCH = DEFAULT_ARCH


def light_manifest() -> dict[str, Any] | None:
    """``light.json`` when the shipped files exist and were made from the bundled weights file now installed."""
    path = LIGHT_DIR / "light.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != LIGHT_FORMAT or manifest.get("weights_sha256") != cached_sha256(
            BUNDLED_WEIGHTS[LIGHT_ARCH]):
        return None
    return manifest
