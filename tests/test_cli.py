"""The ``georet`` command line: the real console script in subprocesses for what only a process shows
(exit codes and stderr of the executable, kill -9, offline start-up), the same command code in-process
(:func:`invoke_cli`) for output formats and argument errors."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import geopandas as gpd
import lancedb
import pytest
from conftest import GEORET_EXE, SHARED_DATA, TINY, invoke_cli, run_cli

from georet.testing.rasters import write_raster


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, rasters):
    db = tmp_path_factory.mktemp("cli") / "idx.db"
    proc = run_cli("index", rasters["utm"], rasters["lonlat"], "--db", db, "--tile-size", "64", "--batch-size", "4",
                   "--progress-json", *TINY, check=True)
    assert "indexed 22 tiles from 2 raster(s)" in proc.stderr
    progress = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [p["done"] for p in progress if "utm" in p["source"]] == [4, 8, 12, 16]
    lonlat = [p for p in progress if "lonlat" in p["source"]]
    assert [p["done"] for p in lonlat] == [4, 6] and lonlat[-1]["total"] == 6
    return db


def _state(db):
    table = lancedb.connect(str(db)).open_table("tiles")
    return table.count_rows(), table.version, (db / "georet.json").read_text()


@pytest.mark.slow
def test_query_table_json_geojson(cli_index):
    table = invoke_cli("query", "dense residential area", "--db", cli_index, "-k", "3", check=True).stdout
    assert table.splitlines()[0].split()[:4] == ["rank", "score", "scene", "tile_id"]
    assert len(table.splitlines()) == 2 + 3 + 1
    assert table.splitlines()[-1] == "score: cosine similarity to the text moved towards its best places, -1..1"

    as_json = json.loads(invoke_cli("query", "beach", "--db", cli_index, "-k", "4", "--format", "json", check=True).stdout)
    assert as_json["query"] == "beach" and [r["rank"] for r in as_json["results"]] == [1, 2, 3, 4]
    assert as_json["score"] == "cosine similarity to the text moved towards its best places, -1..1"
    assert len(as_json["results"][0]["bbox"]) == 4

    collection = json.loads(invoke_cli("query", "beach", "--db", cli_index, "-k", "4", "--format", "geojson", check=True).stdout)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 4
    props = collection["features"][0]["properties"]
    assert {"rank", "score", "tile_id", "scene", "scene_score", "source"} <= set(props)
    assert [f["properties"]["tile_id"] for f in collection["features"]] == [r["tile_id"] for r in as_json["results"]]
    lon, lat = collection["features"][0]["geometry"]["coordinates"][0][0]
    assert 2.9 < lon < 4.1 and 51.9 < lat < 52.5


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".parquet"])
def test_query_output_files(cli_index, tmp_path, suffix):
    from georet.index import TileStore, sql_string

    out = tmp_path / f"hits{suffix}"
    scene = json.loads(invoke_cli("info", "--db", cli_index, "--json").stdout)["scenes"][0]
    query = ["query", "forest", "--db", cli_index, "-k", "5", "--scene", scene]
    proc = invoke_cli(*query, "-o", out, check=True)
    assert "wrote" in proc.stderr
    frame = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    shown = json.loads(invoke_cli(*query, "--format", "json", check=True).stdout)["results"]
    # the file holds the hits the screen shows, in their order, all of the scene asked, as many as there are
    assert list(frame["tile_id"]) == [hit["tile_id"] for hit in shown] and set(frame["scene"]) == {scene}
    assert len(frame) == min(5, TileStore.open(cli_index).count(f"scene = {sql_string(scene)}"))
    assert list(frame["rank"]) == list(range(1, len(frame) + 1)) and frame.crs.is_geographic
    assert frame["score"].tolist() == pytest.approx([hit["score"] for hit in shown], abs=1e-6)


def test_info_json(cli_index):
    info = json.loads(invoke_cli("info", "--db", cli_index, "--json", check=True).stdout)
    assert info["tiles"] == 22 and info["model"]["arch"] == "georet-tiny"
    assert len(info["sources"]) == 2 and info["scenes"]
    human = invoke_cli("info", "--db", cli_index, check=True).stdout
    assert "tiles    22" in human


def _assert_one_line_error(proc, pattern):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert pattern in lines[0], lines[0]


@pytest.mark.slow
def test_bad_input_gives_one_line_error_and_leaves_index_unchanged(cli_index, rasters, tmp_path):
    before = _state(cli_index)
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("this is not a raster")
    cases = [
        (("index", tmp_path / "missing.tif", "--db", cli_index, *TINY), "no such file"),
        (("index", not_raster, "--db", cli_index, *TINY), "not a readable raster"),
        (("index", rasters["no_crs"], "--db", cli_index, *TINY), "has no CRS"),
        (("index", rasters["utm"], "--db", cli_index, "--bands", "9,8,7", *TINY), "utm_rgb.tif has 3 band(s); band 9 was asked for"),
        (("index", rasters["utm"], "--db", cli_index, "--tile-size", "big", *TINY), "--tile-size: must look like 256"),
        (("index", rasters["utm"], "--db", cli_index, "--tile-size", "4", *TINY), "tiles of 4 px are outside"),
        (("index", rasters["utm"], "--db", cli_index, "--tile-size", "100km", *TINY),
         "utm_rgb.tif: tiles of 10000 px are outside what georet takes (8–2048 px per side)"),
        (("query", "   ", "--db", cli_index), "query text is empty"),
        (("query", "x", "--db", cli_index, "--scene", "volcano"), "unknown scene 'volcano'; known scenes:"),
        (("query", "x", "--db", cli_index, "--bbox", "1,2,3"), "--bbox"),
        (("query", "x", "--db", cli_index, "--bbox-crs", "EPSG:3857"), "--bbox-crs: says in which CRS the bounding box is given; give the box too"),
        (("query", "x", "--db", cli_index, "-o", tmp_path / "hits.csv"), "--output must end in"),
        (("query", "x", "--db", tmp_path), "not a georet index"),
        (("info", "--db", tmp_path / "nope"), "no georet index"),
    ]
    for i, (args, pattern) in enumerate(cases):  # the first two in the real executable, the rest in-process
        _assert_one_line_error(run_cli(*args) if i < 2 else invoke_cli(*args), pattern)
    assert _state(cli_index) == before


@pytest.mark.slow
def test_truncated_raster_names_file_and_window(tmp_path):
    """A GeoTIFF cut off halfway opens fine and fails only when a tile reads past the end."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    full, cut = tmp_path / "full.tif", tmp_path / "cut.tif"
    with rasterio.open(full, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(500000, 5800000, 1, 1), tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8))
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    proc = run_cli("index", cut, "--db", tmp_path / "db", *TINY, "--tile-size", "64", "--quiet")
    _assert_one_line_error(proc, f"{cut}: read failed in the window at column ")
    assert "TIFFReadEncodedTile" in proc.stderr and "unexpected" not in proc.stderr


