"""``georet index --engine ray`` in Ray's local mode on this machine: the same rows as the local engine,
written as Lance fragments by the workers; resumes and re-runs like the local engine."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import AREA_BBOX, TINY, run_cli, touching

from georet.index import TileStore

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

RAY = ("--engine", "ray")


def table(db) -> dict[str, dict]:
    columns = TileStore.open(db).table.to_arrow().to_pylist()
    return {row["tile_id"]: row for row in columns}


def test_ray_engine_writes_the_local_engines_rows_and_resumes_after_them(tmp_path, stac_dir):
    cog = stac_dir / "scene.tif"
    args = ("--tile-size", "128", "-q", *TINY)
    run_cli("index", cog, "--db", tmp_path / "local.db", *args, check=True)
    # A run that stopped early: the tiles of the area are in, the rest are not.
    run_cli("index", cog, "--db", tmp_path / "ray.db", "--bbox", AREA_BBOX, *args, check=True)
    first = len(touching(cog, 128))
    done = run_cli("index", cog, "--db", tmp_path / "ray.db", *RAY, *args, check=True)
    assert f"indexed {64 - first} tiles from 1 raster(s)" in done.stderr and f"{first} already indexed" in done.stderr

    local, ray = table(tmp_path / "local.db"), table(tmp_path / "ray.db")
    assert sorted(ray) == sorted(local) and len(ray) == 64
    for tile_id, row in ray.items():
        expected = local[tile_id]
        np.testing.assert_allclose(row["vector"], expected["vector"], atol=1e-5)
        for column in ("geometry", "source", "col_off", "row_off", "scene", "thumbnail", "valid_fraction"):
            assert row[column] == expected[column], (tile_id, column)
    store = TileStore.open(tmp_path / "ray.db")
    assert store.manifest["sources"][str(cog)]["state"] == "complete"

    again = run_cli("index", cog, "--db", tmp_path / "ray.db", *RAY, *args, check=True)
    assert "indexed 0 tiles" in again.stderr and "64 already indexed" in again.stderr
    redo = run_cli("index", cog, "--db", tmp_path / "ray.db", "--reindex", *RAY, *args, check=True)
    assert "indexed 64 tiles" in redo.stderr
    assert sorted(table(tmp_path / "ray.db")) == sorted(local)  # replaced, not duplicated


def test_ray_engine_errors_are_one_line_before_the_index_is_touched(tmp_path, stac_dir):
    unreachable = run_cli("index", stac_dir / "scene.tif", "--db", tmp_path / "x.db", *RAY,
                          "--ray-address", "127.0.0.1:9", *TINY)
    assert unreachable.returncode == 1
    assert unreachable.stderr.strip() == "Error: cannot reach the Ray cluster at 127.0.0.1:9: Connection refused"
    assert not (tmp_path / "x.db").exists()
    local_only = run_cli("index", stac_dir / "scene.tif", "--db", tmp_path / "x.db", "--ray-address", "auto", *TINY)
    assert local_only.stderr.strip() == "Error: --ray-address: needs --engine ray"
