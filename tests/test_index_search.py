"""Index + search through the Python API, on a real LanceDB on disk."""

from __future__ import annotations

import json
from collections import Counter

import geopandas as gpd
import lancedb
import numpy as np
import pytest
import rasterio
import rasterio.warp
import shapely
import torch
from rasterio.transform import from_origin

import georet
from georet import TilingParams, index_raster, open_index
from georet.errors import GeoretError
from georet.geo import TILE_LABEL_TEMPLATES
from georet.index import TileStore
from georet.models import ModelSpec, load_model
from georet.search import embed_queries


def _table(db):
    return lancedb.connect(str(db)).open_table("tiles")


def test_index_has_one_row_per_tile_with_consistent_geometry(built_index):
    rows = _table(built_index).to_arrow().to_pylist()
    assert len(rows) == 16 + 6 + 4  # 256² utm, 192x128 lon/lat, 128² mercator at 64 px
    assert len({r["tile_id"] for r in rows}) == len(rows)
    for row in rows:
        assert np.linalg.norm(row["vector"]) == pytest.approx(1.0, abs=1e-4)
        poly = shapely.from_wkb(row["geometry"])
        assert poly.bounds == pytest.approx((row["minx"], row["miny"], row["maxx"], row["maxy"]))
        assert -180 <= row["minx"] <= 180 and -90 <= row["miny"] <= 90
        assert row["scene"] and 0 < row["scene_score"] <= 1
        assert row["thumbnail"].startswith(b"\x89PNG")
        assert row["source_crs"] in {"EPSG:32631", "EPSG:4326", "EPSG:3857"}


def test_manifest_records_model_and_tiling(built_index):
    info = open_index(built_index).info()
    assert info["tiles"] == 26
    assert info["model"]["arch"] == "georet-tiny" and info["model"]["dim"] == 64
    assert info["model"]["preprocess"]["size"] == [64, 64]
    assert len(info["sources"]) == 3
    meta = next(iter(info["sources"].values()))
    assert meta["tile_px"] == 64 and meta["tiling"]["edge_policy"] == "shift"
    assert set(info["scenes"]) <= {line.split(":")[0] for line in
                                   (georet.geo.scenes.DEFAULT_CLASSES_FILE.read_text().splitlines()) if line and line[0] != "#"}


def test_search_returns_exact_top_k_as_geodataframe(built_index, tiny_model):
    index = open_index(built_index, model=tiny_model)
    hits = index.search("a dense residential area with many houses", k=5)
    assert isinstance(hits, gpd.GeoDataFrame) and hits.crs.is_geographic
    assert list(hits["rank"]) == [1, 2, 3, 4, 5]
    assert list(hits["score"]) == sorted(hits["score"], reverse=True)
    for col in ("rank", "score", "tile_id", "scene", "scene_score", "source"):
        assert col in hits.columns
    # Brute force over every stored vector gives the same ranking.
    table = _table(built_index).to_arrow()
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    sims = vectors @ tiny_model.encode_text(["a dense residential area with many houses"])[0]
    expected = [table.column("tile_id")[int(i)].as_py() for i in np.argsort(-sims)[:5]]
    assert list(hits["tile_id"]) == expected
    assert hits["score"].iloc[0] == pytest.approx(float(sims.max()), abs=1e-4)


#: pseudo-relevance feedback as documented (docs/search.md): half the mean of the 10 best places, pinned here
#: rather than read from the module, so changing the rule fails this test instead of following it
FEEDBACK_WEIGHT, FEEDBACK_PLACES = 0.5, 10


