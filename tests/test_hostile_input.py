"""Rasters made to break the indexer (``georet.testing.hostile``): each is refused in one line before anything
is written, or indexed as it should be; memory stays bounded and a refusal leaves the index as it was."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lancedb
import psutil
import pytest
import shapely
from conftest import GEORET_EXE, TINY, invoke_cli

from georet.testing import hostile
from georet.testing.rasters import write_raster

TILING = ["--tile-size", "64", "--quiet", *TINY]
#: a refusal happens before the model loads: the process holds Python, rasterio and GDAL, no tensors
REFUSAL_RSS_BOUND = 600 * 2**20

#: the rasters of georet.testing.hostile that must be refused, and what their one line says
REFUSED = {
    "sparse bomb: 128 KB inflating to 12 GB": "a decompression bomb",
    "one compressed block of 768 MB": "one compressed block is 16384 x 16384 px",
    "zero pixel size": "geotransform is degenerate",
    "NaN pixel size": "is not finite",
    "NaN geotransform origin": "geotransform is not finite",
    "engineering CRS (no way to lon/lat)": "neither geographic nor projected",
    "no CRS": "has no CRS; pass --assume-crs",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("hostile") / "idx.db"
    good = write_raster(db.parent / "good.tif")
    invoke_cli("index", good, "--db", db, *TILING, check=True)
    return db


def _state(db: Path) -> tuple[int, list[str], bytes]:
    table = lancedb.connect(str(db)).open_table("tiles")
    return table.version, sorted(table.to_arrow().column("tile_id").to_pylist()), (db / "georet.json").read_bytes()


@pytest.mark.parametrize("case", REFUSED)
def test_a_hostile_raster_is_refused_in_one_line_and_the_index_is_unchanged(case, indexed, tmp_path):
    name, write = hostile.RASTERS[case]
    expected = REFUSED[case]
    raster = write(tmp_path / name)
    before = _state(indexed)
    proc = invoke_cli("index", raster, "--db", indexed, *TILING)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: {raster}: ") and expected in lines[0], lines[0]
    assert "unexpected" not in lines[0]
    assert _state(indexed) == before


@pytest.mark.slow
def test_a_decompression_bomb_is_refused_in_bounded_memory_and_time(tmp_path):
    bomb = hostile.sparse_bomb(tmp_path / "bomb.tif", side=131_072)  # 48 GB of pixels in 0.5 MB
    assert bomb.stat().st_size < 2**20
    proc = psutil.Popen([GEORET_EXE, "index", str(bomb), "--db", str(tmp_path / "db"), "--quiet"],  # as users run it
                        stdout=psutil.subprocess.PIPE, stderr=psutil.subprocess.PIPE, text=True)
    peak, deadline = 0, time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=5)
    assert proc.returncode == 1 and "a decompression bomb" in err, err
    assert peak < REFUSAL_RSS_BOUND, f"{peak / 2**20:.0f} MB"
    assert not (tmp_path / "db").exists()


def test_odd_but_valid_rasters_are_indexed_as_they_should_be(tmp_path):
    db = tmp_path / "idx.db"
    valid = [case for case in hostile.RASTERS if case not in REFUSED]
    assert len(valid) == 4  # 200 bands, columns running west, 1 x 1, all nodata
    rasters = {case: hostile.RASTERS[case][1](tmp_path / hostile.RASTERS[case][0]) for case in valid}
    invoke_cli("index", *rasters.values(), "--db", db, *TILING, check=True)
    info = invoke_cli("info", "--db", db, "--json", check=True).stdout
    sources = {Path(name).name: entry for name, entry in json.loads(info)["sources"].items()}
    assert sources["bands.tif"]["tiles"] == 16  # 200 bands: the first three read, 4 x 4 tiles of 64 px
    assert sources["west.vrt"]["tiles"] == 16
    assert sources["pixel.tif"]["tiles"] == 0 and sources["empty.tif"]["tiles"] == 0  # nothing to search
    table = lancedb.connect(str(db)).open_table("tiles").to_pandas()
    west = shapely.unary_union(shapely.from_wkb(table[table.source.str.endswith("west.vrt")].geometry.tolist()))
    east = shapely.unary_union(shapely.from_wkb(table[table.source.str.endswith("bands.tif")].geometry.tolist()))
    assert west.is_valid and west.area > 0 and west.bounds[2] == pytest.approx(east.bounds[0], abs=1e-6)
