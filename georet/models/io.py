"""Reading torch files and probing the network: one way each, with georet's one-line errors.

A torch file that cannot be read is a :class:`~georet.errors.GeoretError`
naming the file (torch raises many exception types for a bad file); pickled
Python objects are unpickled only from files georet knows (``trusted``). A
network probe answers in at most :data:`PROBE_TIMEOUT_S` seconds, so an
offline machine hears "offline" at once instead of hanging in a download.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from georet.errors import GeoretError

#: how long a reachability probe waits for a TCP connection
PROBE_TIMEOUT_S = 3.0


def cache_dir(kind: str) -> Path:
    """Where georet keeps files it can make again from a model (``kind``: onnx, openvino, vocabulary, queries):
    ``$XDG_CACHE_HOME/georet/<kind>``, else ``~/.cache/georet/<kind>``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "georet" / kind


def reachable(url: str) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within :data:`PROBE_TIMEOUT_S`."""
    parts = urllib.parse.urlparse(url if "://" in url else f"https://{url}")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, TypeError):
        return False


def load_torch_file(path: str | Path, what: str = "torch weights file", trusted: bool = False,
                    mmap: bool = False) -> Any:
    """``torch.load`` onto the CPU, tensors only unless ``trusted``; a bad file is one line naming ``what``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for a bad or non-weights file
        objects = "Unsupported global" in str(exc)  # a real pickle of Python objects, not a damaged file
        if trusted and objects:
            return torch.load(path, map_location="cpu", weights_only=False)
        if objects:
            raise GeoretError(f"{path} holds pickled Python objects besides weights, which georet does not "
                              "unpickle from unknown files; save its state_dict on its own and pass that") from None
        raise GeoretError(f"{path} is not a readable {what}") from None