def test_a_short_query_is_read_in_every_wording_and_moved_towards_its_best_places(built_index, tiny_model):
    """"a marina": the mean of its eight wordings, then pseudo-relevance feedback from its best 10 places
    (these tiles only touch: 10 tiles); a sentence is embedded as written and searched as it is."""
    index = open_index(built_index, model=tiny_model)
    vectors = index.catalog().vectors
    wordings = tiny_model.encode_text([t.format("a marina") for t in TILE_LABEL_TEMPLATES]).mean(axis=0)
    wordings /= np.linalg.norm(wordings)
    sentence = "many boats are moored in a marina"
    assert np.allclose(embed_queries(tiny_model, ["a marina", " a marina. ", sentence]),
                       [wordings, wordings, tiny_model.encode_text([sentence])[0]], atol=1e-5)
    best = vectors[np.argsort(-(vectors @ wordings))[:FEEDBACK_PLACES]]
    moved = wordings + FEEDBACK_WEIGHT * best.mean(axis=0)
    moved /= np.linalg.norm(moved)
    assert not np.allclose(moved, wordings, atol=1e-3)
    for opened in (index, open_index(built_index, model=tiny_model)):  # warm (the catalog) and cold (LanceDB)
        hits = opened.search("a marina", k=5, relational=False)
        assert hits.attrs["score_kind"].startswith("cosine similarity to the text moved towards its best places")
        assert np.allclose(hits["score"], np.sort(vectors @ moved)[::-1][:5], atol=1e-4)
    hits = index.search(sentence, k=5, relational=False)
    assert hits.attrs["score_kind"] == "cosine similarity to the text, -1..1"
    assert np.allclose(hits["score"], np.sort(vectors @ tiny_model.encode_text([sentence])[0])[::-1][:5], atol=1e-4)


def test_the_feedback_comes_from_the_tiles_the_search_may_return(built_index, tiny_model):
    """With a bbox holding 6 tiles the feedback's best places are those 6, warm and cold alike; tiles outside
    the box must not pull the query."""
    box = (3.999, 51.98, 4.03, 52.001)  # only the lon/lat raster's 6 tiles
    warm = open_index(built_index, model=tiny_model)
    catalog = warm.catalog()
    rows = catalog.rows(range(len(catalog)))
    inside = np.array([shapely.from_wkb(rows[i]["geometry"]).intersects(shapely.box(*box)) for i in range(len(catalog))])
    assert inside.sum() == 6 < len(catalog)
    query = embed_queries(tiny_model, ["farmland"])[0]
    moved = query + FEEDBACK_WEIGHT * catalog.vectors[inside].mean(axis=0)
    expected = np.sort(catalog.vectors[inside] @ (moved / np.linalg.norm(moved)))[::-1]
    for index in (warm, open_index(built_index, model=tiny_model)):  # the catalog, then LanceDB
        hits = index.search("farmland", k=6, bbox=",".join(map(str, box)))
        assert np.allclose(hits["score"], expected, atol=1e-4)


def test_bbox_filters_are_exact_and_crs_aware(built_index, tiny_model):
    index = open_index(built_index, model=tiny_model)
    # Only the lon/lat raster (4.0–4.0192 E, 51.9872–52.0 N) lies in this box.
    box = (3.999, 51.98, 4.03, 52.001)
    hits = index.search("farmland", k=50, bbox=",".join(map(str, box)))
    assert len(hits) == 6 and set(hits["source_crs"]) == {"EPSG:4326"}
    assert all(g.intersects(shapely.box(*box)) for g in hits.geometry)
    # The top half of that raster, given in web mercator.
    x0, y0 = rasterio.warp.transform("EPSG:4326", "EPSG:3857", [4.0], [51.9945])
    x1, y1 = rasterio.warp.transform("EPSG:4326", "EPSG:3857", [4.0191], [52.0])
    merc = index.search("farmland", k=50, bbox=[x0[0] + 1, y0[0] + 1, x1[0], y1[0]], bbox_crs="EPSG:3857")
    assert len(merc) == 3 and set(merc["row_off"]) == {0}  # the top row of tiles only


