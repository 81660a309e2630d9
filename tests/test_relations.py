"""Relational queries: parsing, scoring on generated layouts, API and CLI output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from georet.errors import GeoretError
from georet.search.catalog import TileCatalog, TileGeometry
from georet.search.relations import (
    Relation,
    ScenePrior,
    parse_distance,
    parse_query,
    rank_relational,
    score_relation,
)


# -- parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, subject, partner, distance", [
    ("airport near river", "near", "airport", "river", None),
    ("an airport next to a river", "near", "an airport", "a river", None),
    ("Bridge  BESIDE  the river", "near", "Bridge", "the river", None),
    ("port adjacent to farmland", "near", "port", "farmland", None),
    ("school within 2 km of a stadium", "within", "school", "a stadium", 2000.0),
    ("tanks within 750m of port", "within", "tanks", "port", 750.0),
    ("airport not near river", "not_near", "airport", "river", None),
    ("houses far from the sea", "not_near", "houses", "the sea", None),
    ("forest north of lake", "north_of", "forest", "lake", None),
    ("beach west of dunes", "west_of", "beach", "dunes", None),
    ("church and square", "and", "church", "square", None),
])
def test_parse_relations(text, kind, subject, partner, distance):
    relation = parse_query(text)
    assert (relation.kind, relation.subject, relation.partner, relation.distance_m) == (kind, subject, partner, distance)
    assert relation.text == " ".join(text.split())


@pytest.mark.parametrize("text", ["airport", "dense residential area", "near", "river with a bridge",
                                  "nearby houses", "standing water"])
def test_plain_queries_stay_plain(text):
    assert parse_query(text) is None


def test_parse_distance():
    assert parse_distance("500m") == 500 and parse_distance("1.5 km") == 1500
    for bad in ("5 miles", "-3m", "0m", "far"):
        with pytest.raises(GeoretError, match="distance"):
            parse_distance(bad)


# -- scoring on a generated layout ----------------------------------------------------------
def grid_bounds(rows: int, cols: int, side_deg: float = 0.001) -> np.ndarray:
    """(rows × cols, 4) bounds of touching tiles near the equator, row 0 at the north."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    minx, maxy = c * side_deg, -r * side_deg
    return np.column_stack([minx, maxy - side_deg, minx + side_deg, maxy])


def grid_geometry(rows: int, cols: int, side_deg: float = 0.001) -> TileGeometry:
    """rows × cols touching tiles near the equator, row 0 at the north."""
    return TileGeometry(*grid_bounds(rows, cols, side_deg).T)


def test_tile_geometry_distances():
    geometry = grid_geometry(1, 4)  # 0.001° ≈ 111 m at the equator
    assert geometry.tile_side_m == pytest.approx(111.2, rel=0.01)
    gaps = geometry.gap(np.zeros(4, int), np.arange(4))
    assert gaps[:2] == pytest.approx([0, 0], abs=1e-6)  # itself, and a touching neighbour
    assert gaps[2] == pytest.approx(111.2, rel=0.01) and gaps[3] == pytest.approx(222.4, rel=0.01)


def layout():
    """5×5 grid: airport A1 at (0,0) touches river R at (0,1); airport A2 at (4,4) is far from it."""
    geometry = grid_geometry(5, 5)
    z_airport, z_river, z_whole = np.zeros(25), np.zeros(25), np.zeros(25)
    a1, river, a2 = 0, 1, 24
    z_airport[[a1, a2]] = 3.0
    z_airport[a2] = 3.2  # the far airport looks slightly more like an airport
    z_river[river] = 3.0
    return geometry, z_airport, z_river, z_whole, a1, river, a2


def test_near_prefers_the_airport_beside_the_river():
    geometry, z_a, z_b, z_w, a1, river, a2 = layout()
    kept, scores, best, partners = score_relation(Relation("near", "airport", "river", ""), z_a, z_b, z_w,
                                                  geometry, np.array([a2, a1]), geometry.tile_side_m)
    ranked = kept[np.argsort(-scores)]
    assert ranked[0] == a1 and partners[list(kept).index(a1)][0] == river
    assert best[list(kept).index(a1)] == 3.0


