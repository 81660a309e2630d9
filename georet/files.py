"""Atomic file writes: a reader (or a crash) never sees half a file, and two writers never share a temp name.

Every file georet replaces in place (checkpoints, weights, label sets,
results) goes through :func:`atomic_write`: the content is written to a
uniquely named temporary file beside the target, then renamed over it, which
POSIX and Windows both do atomically within one folder.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary path beside ``path``, then move it over ``path``.

    The file gets the permissions a plain write would give it: those of the file it replaces, else the
    user's umask (``tempfile.mkstemp``'s owner-only mode would lock a team out of a shared index).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as to open(..., "w")
    try:
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