def test_within_polygon_file(built_index, tiny_model, tmp_path):
    with rasterio.open(next(p for p in open_index(built_index).info()["sources"] if "utm" in p)) as src:
        left, bottom, right, top = src.bounds
    area = gpd.GeoDataFrame(geometry=[shapely.box(left, bottom, left + 300, bottom + 300)], crs="EPSG:32631")
    path = tmp_path / "aoi.gpkg"
    area.to_file(path)
    hits = open_index(built_index, model=tiny_model).search("forest", k=50, within=path)
    assert len(hits) == 1 and hits["tile_id"].iloc[0].endswith("-c0-r192-64x64")


def test_scene_filter_and_unknown_scene(built_index, tiny_model):
    index = open_index(built_index, model=tiny_model)
    scene = index.info()["scenes"][0]
    hits = index.search("anything", k=50, scene=scene)
    scenes = index.store.table.to_arrow().column("scene").to_pylist()
    assert len(hits) == scenes.count(scene) < len(scenes) and set(hits["scene"]) == {scene}  # all of them, only them
    with pytest.raises(GeoretError, match="unknown scene 'volcano'; known scenes: "):
        index.search("anything", scene="volcano")


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "5,5,1,1", "0,0,400,10"])
def test_malformed_bbox(built_index, tiny_model, bbox):
    with pytest.raises(GeoretError, match="^bbox: "):
        open_index(built_index, model=tiny_model).search("x", bbox=bbox)


def test_bbox_beyond_the_crs_domain_is_clipped_or_refused(built_index, tiny_model):
    """Web-mercator x = ±1e9 wraps around the globe; clipped, it means "everywhere", not "nowhere"."""
    index = open_index(built_index, model=tiny_model)
    everywhere = index.search("x", k=100, bbox="-1e9,-1e9,1e9,1e9", bbox_crs="EPSG:3857")
    assert len(everywhere) == len(index) == 26
    with pytest.raises(GeoretError, match="bbox: lies outside the area where EPSG:3857 is defined"):
        index.search("x", bbox="3e7,3e7,4e7,4e7", bbox_crs="EPSG:3857")


def test_reindex_is_idempotent(tmp_path, rasters, tiny_model):
    db = tmp_path / "idem.db"
    first = index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model, progress=False)
    second = index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model, progress=False)
    assert (first.indexed, second.indexed, second.already_indexed) == (16, 0, 16)
    forced = index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model,
                          reindex=True, progress=False)
    assert forced.indexed == 16
    assert _table(db).count_rows() == 16


def test_min_valid_skips_mostly_empty_tiles(tmp_path, rasters, tiny_model):
    db = tmp_path / "nodata.db"
    report = index_raster(rasters["nodata"], db, tiling=TilingParams(tile_size=64, min_valid=0.5),
                          model=tiny_model, progress=False)
    assert (report.indexed, report.below_min_valid) == (8, 8)
    assert all(v >= 0.5 for v in _table(db).to_arrow().column("valid_fraction").to_pylist())


def test_other_model_is_refused_for_append_and_query(tmp_path, rasters, tiny_model, built_index):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": "georet-checkpoint/1", "arch": "georet-tiny", "method": "full", "state_dict": {"clip.logit_scale": torch.tensor(1.0)}}, ckpt)
    other = load_model(ModelSpec("georet-tiny", None, str(ckpt)), device="cpu")
    before = _table(built_index).version
    with pytest.raises(GeoretError, match="cannot add to .*checkpoint_id differs"):
        index_raster(rasters["alpha"], built_index, model=other, progress=False)
    with pytest.raises(GeoretError, match="cannot query"):
        open_index(built_index, model=other)
    assert _table(built_index).version == before