def test_not_near_prefers_the_far_airport():
    geometry, z_a, z_b, z_w, a1, river, a2 = layout()
    z_a[a1] = 3.5  # even when the airport by the river looks more like an airport
    kept, scores, _, partners = score_relation(Relation("not_near", "airport", "river", ""), z_a, z_b, z_w,
                                               geometry, np.array([a1, a2]), geometry.tile_side_m)
    assert kept[np.argmax(scores)] == a2
    assert partners[list(kept).index(a1)][0] == river  # the reason for the penalty is reported


def test_within_distance_limits_partners():
    geometry, z_a, z_b, z_w, a1, river, a2 = layout()  # the river lies ~400 m from A2
    short = score_relation(Relation("within", "a", "r", "", 300.0), z_a, z_b, z_w, geometry, np.array([a2]), 0)
    assert river not in short[3][0] and short[2][0] == 0.0
    wide = score_relation(Relation("within", "a", "r", "", 500.0), z_a, z_b, z_w, geometry, np.array([a2]), 0)
    assert wide[3][0][0] == river and wide[2][0] == 3.0


def test_directions():
    geometry, z_a, z_b, z_w, a1, river, a2 = layout()
    candidates, touching = np.array([a1]), 1.0

    def partners(kind):
        return score_relation(Relation(kind, "a", "r", ""), z_a, z_b, z_w, geometry, candidates, touching)[3]

    assert partners("west_of")[0][0] == river  # A1 (0,0) lies west of the river (0,1)
    assert partners("north_of")[0].tolist() == [5]  # ... and north of (1,0)
    assert partners("east_of") == [] and partners("south_of") == []  # nothing west or north of the corner


def test_and_accepts_the_tile_itself():
    geometry = grid_geometry(3, 3)
    z_a, z_b, z_w = np.zeros(9), np.zeros(9), np.zeros(9)
    z_a[4], z_b[4] = 2.0, 2.0  # one tile with both
    kept, scores, _, partners = score_relation(Relation("and", "a", "b", ""), z_a, z_b, z_w, geometry,
                                               np.array([4]), 1.0)
    assert partners[0][0] == 4 and scores[0] == 2.0


# -- the query-time scene prior -------------------------------------------------------------
def test_scene_prior_boost_is_relative_to_the_best_class():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])  # two phrases over classes airport, farmland, river
    boost = ScenePrior.of(probs, np.array([1, -1, 0, -1])).table()  # tiles: farmland, unlabelled, airport, unlabelled
    assert boost == pytest.approx(np.array([[0.2 / 0.7, 0, 1, 0], [0.125, 0, 0.125, 0]]))


def test_scene_prior_changes_the_ranking():
    """Two airport-like tiles, each beside a river-like tile; only the prior knows which one is an airport.

    Unit vectors in 3-d: axis 0 "airport", axis 1 "river". Tile 0 (scene farmland) looks a bit more like
    the airport phrase than tile 3 (scene airport); their partners 1 and 4 are equally river-like.
    """
    vectors = np.array([[0.95, 0, 0.31], [0, 1, 0], [0, 0, 1], [0.9, 0, 0.44], [0, 1, 0], [0, 0, 1]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scenes = np.array(["farmland", "river", "farmland", "airport", "river", "farmland"], dtype=object)
    catalog = TileCatalog(1, [f"t{i}" for i in range(6)], vectors, grid_bounds(2, 3), scenes)  # tiles 0 1 2 / 3 4 5
    phrases = np.array([[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0]], np.float32)
    relation = Relation("near", "airport", "river", "airport near river")

    without = rank_relational(relation, catalog, phrases, k=2, near_m=1.0, eligible=np.array([1, 0, 0, 1, 0, 0], bool))
    assert without.tiles.tolist() == [0, 3]
    # the phrase "airport" is surely about airports, "river" about rivers
    probs = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]])
    assert [c.label for c in catalog.scene_classes] == ["airport", "farmland", "river"]
    assert catalog.scene_codes.tolist() == [1, 2, 1, 0, 2, 1]
    prior = ScenePrior.of(probs, catalog.scene_codes)
    np.testing.assert_array_equal(prior.at(1, np.array([5, 2])), prior.table()[1, [5, 2]])
    with_prior = rank_relational(relation, catalog, phrases, k=2, near_m=1.0,
                                 eligible=np.array([1, 0, 0, 1, 0, 0], bool), prior=prior)
    assert with_prior.tiles.tolist() == [3, 0]
    assert with_prior.subject_z[0] - without.subject_z[1] == pytest.approx(1.0)  # tile 3 gained the full boost
    assert with_prior.partners[0].tolist()[0] == 4 and with_prior.partner_gap_m[0] == pytest.approx(0.0, abs=1e-6)


