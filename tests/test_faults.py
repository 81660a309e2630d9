"""Faults in the middle of work: a disk that fills up, SIGTERM and SIGINT, a COG server that fails mid-read.
Each ends in one line, and the index is left as it was or resumes to exactly the tiles a clean run stores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import lancedb
import pytest
from conftest import GEORET_EXE, TINY, Server, invoke_cli, run_cli

from georet.testing.loopback import range_server
from georet.testing.rasters import write_cog, write_raster

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

TILING = ["--tile-size", "64", "--batch-size", "16", "--quiet", *TINY]


def _ids(db: Path) -> list[str]:
    return lancedb.connect(str(db)).open_table("tiles").to_arrow().column("tile_id").to_pylist()


def _state(db: Path, raster: Path) -> dict:
    return json.loads((db / "georet.json").read_text())["sources"][str(raster)]


def _one_line(stderr: str, expected: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], stderr
    assert "unexpected" not in lines[0] and "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs where this machine lets the tests mount one (root with CAP_SYS_ADMIN), and a way to grow it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small filesystem here; the injected-ENOSPC test covers the same path")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)

    yield mount, grow
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_disk_that_fills_up_mid_index_ends_in_one_line_and_the_run_resumes(small_disk, tmp_path):
    mount, grow = small_disk
    raster = write_raster(tmp_path / "big.tif", size=(2048, 2048), seed=3)  # 1,024 tiles of 64 px
    db = mount / "idx.db"
    full = run_cli("index", raster, "--db", db, *TILING)
    assert full.returncode == 1
    _one_line(full.stderr, "the disk is full (no space left on device)")
    kept = _ids(db)
    assert _state(db, raster)["state"] == "incomplete" and 0 < len(kept) < 1024
    grow()
    run_cli("index", raster, "--db", db, *TILING, check=True)
    ids = _ids(db)
    assert len(ids) == len(set(ids)) == 1024 and set(kept) <= set(ids)
    assert _state(db, raster)["state"] == "complete"


def test_an_injected_enospc_mid_index_ends_in_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    """The same fault where no filesystem can be mounted: the second commit raises ENOSPC, as Lance does."""
    from georet.index.store import TileStore

    raster = write_raster(tmp_path / "big.tif", size=(2048, 2048), seed=3)  # 1,024 tiles: 4 commits of 256
    db = tmp_path / "idx.db"
    real, commits = TileStore.upsert, []

    def upsert(self, rows):
        commits.append(len(rows))
        if len(commits) == 2:
            raise RuntimeError("lance error: LanceError(IO): No space left on device (os error 28), "
                               "/root/.cargo/registry/src/lance-file/src/writer.rs:190:9")
        return real(self, rows)

    monkeypatch.setattr(TileStore, "upsert", upsert)
    failed = invoke_cli("index", raster, "--db", db, *TILING)
    assert failed.returncode == 1
    _one_line(failed.stderr, "the disk is full (no space left on device): free space, then re-run to resume")
    assert _state(db, raster)["state"] == "incomplete"
    monkeypatch.setattr(TileStore, "upsert", real)
    invoke_cli("index", raster, "--db", db, *TILING, check=True)
    ids = _ids(db)
    assert len(ids) == len(set(ids)) == 1024


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_index_stops_it_cleanly_and_the_run_resumes(sent, tmp_path):
    raster = write_raster(tmp_path / "big.tif", size=(2048, 2048), seed=5)  # 1,024 tiles: 4 commits
    db = tmp_path / "idx.db"
    proc = subprocess.Popen([GEORET_EXE, "index", str(raster), "--db", str(db), *TILING], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # stop it once some rows are committed
        if (db / "tiles.lance").is_dir() and lancedb.connect(str(db)).open_table("tiles").count_rows() > 0:
            break
        time.sleep(0.2)
    proc.send_signal(sent)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    why = "Ctrl-C" if sent == signal.SIGINT else "SIGTERM"
    _one_line(err, f"interrupted ({why}); what was committed is kept")
    state = _state(db, raster)
    assert state["state"] == "incomplete" and state["reason"] == f"interrupted ({why})"
    assert invoke_cli("query", "fields", "--db", db, "-k", "5", "--format", "json").stdout.count(str(raster)) == 0
    run_cli("index", raster, "--db", db, *TILING, check=True)
    ids = _ids(db)
    assert len(ids) == len(set(ids)) == 1024


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly(sent, tmp_path):
    db = tmp_path / "idx.db"
    invoke_cli("index", write_raster(tmp_path / "r.tif"), "--db", db, *TILING, check=True)
    server = Server(db)
    assert server.get("/health")[0] == 200
    server.proc.send_signal(sent)
    server.proc.wait(timeout=30)
    err = server.proc.stderr.read()
    assert server.proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("fault", ["error", "stall", "drop"])
def test_a_cog_server_that_fails_mid_read_ends_in_one_line_naming_the_url(fault, tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    write_cog(folder / "scene.tif", size=1024)
    db = tmp_path / "idx.db"
    gdal = {"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "1", "GDAL_HTTP_RETRY_DELAY": "0.1"}
    with range_server(folder) as server:
        url = f"{server.url}/scene.tif"
        server.fault = (fault, 4)  # the header and the first reads succeed: it fails mid-raster
        started = time.monotonic()
        proc = run_cli("index", url, "--db", db, *TILING, env=gdal, timeout=300)
        took = time.monotonic() - started
    assert proc.returncode == 1
    line = _one_line(proc.stderr, url)
    assert "read failed" in line or "cannot open" in line, line
    assert server.faulted <= 40, server.faulted  # retries are bounded: a few per read, not one per tile forever
    assert took < 120
    if db.exists() and (db / "georet.json").exists():
        sources = json.loads((db / "georet.json").read_text())["sources"]
        assert all(entry["state"] == "incomplete" for entry in sources.values())


def test_a_damaged_or_lost_index_is_named_by_doctor_and_repaired_without_losing_intact_rows(tmp_path):
    rasters = [write_raster(tmp_path / f"r{i}.tif", size=(512, 512), seed=i) for i in range(3)]
    db = tmp_path / "idx.db"
    for raster in rasters[:2]:
        invoke_cli("index", raster, "--db", db, *TILING, check=True)
    time.sleep(0.05)
    two_done = time.time()
    invoke_cli("index", rasters[2], "--db", db, *TILING, check=True)
    before = set(_ids(db))
    lost = [f for f in (db / "tiles.lance" / "data").glob("*.lance") if f.stat().st_mtime > two_done]
    for data_file in lost:  # every file written since the second raster: the third's rows and the compaction
        data_file.unlink()

    report = invoke_cli("doctor", "--db", db).stdout
    assert "manifest: ok" in report and "data files missing" in report, report
    assert f"repair: georet doctor --db {db} --repair" in report
    broken = invoke_cli("query", "fields", "--db", db, "-k", "3")
    assert broken.returncode == 1
    _one_line(broken.stderr, f"run `georet doctor --db {db} --repair`")

    repaired = invoke_cli("doctor", "--db", db, "--repair", check=True).stdout
    assert "kept 128 tiles of 2 rasters; 1 raster to index again: r2.tif" in repaired, repaired
    ids = set(_ids(db))
    assert len(ids) == 128 and ids < before
    assert _state(db, rasters[2])["state"] == "incomplete"
    assert "r2.tif" not in invoke_cli("query", "fields", "--db", db, "-k", "200", "--format", "json").stdout
    run_cli("index", rasters[2], "--db", db, *TILING, check=True)  # the advised re-run restores it
    assert set(_ids(db)) == before and "data files missing" not in invoke_cli("doctor", "--db", db).stdout

    (db / "georet.json").write_text("{ half a manifest")
    assert "manifest: georet.json is unreadable or corrupt" in invoke_cli("doctor", "--db", db).stdout
    restored = invoke_cli("doctor", "--db", db, "--repair", check=True).stdout
    assert restored.startswith("restored georet.json from its copy; kept 192 tiles of 3 rasters"), restored
    assert all(_state(db, raster)["state"] == "complete" for raster in rasters)
    shutil.rmtree(db / "tiles.lance")
    assert "tiles table: the tiles table is missing" in invoke_cli("doctor", "--db", db).stdout