def test_not_an_index(tmp_path):
    with pytest.raises(GeoretError, match="no georet index"):
        open_index(tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "precious.txt").write_text("keep me")
    with pytest.raises(GeoretError, match="not a georet index"):
        open_index(tmp_path / "folder")
    with pytest.raises(GeoretError, match="refusing to write"):
        with TileStore.open_for_writing(tmp_path / "folder", {"dim": 4}, {}):
            pass
    assert (tmp_path / "folder" / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_open_index_sees_rows_added_by_another_process(tmp_path, rasters, tiny_model):
    """A long-lived handle (notebook, server) must not keep answering from the index as it first saw it."""
    from conftest import TINY, run_cli

    db = tmp_path / "grow.db"
    index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model, progress=False)
    index = open_index(db, model=tiny_model)
    before = len(index)
    assert index.search("houses near water", k=3).shape[0] == 3  # catalog cached at this version
    run_cli("index", rasters["lonlat"], "--db", db, *TINY, "--tile-size", "64", "--quiet", check=True)
    added = TileStore.open(db).count() - before
    assert added > 0
    assert len(index) == before + added and index.info()["tiles"] == before + added
    assert set(index.info()["sources"]) == {str(rasters["utm"]), str(rasters["lonlat"])}
    everything = index.search("houses", k=before + added)
    assert len(everything) == before + added and everything["source"].nunique() == 2
    relational = index.search("houses near water", k=before + added, near="100km")
    assert relational["source"].nunique() == 2  # the cached catalog was refreshed too


def test_scene_options_conflict_in_the_library(tmp_path, rasters, tiny_model):
    """Zero-shot classes and a land-cover layer both decide scenes: asking for both is an error, not a choice."""
    classes = tmp_path / "classes.txt"
    classes.write_text("water\nforest\n")
    layer = tmp_path / "lc.geojson"
    layer.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(GeoretError, match="classes: use either classes .* or landcover"):
        index_raster(rasters["utm"], tmp_path / "db", model=tiny_model, classes=classes, landcover=layer, progress=False)
    with pytest.raises(GeoretError, match="landcover_field: needs landcover"):
        index_raster(rasters["utm"], tmp_path / "db", model=tiny_model, landcover_field="lc", progress=False)
    assert not (tmp_path / "db").exists()  # refused before anything was written


def test_vector_landcover_gives_majority_and_fractions(tmp_path, rasters, tiny_model):
    with rasterio.open(rasters["utm"]) as src:
        left, bottom, right, top = src.bounds
    # West 100 px water, the rest forest: the tile at column 64..128 is 36/64 water.
    layer = gpd.GeoDataFrame({"lc": ["water", "forest"]}, crs="EPSG:32631", geometry=[
        shapely.box(left, bottom, left + 1000, top), shapely.box(left + 1000, bottom, right, top)]).to_crs(4326)
    path = tmp_path / "landcover.geojson"
    layer.to_file(path)
    db = tmp_path / "lc.db"
    index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model,
                 landcover=path, landcover_field="lc", progress=False)
    rows = {(r["col_off"], r["row_off"]): r for r in _table(db).to_arrow().to_pylist()}
    assert rows[(0, 0)]["scene"] == "water" and rows[(0, 0)]["scene_score"] == pytest.approx(1.0, abs=1e-3)
    second = rows[(64, 0)]
    assert second["scene"] == "water" and second["scene_score"] == pytest.approx(36 / 64, abs=0.01)
    assert json.loads(second["landcover_fractions"]) == pytest.approx({"water": 36 / 64, "forest": 28 / 64}, abs=0.01)
    assert rows[(192, 0)]["scene"] == "forest"
    assert set(open_index(db, model=tiny_model).info()["scenes"]) == {"water", "forest"}


def test_raster_landcover_on_another_grid(tmp_path, rasters, tiny_model):
    with rasterio.open(rasters["utm"]) as src:
        left, top = src.bounds.left, src.bounds.top
    classes = np.full((128, 128), 2, np.uint8)  # 20 m pixels over the same area
    classes[:, :32] = 1  # west 640 m -> class 1
    lc = tmp_path / "classes.tif"
    with rasterio.open(lc, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(left, top, 20, 20), nodata=0) as dst:
        dst.write(classes, 1)
    db = tmp_path / "lcr.db"
    index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model, landcover=lc, progress=False)
    rows = {(r["col_off"], r["row_off"]): r for r in _table(db).to_arrow().to_pylist()}
    assert rows[(0, 0)]["scene"] == "1" and rows[(128, 64)]["scene"] == "2"
    assert rows[(0, 0)]["scene_score"] == pytest.approx(1.0)