def test_scene_prior_is_on_by_default_in_relational_search(built_index, tiny_model):
    import georet

    index = georet.open_index(built_index, model=tiny_model)
    default = index.search("water near houses", k=5)
    off = index.search("water near houses", k=5, scene_prior=0)
    doubled = index.search("water near houses", k=5, scene_prior=2)
    assert (default.attrs["scene_prior"], off.attrs["scene_prior"]) == (1.0, 0)
    # z_subject with prior β = z_subject without + β·boost: the gain doubles with β for the same tile
    gain = {t: s for t, s in zip(default.tile_id, default.subject_score)}
    base = dict(zip(off.tile_id, off.subject_score))
    twice = dict(zip(doubled.tile_id, doubled.subject_score))
    common = set(gain) & set(base) & set(twice)
    assert common
    assert any(abs(gain[t] - base[t]) > 1e-3 for t in common)
    for t in common:
        assert twice[t] - base[t] == pytest.approx(2 * (gain[t] - base[t]), abs=2e-4)


def test_relational_search_on_an_empty_index(tmp_path, tiny_model):
    import georet
    from georet.index import TileStore

    with TileStore.open_for_writing(tmp_path / "empty", tiny_model.identity, {"arch": "georet-tiny", "pretrained": None}):
        pass
    hits = georet.open_index(tmp_path / "empty", model=tiny_model).search("airport near river", k=3)
    assert hits.empty and "partners" in hits.columns


# -- through the API and the CLI ------------------------------------------------------------
def test_relational_search_reports_partners(built_index, tiny_model):
    import georet

    index = georet.open_index(built_index, model=tiny_model)
    hits = index.search("red roofs near green fields", k=5, near="200m")
    assert 0 < len(hits) <= 5 and list(hits["rank"]) == list(range(1, len(hits) + 1))
    assert (np.diff(hits["score"]) <= 1e-9).all()
    assert set(hits["relation"]) == {"near"}
    catalog = index.catalog()
    for hit in hits.itertuples():
        partner = hit.partners.split(",")[0]
        assert partner != hit.tile_id and hit.partner_distance_m <= 200
        i, j = catalog.tile_ids.index(hit.tile_id), catalog.tile_ids.index(partner)
        assert catalog.geometry.gap(np.array([i]), np.array([j]))[0] == pytest.approx(hit.partner_distance_m, abs=0.1)
        assert hit.partner_wkt.startswith("POLYGON")
    plain = index.search("red roofs near green fields", k=5, relational=False)
    assert "partners" not in plain.columns


def test_relational_search_respects_scene_and_area(built_index, tiny_model):
    import georet

    index = georet.open_index(built_index, model=tiny_model)
    scene = index.info()["scenes"][0]
    hits = index.search("water near houses", k=50, scene=scene)
    assert set(hits["scene"]) == {scene}
    with pytest.raises(GeoretError, match="unknown scene"):
        index.search("water near houses", scene="no-such-scene")
    every = index.search("water near houses", k=500, near="10km")
    box = every.geometry.iloc[0].bounds
    inside = index.search("water near houses", k=500, near="10km", bbox=box)
    assert 0 < len(inside) < len(every)


@pytest.mark.slow
def test_cli_explain_and_geojson(built_index):
    proc = run_cli("query", "water not near houses", "--db", built_index, "-k", "3", "--explain", "--device", "cpu", check=True)
    assert "parsed: subject 'water' · relation not near · partner 'houses'" in proc.stdout
    assert "#1 " in proc.stdout and "z_subject=" in proc.stdout
    proc = run_cli("query", "water near houses", "--db", built_index, "-k", "3", "--format", "geojson",
                   "--near", "1km", "--explain", check=True)
    features = json.loads(proc.stdout)["features"]  # the explanation goes to stderr, GeoJSON stays valid
    assert {"partners", "partner_distance_m", "partner_wkt", "relation"} <= set(features[0]["properties"])
    assert "parsed:" in proc.stderr
    bad = run_cli("query", "water near houses", "--db", built_index, "--near", "close")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("Error: --near: not a distance")
