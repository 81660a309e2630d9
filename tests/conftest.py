"""Shared fixtures: generated rasters and one small index built once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data"))
from georet.testing.rasters import write_all  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = ["--model", "georet-tiny", "--device", "cpu"]
#: The installed console script of the interpreter running the tests.
GEORET_EXE = str(Path(sys.executable).parent / "georet")


@pytest.fixture(scope="session")
def rasters(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("rasters"))


#: A box over the middle of the STAC fixture's 1024-px COG (10 m pixels, UTM 31N at 500000, 5800000).
AREA_BBOX = "3.0045,52.3265,3.0075,52.3290"


@pytest.fixture(scope="session")
def stac_dir(tmp_path_factory) -> Path:
    """tests/data/make_stac.py's COG, its band files and an ItemCollection over them."""
    from make_stac import write_stac

    root = tmp_path_factory.mktemp("stac")
    write_stac(root)
    return root


def touching(raster: Path, tile_px: int) -> set[tuple[int, int]]:
    """(col, row) of the tiles of ``raster`` whose footprints touch AREA_BBOX, checked tile by tile."""
    from georet.geo import RasterSource, TilingParams, search_area

    with RasterSource(raster, TilingParams(tile_size=tile_px)) as source:
        return {(int(w.col_off), int(w.row_off)) for w in source.grid.windows()
                if source.grid.footprint(w)[1].intersects(search_area(AREA_BBOX))}


@pytest.fixture(scope="session")
def tiny_model():
    from georet.models import ModelSpec, load_model

    return load_model(ModelSpec("georet-tiny", None), device="cpu")


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, rasters, tiny_model) -> Path:
    """UTM + lon/lat + web-mercator rasters in one index (64-px tiles), built through the Python API."""
    from georet import TilingParams, index_raster

    db = tmp_path_factory.mktemp("idx") / "tiles.db"
    index_raster([rasters["utm"], rasters["lonlat"], rasters["mercator"]], db,
                 tiling=TilingParams(tile_size=64), model=tiny_model, progress=False)
    return db


def run_cli(*args: str, check: bool = False, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real ``georet`` console script in a subprocess (``env``: variables to add or change)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    env.pop("GEORET_DEBUG", None)
    proc = subprocess.run([GEORET_EXE, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"georet {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def invoke_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``georet`` in this process through click's runner: the same command code as the console script,
    without paying torch's import for every case. Process-level behaviour (exit on kill, locks,
    stdout/stderr of the real executable) stays with :func:`run_cli`."""
    from click.testing import CliRunner

    from georet.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    proc = subprocess.CompletedProcess(["georet", *map(str, args)], result.exit_code, result.stdout, result.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"georet {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


class Server:
    """A ``georet serve --port 0`` subprocess; the URL is the first line it prints."""

    def __init__(self, db, *extra: str):
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([GEORET_EXE, "serve", "--db", str(db), "--port", "0", "--device", "cpu", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.proc.stderr.read()
        self.headers = {"Authorization": f"Bearer {extra[extra.index('--token') + 1]}"} if "--token" in extra else {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server never became healthy")

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str):
        status, body = self.get(path)
        return status, json.loads(body)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