def test_thumbnail(built_index, tiny_model):
    index = open_index(built_index, model=tiny_model)
    tile_id = index.search("x", k=1)["tile_id"].iloc[0]
    assert index.thumbnail(tile_id).size == (64, 64)


def test_vrt_input_gives_the_same_tiles_as_its_source(tmp_path, rasters, tiny_model):
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{rasters["utm"]}</SourceFilename><SourceBand>{b}</SourceBand>'
        f"</SimpleSource></VRTRasterBand>" for b in (1, 2, 3))
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="256" rasterYSize="256"><SRS>EPSG:32631</SRS>'
                   f"<GeoTransform>500000, 10, 0, 5800000, 0, -10</GeoTransform>{bands}</VRTDataset>")
    tiling = TilingParams(tile_size=64)
    index_raster(vrt, tmp_path / "vrt.db", tiling=tiling, model=tiny_model, progress=False)
    index_raster(rasters["utm"], tmp_path / "tif.db", tiling=tiling, model=tiny_model, progress=False)
    by_window = {}
    for db in ("vrt.db", "tif.db"):
        for row in _table(tmp_path / db).to_arrow().to_pylist():
            by_window.setdefault((row["col_off"], row["row_off"]), []).append(row)
    assert len(by_window) == 16
    for vrt_row, tif_row in by_window.values():
        assert np.allclose(vrt_row["vector"], tif_row["vector"], atol=1e-5)
        assert vrt_row["geometry"] == tif_row["geometry"]


def test_export_writes_geoparquet_with_embeddings(built_index, tiny_model, tmp_path):
    import pyarrow.parquet as pq
    from conftest import invoke_cli

    from georet.search import open_index

    out = tmp_path / "tiles.parquet"
    done = invoke_cli("export", "--db", built_index, out, check=True)
    assert done.stderr.strip() == f"wrote 26 tiles to {out}"
    frame = gpd.read_parquet(out)
    catalog = open_index(built_index, model=tiny_model).catalog()
    assert frame.crs.to_string() == "OGC:CRS84" and sorted(frame.tile_id) == sorted(catalog.tile_ids)  # lon/lat
    vectors = np.stack(frame.embedding.to_numpy())
    assert np.array_equal(vectors, catalog.vectors[[catalog.index_of[t] for t in frame.tile_id]])
    rows = {r["tile_id"]: r for r in open_index(built_index, model=tiny_model).fetch_rows(list(frame.tile_id))}
    assert all(g.equals(shapely.from_wkb(rows[t]["geometry"])) for t, g in zip(frame.tile_id, frame.geometry))
    metadata = pq.read_schema(out).metadata
    assert json.loads(metadata[b"geo"])["version"] == "1.1.0"
    assert json.loads(metadata[b"georet"])["model"]["arch"] == "georet-tiny"
    bad = invoke_cli("export", "--db", built_index, tmp_path / "tiles.csv")
    assert bad.returncode == 1 and "must end in .parquet" in bad.stderr and not (tmp_path / "tiles.csv").exists()


def test_overlapping_tiles_return_each_place_once(tmp_path, rasters, tiny_model):
    from georet import TilingParams, index_raster
    from georet.search.results import SAME_PLACE_OVERLAP, collapse_overlaps

    db = tmp_path / "overlap.db"
    index_raster([rasters["utm"]], db, tiling=TilingParams(tile_size=64, stride=32), model=tiny_model,
                 progress=False)
    index = open_index(db, model=tiny_model)
    assert len(index) == 49  # 7 x 7 tiles at half a tile's stride
    hits = index.search("forest", k=5)
    assert len(hits) == 5 and list(hits["rank"]) == [1, 2, 3, 4, 5]
    geoms = list(hits.geometry)
    for i in range(5):
        for j in range(i):
            shared = geoms[i].intersection(geoms[j]).area
            assert shared < SAME_PLACE_OVERLAP * min(geoms[i].area, geoms[j].area)
    # each hit is the best of its place: no better tile of the whole index overlaps it that much
    everything = collapse_overlaps(index.search("forest", k=49), 49)
    assert list(everything["tile_id"][:5]) == list(hits["tile_id"])
    assert index.search("forest", k=5, dissolve=True)["tiles"].sum() == 5


