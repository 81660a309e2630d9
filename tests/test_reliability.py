"""What the index promises when runs collide, rasters break or the folder is read-only.

Every case runs the real ``georet`` console script in subprocesses (several at
once where the case is about concurrency) on GeoTIFFs written by rasterio, and
then checks the LanceDB table itself against what ``georet info`` reports.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import lancedb
import pytest
from conftest import GEORET_EXE, TINY, invoke_cli, run_cli

from georet.testing.rasters import write_raster

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

TILING = ["--tile-size", "64", "--batch-size", "16", "--quiet", *TINY]


def _table_ids(db: Path) -> list[str]:
    return lancedb.connect(str(db)).open_table("tiles").to_arrow().column("tile_id").to_pylist()


def _info(db: Path) -> dict:
    return json.loads(invoke_cli("info", "--db", db, "--json", check=True).stdout)  # in-process: no torch start-up


def _assert_info_agrees_with_table(db: Path) -> dict:
    """Every tile counted once, and per-source counts in `info` equal to the rows in the table."""
    info = _info(db)
    table = lancedb.connect(str(db)).open_table("tiles").to_arrow()
    ids, sources = table.column("tile_id").to_pylist(), table.column("source").to_pylist()
    assert len(ids) == len(set(ids)) == info["tiles"]
    assert set(sources) <= set(info["sources"])  # no rows that the manifest does not account for
    assert {s: m["tiles"] for s, m in info["sources"].items()} == {s: sources.count(s) for s in info["sources"]}
    return info


def _start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([GEORET_EXE, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        errors.append(err)
    return errors


def _one_line_error(proc: subprocess.CompletedProcess, expected: str) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], proc.stderr
    assert "unexpected" not in proc.stderr and "WARN" not in proc.stderr
    return lines[0]


def test_two_runs_of_one_raster_store_every_tile_once(tmp_path):
    raster = write_raster(tmp_path / "same.tif", "utm", (1024, 1024), seed=3)  # 256 tiles
    db = tmp_path / "db"
    errors = _finish([_start("index", raster, "--db", db, *TILING) for _ in range(2)])
    assert sorted(e.strip().splitlines()[-1].split(" tiles from")[0] for e in errors) == ["indexed 0", "indexed 256"]
    assert any("256 already indexed" in e for e in errors)
    info = _assert_info_agrees_with_table(db)
    assert info["tiles"] == 256 and info["sources"][str(raster)]["state"] == "complete"


def test_runs_of_different_rasters_into_a_new_index_are_all_recorded(tmp_path):
    rasters = [write_raster(tmp_path / f"r{i}.tif", "utm", (512, 512), seed=20 + i) for i in range(3)]
    db = tmp_path / "db"
    _finish([_start("index", r, "--db", db, *TILING) for r in rasters])
    info = _assert_info_agrees_with_table(db)
    assert {s: (m["state"], m["tiles"]) for s, m in info["sources"].items()} == {
        str(r): ("complete", 64) for r in rasters}


def _cut(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_a_raster_that_fails_midway_is_marked_incomplete_and_can_be_removed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_raster(folder / "a_good.tif", "utm", (512, 512), seed=4)
    big = write_raster(tmp_path / "big.tif", "utm", (2048, 2048), seed=5)
    cut = _cut(big, folder / "b_cut.tif")  # opens fine, fails when a tile reads past the end
    db = tmp_path / "db"
    line = _one_line_error(run_cli("index", folder, "--db", db, *TILING),
                           "b_cut.tif is marked incomplete in")
    assert f"{cut}: read failed in the window at column" in line and "1 raster(s) completed before it are kept" in line

    info = _assert_info_agrees_with_table(db)
    assert info["sources"][str(good)]["state"] == "complete" and info["sources"][str(good)]["tiles"] == 64
    failed = info["sources"][str(cut)]
    assert failed["state"] == "incomplete" and failed["reason"].startswith(f"{cut}: read failed")
    assert failed["tiles"] > 0  # committed batches before the damage are kept, so a fixed file resumes

    text = invoke_cli("info", "--db", db, check=True).stdout
    assert f"incomplete: {cut}: read failed" in text

    _one_line_error(invoke_cli("remove", "--db", db, "b_cut.tif", "nope.tif"), "no source 'nope.tif'")
    assert _info(db)["sources"][str(cut)]["tiles"] == failed["tiles"]  # a typo removes nothing

    removed = invoke_cli("remove", "--db", db, "b_cut.tif", check=True)
    assert f"removed {cut} ({failed['tiles']} tiles)" in removed.stderr
    info = _assert_info_agrees_with_table(db)
    assert list(info["sources"]) == [str(good)] and info["tiles"] == 64


def test_a_lost_tiles_table_is_rebuilt_by_the_run_the_error_advises(tmp_path):
    raster = write_raster(tmp_path / "r.tif", "utm", (256, 256), seed=6)
    db = tmp_path / "db"
    run_cli("index", raster, "--db", db, *TILING, check=True)
    shutil.rmtree(db / "tiles.lance")
    _one_line_error(invoke_cli("query", "forest", "--db", db, *TINY[2:]),
                    "the tiles table is missing; re-run `georet index`")
    rerun = invoke_cli("index", raster, "--db", db, *TILING, check=True)
    assert "indexed 16 tiles" in rerun.stderr
    info = _assert_info_agrees_with_table(db)
    assert info["sources"][str(raster)]["state"] == "complete" and info["tiles"] == 16


def _read_only_run(folder: Path, *args) -> subprocess.CompletedProcess:
    """Run georet while ``folder`` is really read-only: chmod for users, a read-only bind mount for root."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        try:
            for path in modes:
                path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
            return subprocess.run([GEORET_EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
        finally:
            for path, mode in modes.items():
                path.chmod(stat.S_IMODE(mode))
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("running as root without user namespaces: no way to make a folder read-only")
    mount = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", mount, "sh", str(folder), GEORET_EXE, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_read_only_index_answers_queries_and_no_op_runs_and_refuses_writes_cleanly(tmp_path):
    raster = write_raster(tmp_path / "r.tif", "utm", (256, 256), seed=7)
    other = write_raster(tmp_path / "other.tif", "utm", (256, 256), seed=8)
    db = tmp_path / "db"
    run_cli("index", raster, "--db", db, *TILING, check=True)
    before = sorted(_table_ids(db)), (db / "georet.json").read_text()

    rerun = _read_only_run(db, "index", raster, "--db", db, *TILING)
    assert rerun.returncode == 0 and "indexed 0 tiles from 1 raster(s)" in rerun.stderr
    assert "16 already indexed" in rerun.stderr
    hits = _read_only_run(db, "query", "forest", "--db", db, "-k", "3", "--format", "json", *TINY[2:])
    assert hits.returncode == 0 and len(json.loads(hits.stdout)["results"]) == 3
    for args in (("index", other, "--db", db, *TILING), ("remove", "--db", db, "r.tif")):
        _one_line_error(_read_only_run(db, *args), f"{db} is read-only; georet can query it but not change it")
    assert (sorted(_table_ids(db)), (db / "georet.json").read_text()) == before


def test_tiles_stored_twice_by_older_versions_are_deduplicated_by_the_next_run(tmp_path):
    raster = write_raster(tmp_path / "r.tif", "utm", (256, 256), seed=9)
    other = write_raster(tmp_path / "other.tif", "utm", (256, 256), seed=10)
    db = tmp_path / "db"
    run_cli("index", raster, "--db", db, *TILING, check=True)
    table = lancedb.connect(str(db)).open_table("tiles")
    table.add(table.to_arrow().slice(0, 5))  # what two unlocked concurrent writers used to leave
    assert table.count_rows() == 21
    invoke_cli("index", other, "--db", db, *TILING, check=True)
    info = _assert_info_agrees_with_table(db)
    assert {s: m["tiles"] for s, m in info["sources"].items()} == {str(raster): 16, str(other): 16}
