"""Time: acquisition dates on tiles, date filters and change search, from parsing to the CLI."""

from __future__ import annotations

import base64
import io
import json
from datetime import date

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from conftest import TINY, run_cli
from PIL import Image

from georet.errors import InputError
from georet.geo import RasterRef
from georet.geo.dates import DateRange, acquisition_date, date_in_name, parse_date, parse_when
from georet.search.catalog import TileCatalog, group_positions
from georet.search.change import pair_places, rank_change, zscores_by_date
from georet.search.relations import Change, parse_query
from georet.testing.rasters import write_raster

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow


# -- dates -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, iso", [
    ("2016-05-01", "2016-05-01"), ("20160501", "2016-05-01"), ("2016:05:01 10:20:30", "2016-05-01"),
    ("2016-05-01T10:20:30.5Z", "2016-05-01"), ("2016-05", "2016-05"), ("2016", "2016"),
])
def test_parse_date(text, iso):
    assert parse_date(text) == iso


@pytest.mark.parametrize("bad", ["2016-02-30", "yesterday", "16-05-01", "2016-13", ""])
def test_bad_dates_are_one_line_errors_naming_the_option(bad):
    with pytest.raises(InputError, match=r"^acquired: not a date"):
        parse_date(bad)


@pytest.mark.parametrize("name, iso", [
    ("naip_north_dakota_20090818.tif", "2009-08-18"), ("landsat_pucallpa_1985.tif", "1985"),
    ("S2A_MSIL2A_20230115T104421_N0509.tif", "2023-01-15"), ("ortho_2016-05-01_rgb.tif", "2016-05-01"),
    ("https://host/cogs/2019/scene.tif", None),  # only the file name counts, not folders
    ("tile_2048_1024.tif", None), ("sentinel2_virginia_rgb_10m.tif", None), ("area_20150231.tif", None),  # digits that are no date
])
def test_dates_in_file_names(name, iso):
    assert date_in_name(name) == iso


def test_where_a_date_comes_from_first_found_wins(tmp_path):
    ref = RasterRef("/data/site_2009.tif", metadata={"datetime": "2015-09-26T17:00:00Z"})
    assert acquisition_date(ref, {"TIFFTAG_DATETIME": "2020:01:01 00:00:00"}, "2001-02-03") == ("2001-02-03", "given")
    assert acquisition_date(ref, {"TIFFTAG_DATETIME": "2020:01:01 00:00:00"}) == ("2015-09-26", "STAC item")
    plain = RasterRef("/data/site_2009.tif")
    tags = {"TIFFTAG_DATETIME": "2020:01:01 00:00:00", "ACQUISITIONDATE": "2012-07-04"}
    assert acquisition_date(plain, tags) == ("2012-07-04", "tag ACQUISITIONDATE")
    assert acquisition_date(plain, {"ACQUISITIONDATE": "unknown"}) == ("2009", "file name")  # free text: look on
    assert acquisition_date(RasterRef("/data/site.tif"), {}) == (None, None)


def test_date_ranges_and_filters():
    assert DateRange.of("2016") == DateRange(date(2016, 1, 1), date(2016, 12, 31))
    assert DateRange.of("2016-02") == DateRange(date(2016, 2, 1), date(2016, 2, 29))
    assert parse_when("2015/2020") == DateRange(date(2015, 1, 1), date(2020, 12, 31))
    assert parse_when("2016-05-01/2016-08-31") == DateRange(date(2016, 5, 1), date(2016, 8, 31))
    assert parse_when("2015/..").end == date.max and parse_when("../2010").start == date.min
    assert DateRange.of("2016").overlaps(parse_when("2016-05-01/2016-08-31"))  # a year shares those days
    assert not DateRange.of("2016-09-02").overlaps(parse_when("2016-05-01/2016-08-31"))
    for bad, message in (("2020/2015", "ends before it starts"), ("../..", "at least one end"), ("soon", "not a date")):
        with pytest.raises(InputError, match=f"^when: .*{message}"):
            parse_when(bad)


