"""Talking to the georet CLI: where it is, which arguments, what its errors say.

Commands are always argument lists handed to the OS directly, never a shell
string, so a query like ``"; rm -rf ~ #`` reaches georet as plain text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import urlencode

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QProcess, QProcessEnvironment

SETTING_EXECUTABLE = "georet/executable"
SETTING_LAST_INDEX = "georet/last_index"
#: Variables QGIS sets for its own Python that would break the georet environment's Python.
_STRIPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE")


def configured_executable() -> str:
    """The georet executable: the plugin setting if set, else ``georet`` found on PATH ('' if none)."""
    value = QgsSettings().value(SETTING_EXECUTABLE, "", type=str)
    return value or shutil.which("georet") or ""


def set_executable(path: str) -> None:
    QgsSettings().setValue(SETTING_EXECUTABLE, path)


def new_process(parent) -> QProcess:
    """A QProcess for georet whose environment lacks QGIS's own Python variables."""
    process = QProcess(parent)
    env = QProcessEnvironment.systemEnvironment()
    for name in _STRIPPED_ENV:
        env.remove(name)
    process.setProcessEnvironment(env)
    return process


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}


@dataclass(frozen=True)
class Search:
    """One search as the panel or the Processing algorithm asks it, written once for both ways of running it:
    ``georet query`` arguments and the ``/search`` query string of ``georet serve``. The text may be empty
    when there are examples to search with."""

    text: str
    k: int
    bbox: Sequence[float] | None = None
    scene: str | None = None
    like: Sequence[str] = ()
    unlike: Sequence[str] = ()
    min_score: float | None = None
    dissolve: bool = False
    when: str = ""
    from_date: str = ""
    to_date: str = ""

    def _options(self) -> list[tuple[str, str | None]]:
        """(name, value) of every option set, in order; value None = a switch that is on."""
        options: list[tuple[str, str | None]] = [("k", str(int(self.k)))]
        if self.bbox is not None:
            options.append(("bbox", ",".join(repr(float(v)) for v in self.bbox)))
        if self.scene:
            options.append(("scene", self.scene))
        options += [("like", t) for t in self.like] + [("unlike", t) for t in self.unlike]
        if self.min_score is not None:
            options.append(("min_score", repr(float(self.min_score))))
        if self.dissolve:
            options.append(("dissolve", None))
        # the same names for the CLI (--when, --from, --to) and the server (when=, from=, to=)
        options += [(name, value.strip()) for name, value in (("when", self.when), ("from", self.from_date),
                                                              ("to", self.to_date)) if value.strip()]
        return options

    def cli_args(self, db: str) -> list[str]:
        args = ["query", *([self.text] if self.text.strip() else []), "--db", db, "--format", "geojson"]
        for name, value in self._options():
            args += ["-k" if name == "k" else "--" + name.replace("_", "-"), *([] if value is None else [value])]
        return args

    def query_string(self) -> str:
        text = [("q", self.text)] if self.text.strip() else []
        return urlencode(text + [(name, "true" if value is None else value) for name, value in self._options()])


def label_args(db: str, name: str, positive: Sequence[str], negative: Sequence[str]) -> list[str]:
    args = ["label", "--db", db, "--set", name]
    for flag, tiles in (("--positive", positive), ("--negative", negative)):
        for tile_id in tiles:
            args += [flag, tile_id]
    return args


def mark_scene_args(db: str, tile_id: str, scene: str) -> list[str]:
    """"This tile is a SCENE": the tile becomes an example of that class and the index is relabelled."""
    return ["relabel", "--db", db, "--mark", tile_id, scene, "--json"]


def info_args(db: str) -> list[str]:
    return ["info", "--db", db, "--json"]


def index_args(raster: str, db: str, tile_size: str = "", model: str = "", pretrained: str = "",
               checkpoint: str = "") -> list[str]:
    args = ["index", raster, "--db", db, "--progress-json"]
    for flag, value in (("--tile-size", tile_size), ("--model", model), ("--pretrained", pretrained),
                        ("--checkpoint", checkpoint)):
        if value:
            args += [flag, value]
    return args


def error_message(stderr: str, exit_code: int | None = None) -> str:
    """georet's one-line ``Error: ...`` message, or the last thing it printed."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Error: "):
            return line[len("Error: "):]
    if lines:
        return lines[-1]
    return f"georet stopped with exit code {exit_code}" if exit_code is not None else "georet failed"


def parse_progress(line: str) -> tuple[int, int] | None:
    """(done, total) from a ``--progress-json`` line, None for other lines."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
        return int(record["done"]), int(record["total"])
    except (ValueError, KeyError, TypeError):
        return None


class GeoretFailed(Exception):
    """georet exited non-zero; the message is georet's own one-line error."""


def run_blocking(executable: str, args: list[str], is_canceled: Callable[[], bool] = lambda: False,
                 on_stderr_line: Callable[[str], None] | None = None) -> str:
    """Run georet to completion (for Processing, which already runs in a worker thread); returns stdout.

    Cancelling kills the process. Raises :class:`GeoretFailed` with georet's message on failure.
    """
    if not executable:
        raise GeoretFailed("georet executable not found: install georet or set its path in the georet panel")
    try:
        proc = subprocess.Popen([executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=clean_environment())
    except OSError as exc:
        raise GeoretFailed(f"cannot run {executable}: {exc.strerror}") from None
    stderr_lines: list[str] = []
    stdout_chunks: list[str] = []

    def pump_stderr() -> None:
        for line in proc.stderr:
            stderr_lines.append(line)
            if on_stderr_line:
                on_stderr_line(line.strip())

    pumps = [threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True),
             threading.Thread(target=pump_stderr, daemon=True)]
    for pump in pumps:
        pump.start()
    while proc.poll() is None:
        if is_canceled():
            proc.kill()
            proc.wait()
            raise GeoretFailed("cancelled")
        time.sleep(0.05)
    for pump in pumps:
        pump.join()
    if proc.returncode != 0:
        raise GeoretFailed(error_message("".join(stderr_lines), proc.returncode))
    return "".join(stdout_chunks)
