"""One writer per index: an OS file lock on ``DB/.georet.lock``.

Lance commits are atomic, but two ``merge_insert`` calls that run at the same
time cannot see each other's new rows, so two writers of one raster store
every tile twice, and two writers of different rasters lose one manifest
update. Writers therefore take this lock for the whole run; readers never
take it. The lock belongs to the open file, so the OS releases it when the
process dies (``kill -9`` included): it can never go stale.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from georet.errors import GeoretError

LOCK_NAME = ".georet.lock"
_POLL_SECONDS = 0.2

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock_holder(index_dir: Path) -> int | None:
    """The pid of the process writing to ``index_dir`` now, or None when nobody is."""
    path = index_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:  # no lock file yet, or a read-only index: nobody can be writing through georet
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        text = path.read_text(encoding="ascii", errors="ignore").strip()
        return int(text) if text.isdecimal() else -1
    finally:
        os.close(fd)


@contextmanager
def writer_lock(index_dir: Path, timeout: float | None = None,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the index's writer lock; wait for another writer to finish first.

    ``timeout`` (seconds, None = as long as it takes) bounds the wait;
    ``on_wait`` is told once, in words, why this process is waiting.
    """
    path = index_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GeoretError(f"cannot lock {index_dir} for writing: {exc.strerror.lower()}") from None
    try:
        started = time.monotonic()
        told = False
        while not _try_lock(fd):
            if not told and on_wait is not None:
                holder = path.read_text(encoding="ascii", errors="ignore").strip() or "?"
                on_wait(f"waiting for another georet process (pid {holder}) to finish writing to {index_dir}")
                told = True
            if timeout is not None and time.monotonic() - started > timeout:
                raise GeoretError(f"{index_dir} is being written by another georet process; "
                                  f"gave up after {timeout:g} s")
            time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode("ascii"))
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            _unlock(fd)
    finally:
        os.close(fd)