@pytest.mark.slow
def test_an_index_at_two_scales(tmp_path, rasters, tiny_model):
    """`--tile-size 64,128` writes every raster's tiles at both sizes into one table; a re-run finds them all;
    a search returns each place once, at whichever scale scored best; "near" pairs tiles across scales."""
    from conftest import TINY, run_cli

    from georet.errors import ConflictError
    from georet.geo import parse_tile_sizes

    db = tmp_path / "scales.db"
    run_cli("index", rasters["utm"], "--db", db, "--tile-size", "64,128", "-q", *TINY, check=True)
    table = TileStore.open(db).table.to_arrow()
    assert sorted(Counter(table["width"].to_pylist()).items()) == [(64, 16), (128, 4)]  # 256 px: 4x4 and 2x2
    assert "tiles of 64 px (640 m) and 128 px (1.28 km)" in run_cli("info", "--db", db, check=True).stdout
    index = open_index(db, model=tiny_model)
    entry = next(iter(index.info()["sources"].values()))
    assert [grid["tile_px"] for grid in entry["scales"]] == [64, 128] and entry["tiles"] == 20
    both = TilingParams(tile_size=parse_tile_sizes("64,128"))
    again = index_raster(rasters["utm"], db, tiling=both, model=tiny_model, progress=False)
    assert again.indexed == 0 and again.already_indexed == 20
    with pytest.raises(ConflictError, match="from tile size 64,128"):
        index_raster(rasters["utm"], db, tiling=TilingParams(tile_size=64), model=tiny_model, progress=False)

    hits = index.search("farmland", k=20)
    geometry = hits.geometry.values
    for i in range(len(hits)):  # no hit shares a quarter of the smaller footprint with a better one
        for j in range(i):
            shared = geometry[i].intersection(geometry[j]).area
            assert shared < 0.25 * min(geometry[i].area, geometry[j].area), (i, j)
    assert len(hits) < 20  # each place once: 16 small tiles hold every large one's ground
    near = index.search("farmland near a river", k=3)
    assert len(near) == 3 and (near["partner_distance_m"] >= 0).all()

    assert parse_tile_sizes("auto,1.2km") == ("auto", "1.2km") and parse_tile_sizes("256") == 256
    assert [t.tile_size for t in TilingParams(tile_size=("auto", "600m")).scales()] == ["auto", "600m"]
    with pytest.raises(GeoretError, match="names a tile size twice"):
        TilingParams(tile_size=("300m", "300m"))


def test_label_propagation_lets_look_alike_tiles_outvote_a_misread_one():
    """A tile whose own zero-shot reading is wrong takes the class of the tiles that look like it."""
    from georet.geo import propagate_labels

    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:2]  # two kinds of ground, 20 tiles each
    vectors = np.repeat(centres, 20, axis=0) + 0.05 * rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    probabilities = np.repeat([[0.8, 0.2], [0.2, 0.8]], 20, axis=0)
    probabilities[3] = [0.4, 0.6]  # misread on its own
    refined = propagate_labels(vectors, probabilities, block=7)  # several blocks
    assert refined.argmax(axis=1).tolist() == [0] * 20 + [1] * 20
    assert np.allclose(refined.sum(axis=1), 1.0)
    single = probabilities[:1]
    assert propagate_labels(vectors[:1], single) is single  # one tile has no neighbours: its reading stands