@pytest.mark.slow
def test_index_refuses_another_model(cli_index, rasters, tmp_path):
    import torch

    before = _state(cli_index)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": "georet-checkpoint/1", "arch": "georet-tiny", "method": "full", "state_dict": {"clip.logit_scale": torch.tensor(2.0)}}, ckpt)
    _assert_one_line_error(run_cli("index", rasters["alpha"], "--db", cli_index, *TINY, "--checkpoint", ckpt),
                           "cannot add to")
    assert _state(cli_index) == before


@pytest.mark.slow
def test_default_model_offline_fails_fast_with_advice(tmp_path, rasters):
    started = time.perf_counter()
    proc = run_cli("index", rasters["utm"], "--db", tmp_path / "d.db", "--model", "ViT-B-32", "--pretrained",
                   "laion2b_s34b_b79k", "--quiet")
    if proc.returncode == 0:
        pytest.skip("this machine is online and downloaded the weights")
    _assert_one_line_error(proc, "--pretrained /path/to/weights")
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "d.db").exists()


@pytest.mark.slow
def test_killed_index_resumes_without_loss_or_duplicates(tmp_path):
    raster = write_raster(tmp_path / "big.tif", "utm", (2048, 2048), seed=11)  # 1024 tiles of 64 px
    db = tmp_path / "resume.db"
    args = [GEORET_EXE, "index", raster, "--db", db, "--tile-size", "64", "--batch-size", "16", *TINY, "--quiet"]
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    rows_at_kill = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            rows_at_kill = lancedb.connect(str(db)).open_table("tiles").count_rows()
        except Exception:
            continue
        if rows_at_kill > 0:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the index run finished before it could be killed"
    done_before = lancedb.connect(str(db)).open_table("tiles").count_rows()
    assert 0 < done_before < 1024
    killed = json.loads(run_cli("info", "--db", db, "--json", check=True).stdout)["sources"][str(raster)]
    assert (killed["state"], killed["tiles"]) == ("incomplete", done_before)
    assert killed["reason"].startswith("indexing started but did not finish")

    resumed = run_cli("index", raster, "--db", db, "--tile-size", "64", "--batch-size", "16", *TINY, check=True)
    assert f"{done_before} already indexed" in resumed.stderr
    assert f"indexed {1024 - done_before} tiles" in resumed.stderr
    ids = lancedb.connect(str(db)).open_table("tiles").to_arrow().column("tile_id").to_pylist()
    assert len(ids) == 1024 and len(set(ids)) == 1024
    resumed_info = json.loads(run_cli("info", "--db", db, "--json", check=True).stdout)["sources"][str(raster)]
    assert (resumed_info["state"], resumed_info["tiles"], resumed_info["reason"]) == ("complete", 1024, None)


