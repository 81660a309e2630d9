"""One filter rule in three forms: the table's SQL prefilter, the catalog's mask and the exact row test agree."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely

from georet.geo.dates import parse_when
from georet.index import TileStore
from georet.models import load_query_encoder
from georet.search import SearchRequest, open_index
from georet.search.filters import TileFilter
from georet.testing.tables import synthetic_rows

SCENES = ["airport", "river", "forest"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Two dates of a 12×12 grid, at day and at year precision, and one undated copy of part of it."""
    identity = load_query_encoder("georet-base", "bundled").identity
    path = tmp_path_factory.mktemp("filters") / "grid.db"
    spec = {"arch": "georet-base", "pretrained": "bundled", "checkpoint": None}
    with TileStore.open_for_writing(path, identity, spec) as store:
        for seed, (acquired, prefix) in enumerate((("2016-05-01", "a"), ("2021", "b"), (None, "c"))):
            store.table.add(synthetic_rows(144 if acquired else 40, identity["dim"], SCENES, seed=seed,
                                           grid_side=12, acquired=acquired, id_prefix=prefix))
    return path


def filters() -> list[TileFilter]:
    rng = np.random.default_rng(1)
    out = [TileFilter()]
    for _ in range(14):
        x, y = rng.uniform(4.0, 5.0, 2)
        w, h = rng.uniform(0.02, 0.6, 2)
        area = shapely.box(x, y + 47.0, x + w, y + h + 47.0) if rng.random() < 0.8 else None
        # a triangle: its bounds keep tiles its shape does not
        if area is not None and rng.random() < 0.5:
            area = shapely.Polygon([(x, y + 47.0), (x + w, y + 47.0), (x, y + h + 47.0)])
        scene = rng.choice([None, *SCENES])
        when = rng.choice([None, "2016", "2016-05", "2021-03", "2015/2017", "2020-12-31/2022"])
        out.append(TileFilter(area, scene, parse_when(when, "when") if when else None))
    return out


@pytest.mark.parametrize("where", filters(), ids=lambda f: f"area={f.area is not None}-{f.scene}-{f.when}")
def test_the_sql_prefilter_and_the_catalog_mask_keep_the_same_tiles_after_the_exact_test(db, where):
    index = open_index(db)
    catalog = index.catalog()
    rows = index.store.dataset.to_table(columns=["tile_id", "scene", "geometry", "acquired"]).to_pylist()
    exact = {row["tile_id"] for row in rows if where.keeps(row)}
    if where.where() is not None:
        table = index.store.dataset.to_table(columns=["tile_id", "scene", "geometry", "acquired"], filter=where.where())
        prefiltered = pa.Table.to_pylist(table)
    else:
        prefiltered = rows
    by_sql = {row["tile_id"] for row in prefiltered if where.keeps(row)}
    masked = set(np.asarray(catalog.tile_ids)[where.mask(catalog)])
    by_mask = {row["tile_id"] for row in rows if row["tile_id"] in masked and where.keeps(row)}
    assert by_sql == by_mask == exact  # neither prefilter drops a tile the exact test keeps


def test_the_catalog_mask_alone_keeps_tiles_the_rule_does_not(db):
    """Why the exact test exists: a triangle's bounds keep tiles outside the triangle."""
    index = open_index(db)
    catalog = index.catalog()
    triangle = TileFilter(shapely.Polygon([(4.1, 51.1), (4.9, 51.1), (4.1, 51.9)]))
    rows = index.store.dataset.to_table(columns=["tile_id", "scene", "geometry", "acquired"]).to_pylist()
    masked = set(np.asarray(catalog.tile_ids)[triangle.mask(catalog)])
    exact = {row["tile_id"] for row in rows if triangle.keeps(row)}
    assert exact < masked and len(masked - exact) > 10


def test_a_cold_and_a_warm_search_return_the_same_tiles_for_every_filter(db):
    for where in filters()[:12]:
        request = SearchRequest(text="a large airport next to the river", k=8, relational=False,
                                within=where.area, scene=where.scene,
                                when=None if where.when is None else f"{where.when.start}/{where.when.end}")
        cold = open_index(db).run(request)  # the table, its SQL prefilter and the exact test
        warm_index = open_index(db)
        warm_index.catalog()
        warm = warm_index.run(request)  # the catalog's mask and the exact test
        assert cold.tile_id.tolist() == warm.tile_id.tolist()