# -- change parsing and scoring ------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, before, after", [
    ("farmland that became housing", "became", "farmland", "housing"),
    ("farmland turned into houses", "became", "farmland", "houses"),
    ("houses that used to be forest", "became", "forest", "houses"),
    ("houses where forest used to be", "became", "forest", "houses"),
    ("lakes where there used to be fields", "became", "fields", "lakes"),
    ("new industrial buildings", "new", None, "industrial buildings"),
    ("forest that was cleared", "gone", "forest", None),
    ("Forest  that  DISAPPEARED", "gone", "Forest", None),
])
def test_parse_change(text, kind, before, after):
    change = parse_query(text)
    assert isinstance(change, Change) and (change.kind, change.before, change.after) == (kind, before, after)


@pytest.mark.parametrize("text", ["farmland near river", "renewable energy", "a newly paved road near a river"])
def test_other_queries_are_no_change(text):
    assert not isinstance(parse_query(text), Change)


def two_date_catalog(shift: float = 0.02, drop: float = 0.02) -> TileCatalog:
    """A 3×3 grid at 2016 and again at 2021 (its grid ``shift`` of a tile east and ``drop`` south), in 3-d
    embeddings:
    axis 0 "farmland", axis 1 "houses", axis 2 anything else.

    Cell 0 changed farmland → houses; cell 1 is houses at both dates (and looks more like houses than
    cell 0 does in 2021); cell 2 is farmland at both dates; the rest is something else.
    """
    side = 0.001
    cells = np.arange(9)
    minx, miny = (cells % 3) * side, -(cells // 3) * side
    early = {0: [1, 0, 0], 1: [0, 1, 0], 2: [1, 0, 0]}
    late = {0: [0.2, 0.9, 0], 1: [0, 1, 0], 2: [1, 0, 0]}
    vectors = np.array([early.get(c, [0.1, 0.1, 1]) for c in cells] + [late.get(c, [0.1, 0.1, 1]) for c in cells],
                       dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bounds = np.column_stack([np.r_[minx, minx + shift * side], np.r_[miny, miny - drop * side],
                              np.r_[minx, minx + shift * side] + side, np.r_[miny, miny - drop * side] + side])
    acquired = pa.array(["2016-05-01"] * 9 + ["2021"] * 9).dictionary_encode()
    ids = [f"early-{c}" for c in cells] + [f"late-{c}" for c in cells]
    return TileCatalog(0, ids, vectors, bounds, np.array([""] * 18, dtype=object), attributes=pa.table({"acquired": acquired}))


PHRASES = np.eye(3, dtype=np.float32)  # farmland, houses, and a sentence that matches nothing in particular


def test_tiles_of_one_place_pair_across_dates_and_neighbours_do_not():
    catalog = two_date_catalog()
    assert catalog.date_codes[0] == ["2016-05-01", "2021"]
    everything = np.ones(18, dtype=bool)
    before, after = pair_places(catalog, np.arange(18), everything, everything)
    assert sorted(zip(before.tolist(), after.tolist())) == [(c, c + 9) for c in range(9)]
    third = two_date_catalog(shift=1 / 3, drop=0)  # shares 2/3 with one earlier tile, 1/3 with its neighbour
    before, _ = pair_places(third, np.array([9]), everything, everything)
    assert before.tolist() == [0]
    diagonal = two_date_catalog(shift=1 / 3, drop=1 / 3)  # (2/3)² < 1/2: no longer the same place
    assert len(pair_places(diagonal, np.array([9]), everything, everything)[0]) == 0


def test_of_two_tiles_of_one_date_the_one_sharing_most_is_the_place():
    """A grid's last row is shifted to end at the raster's edge, so it can overlap the row before by more
    than half: a later tile then finds two earlier ones, and the one it shares most with is its place."""
    minx = np.array([0.0, 0.4, 0.02]) * 0.001  # earlier A, earlier B (0.6 over A), later C (0.98 over A)
    bounds = np.column_stack([minx, np.zeros(3), minx + 0.001, np.full(3, 0.001)])
    catalog = TileCatalog(0, ["a", "b", "c"], np.eye(3, dtype=np.float32), bounds, np.array([""] * 3, dtype=object),
                          attributes=pa.table({"acquired": pa.array(["2009", "2009", "2015"]).dictionary_encode()}))
    every = np.ones(3, dtype=bool)
    for candidate in (2, 0, 1):  # from the later tile, and from either earlier one: one pair
        before, after = pair_places(catalog, np.array([candidate]), every, every)
        assert (before.tolist(), after.tolist()) == ([0], [2])


def test_zscores_are_taken_within_each_date():
    z = zscores_by_date(np.array([[1.0], [10.0], [3.0], [30.0], [5.0]]), group_positions(np.array([0, 1, 0, 1, -1])))
    assert z[:, 0] == pytest.approx([-1, -1, 1, 1, 0])


def test_change_forms_rank_the_changed_place_first():
    catalog = two_date_catalog()
    every = np.ones(18, dtype=bool)
    became = rank_change(Change("became", "farmland", "houses", ""), catalog, PHRASES, 3, every, every)
    assert (became.before[0], became.after[0]) == (0, 9)
    new = rank_change(Change("new", None, "houses", ""), catalog, PHRASES[[1, 1, 2]], 3, every, every)
    assert new.after[0] == 9  # not cell 1, which looks more like houses but was houses before too
    gone = rank_change(Change("gone", "farmland", None, ""), catalog, PHRASES[[0, 0, 2]], 3, every, every)
    assert gone.before[0] == 0  # not cell 2, still farmland


def test_without_the_stay_term_unchanged_places_win():
    """The "nothing changed" term is what keeps houses that were always there out of "new houses"."""
    catalog = two_date_catalog()
    every = np.ones(18, dtype=bool)
    plain = rank_change(Change("new", None, "houses", ""), catalog, PHRASES[[1, 1, 2]], 3, every, every,
                        stay_weight=0.0)
    assert plain.after[0] == 10


def test_from_and_to_choose_the_sides():
    catalog = two_date_catalog()
    every = np.ones(18, dtype=bool)
    only_2021 = catalog.dated_within(parse_when("2021"))
    ranking = rank_change(Change("became", "farmland", "houses", ""), catalog, PHRASES, 3, only_2021, only_2021)
    assert len(ranking.after) == 0  # one date on both sides: no change to see
    ranking = rank_change(Change("became", "farmland", "houses", ""), catalog, PHRASES, 3, ~only_2021, every)
    assert ranking.after[0] == 9


# -- end to end: index, info, query (real rasters, real index, the real CLI) ----------------------
@pytest.fixture(scope="module")
def dated_index(tmp_path_factory):
    """One UTM place at two dates (from the file name; from a date tag), and a lon/lat raster given a date."""
    root = tmp_path_factory.mktemp("dated")
    early = write_raster(root / "site_2009-08-18.tif", grid="utm", seed=1)
    late = write_raster(root / "site_later.tif", grid="utm", seed=2)
    with rasterio.open(late, "r+") as dataset:
        dataset.update_tags(TIFFTAG_DATETIME="2015:09:26 12:00:00")
    other = write_raster(root / "elsewhere.tif", grid="lonlat", seed=3)
    db = root / "dated.db"
    run_cli("index", early, late, "--db", db, "--tile-size", "64", *TINY, check=True)
    run_cli("index", other, "--db", db, "--tile-size", "64", "--acquired", "2012-07", *TINY, check=True)
    return db


def test_every_tile_carries_its_date(dated_index, tmp_path):
    info = json.loads(run_cli("info", "--db", dated_index, "--json", check=True).stdout)
    by_name = {source.rsplit("/", 1)[-1]: entry for source, entry in info["sources"].items()}
    assert {name: (e["acquired"], e["acquired_from"]) for name, e in by_name.items()} == {
        "site_2009-08-18.tif": ("2009-08-18", "file name"),
        "site_later.tif": ("2015-09-26", "tag TIFFTAG_DATETIME"),
        "elsewhere.tif": ("2012-07", "given")}
    assert info["dates"] == ["2009-08-18", "2012-07", "2015-09-26"]
    assert "acquired 2015-09-26 (tag TIFFTAG_DATETIME)" in run_cli("info", "--db", dated_index, check=True).stdout
    hits = json.loads(run_cli("query", "houses", "--db", dated_index, "-k", "48", "--format", "geojson",
                              check=True).stdout)["features"]
    assert len(hits) == 48 and {h["properties"]["acquired"] for h in hits} == {"2009-08-18", "2012-07", "2015-09-26"}
    table = run_cli("query", "houses", "--db", dated_index, "-k", "3", check=True).stdout
    assert "acquired" in table.splitlines()[0]  # a multi-date index says which date each hit shows
    import geopandas as gpd

    run_cli("query", "houses", "--db", dated_index, "-k", "5", "--when", "2012", "-o", tmp_path / "hits.gpkg",
            check=True)
    assert set(gpd.read_file(tmp_path / "hits.gpkg")["acquired"].astype(str)) == {"2012-07"}
    run_cli("export", "--db", dated_index, tmp_path / "all.parquet", check=True)
    assert gpd.read_parquet(tmp_path / "all.parquet")["acquired"].value_counts().to_dict() == {
        "2009-08-18": 16, "2015-09-26": 16, "2012-07": 16}


@pytest.mark.parametrize("when, dates", [("2015", {"2015-09-26"}), ("2009/2012", {"2009-08-18", "2012-07"}),
                                         ("2012-07-15/2015-01-01", {"2012-07"}), ("2020/..", set())])
def test_when_filters_cold_and_warm_alike(dated_index, when, dates):
    from georet.search import open_index

    index = open_index(dated_index)
    cold = index.search("houses", k=48, when=when)  # LanceDB's prefilter, then the exact test
    index.catalog()
    warm = index.search("houses", k=48, when=when)  # the catalog in memory
    assert set(cold["acquired"]) == set(warm["acquired"]) == dates
    assert list(cold["tile_id"]) == list(warm["tile_id"])
    relational = index.search("houses near water", k=5, when="2015")
    assert set(relational["acquired"]) <= {"2015-09-26"} and len(relational)


def test_change_query_pairs_the_two_dates_of_a_place(dated_index):
    proc = run_cli("query", "farmland that became houses", "--db", dated_index, "-k", "5", "--format", "json",
                   "--explain", check=True)
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 5
    from georet.search import open_index

    index = open_index(dated_index)
    for hit in results:
        assert (hit["before_acquired"], hit["acquired"], hit["change"]) == ("2009-08-18", "2015-09-26", "became")
        assert hit["before_tile_id"] != hit["tile_id"] and "site_later" in hit["source"]
        png = base64.b64decode(hit["before_thumbnail"].removeprefix("data:image/png;base64,"))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(index.thumbnail(hit["before_tile_id"])))
    assert "parsed: change: 'farmland' at the earlier date, 'houses' at the later" in proc.stderr
    assert "acquisition date(s)" in proc.stderr and "z_stay" in proc.stderr
    table = run_cli("query", "new houses", "--db", dated_index, "-k", "2", check=True).stdout
    assert "2009-08-18 -> 2015-09-26" in table
    reverse = json.loads(run_cli("query", "farmland that became houses", "--db", dated_index, "--from", "2015",
                                 "--format", "json", check=True).stdout)
    assert reverse["results"] == []  # the latest date cannot be the earlier side


def test_bad_dates_fail_in_one_line(dated_index, tmp_path):
    for args, message in (
        (("query", "houses", "--when", "2015/2010"), "--when: the range ends before it starts"),
        (("query", "houses", "--from", "2009"), "--from: --from/--to choose the dates a change query compares"),
        (("index", "x.tif", "--acquired", "last spring"), "--acquired: not a date"),
    ):
        proc = run_cli(*args, "--db", dated_index)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_an_index_from_before_dates_still_works_and_gains_them(tmp_path, rasters, tiny_model):
    """Old tables have no acquired column: queries see nulls, a writer adds the column without re-embedding."""
    import lance

    from georet import TilingParams, index_raster
    from georet.search import open_index

    db = tmp_path / "old.db"
    index_raster([rasters["utm"]], db, tiling=TilingParams(tile_size=64), model=tiny_model, progress=False)
    lance.dataset(str(db / "tiles.lance")).drop_columns(["acquired"])
    index = open_index(db, model=tiny_model)
    assert index.search("houses", k=3)["acquired"].isna().all()
    assert index.search("houses", k=3, when="2016").empty
    assert open_index(db, model=tiny_model).search("farmland that became houses", k=3).empty
    from georet.index.export import export_geoparquet

    assert export_geoparquet(db, tmp_path / "old.parquet") == 16
    index_raster([rasters["utm"]], db, tiling=TilingParams(tile_size=64), model=tiny_model, progress=False,
                 acquired="2016-05-01")  # nothing to embed: the date is written to the rows
    dated = open_index(db, model=tiny_model).search("houses", k=3, when="2016")
    assert len(dated) == 3 and set(dated["acquired"]) == {"2016-05-01"}