@pytest.mark.skipif(not (SHARED_DATA / "rasters" / "netherlands_aerial_0.25m.tif").exists(),
                    reason="../shared/data not present")
@pytest.mark.slow
def test_real_netherlands_orthophoto(tmp_path):
    raster = SHARED_DATA / "rasters" / "netherlands_aerial_0.25m.tif"
    db = tmp_path / "nl.db"
    run_cli("index", raster, "--db", db, "--tile-size", "50m", *TINY, check=True)  # 0.25 m -> 200 px tiles
    info = json.loads(run_cli("info", "--db", db, "--json", check=True).stdout)
    assert info["tiles"] == 25 and next(iter(info["sources"].values()))["crs"] == "EPSG:28992"
    hits = json.loads(run_cli("query", "river", "--db", db, "-k", "25", "--format", "geojson", check=True).stdout)
    for feature in hits["features"]:
        for lon, lat in feature["geometry"]["coordinates"][0]:
            assert 4.9 < lon < 5.1 and 51.8 < lat < 51.9  # near Gorinchem/Waal, NL


@pytest.mark.skipif(not (SHARED_DATA / "rasters" / "netherlands_aerial_0.25m.tif").exists(),
                    reason="../shared/data not present")
@pytest.mark.slow
def test_default_tiles_cover_the_model_ground_and_a_new_tiling_needs_reindex(tmp_path):
    """No --tile-size: 300 m tiles on the 0.25 m orthophoto, clamped to its 1000 px (250 m); another tiling
    of an indexed raster is refused in one line, index untouched, and --reindex replaces the old grid
    instead of mixing two."""
    raster = SHARED_DATA / "rasters" / "netherlands_aerial_0.25m.tif"
    db = tmp_path / "nl.db"
    invoke_cli("index", raster, "--db", db, *TINY, check=True)
    entry = json.loads((db / "georet.json").read_text())["sources"][str(raster)]
    assert (entry["tile_px"], entry["stride_px"], entry["tile_m"]) == (1000, 667, 250.0)
    assert entry["tiling"]["tile_size"] == "auto" and entry["tiling"]["scale"]["metres"] == 300.0
    assert f"source   {raster}  [EPSG:28992, 1 tile of 1000 px (250 m), every 667 px, scenes: zero-shot]" in \
        invoke_cli("info", "--db", db, check=True).stdout
    before = _state(db)
    _assert_one_line_error(invoke_cli("index", raster, "--db", db, "--tile-size", "50m", *TINY),
                           "is indexed with other tiling (1000 px tiles every 667 px, from tile size auto); repeat those "
                           "options to add to this index, or re-tile it with --reindex")
    assert _state(db) == before
    invoke_cli("index", raster, "--db", db, "--tile-size", "50m", "--stride", "2/3", "--reindex", *TINY, check=True)
    entry = json.loads((db / "georet.json").read_text())["sources"][str(raster)]
    assert (entry["tile_px"], entry["stride_px"]) == (200, 133)
    widths = lancedb.connect(str(db)).open_table("tiles").to_arrow()["width"].to_pylist()
    assert widths == [200] * 64  # 8 x 8 overlapping tiles; none of the 800 px grid left
    _assert_one_line_error(invoke_cli("index", raster, "--db", db, "--stride", "3/2", *TINY),
                           "--stride: takes pixels (200) or a fraction of the tile")


@pytest.mark.slow
def test_sources_indexed_before_the_stretch_option_are_not_redone(tmp_path, rasters):
    """Their tiles kept their uint8 colours, as ``--stretch auto`` keeps well-exposed ones; --reindex redoes them."""
    db = tmp_path / "old.db"
    invoke_cli("index", rasters["utm"], "--db", db, "--tile-size", "64", *TINY, check=True)
    manifest_file = db / "georet.json"
    manifest = json.loads(manifest_file.read_text())
    for entry in manifest["sources"].values():
        del entry["tiling"]["stretch"]  # as an index written before the option existed
    manifest_file.write_text(json.dumps(manifest))
    again = invoke_cli("index", rasters["utm"], "--db", db, "--tile-size", "64", *TINY, check=True)
    assert "indexed 0 tiles" in again.stderr and "16 already indexed" in again.stderr, again.stderr
    changed = invoke_cli("index", rasters["utm"], "--db", db, "--tile-size", "64", "--stretch", "always",
                         "--reindex", *TINY, check=True)
    assert "indexed 16 tiles" in changed.stderr, changed.stderr
    tiling = json.loads(manifest_file.read_text())["sources"][str(rasters["utm"])]["tiling"]
    assert tiling["stretch"] == "always"
