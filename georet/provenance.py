"""Where a results file came from: the command, the git commit and the package versions that made it.

Benchmarks and experiments write their figures through :func:`write_results`,
so a number in the docs can always be traced to the code and the environment
that measured it (``docs/benchmarks.md`` is generated from these files).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from georet.files import atomic_write_text

#: the packages whose versions change what georet measures
PACKAGES = ("georet", "torch", "numpy", "lancedb", "pylance", "rasterio", "open_clip_torch", "onnxruntime", "ray")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line, git commit (and whether the tree had changes), package versions, machine and time."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    status = _git("status", "--porcelain", "--untracked-files=no")
    argv = sys.argv if argv is None else argv
    return {"command": " ".join(shlex.quote(a) for a in ["python", *argv]), "git_sha": _git("rev-parse", "HEAD"),
            "git_dirty": bool(status) if status is not None else None, "versions": versions,
            "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results`` with their provenance as JSON, atomically (a reader never sees half a file)."""
    return atomic_write_text(path, json.dumps({"provenance": provenance(), **results}, indent=1) + "\n")
