"""Search by example: more like this / not this, the linear probe, thresholds, merged regions, saved labels."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from conftest import invoke_cli
from PIL import Image
from rasterio.windows import Window

from georet.errors import GeoretError
from georet.search import embed_queries, open_index
from georet.search.feedback import Examples, probe_weights, rocchio_query, score_tiles, touching_groups


@pytest.fixture(scope="module")
def index(built_index, tiny_model):
    return open_index(built_index, model=tiny_model)


def _vectors(index, tile_ids):
    catalog = index.catalog()
    return catalog.vectors[[catalog.index_of[t] for t in tile_ids]]


def test_more_like_this_ranks_by_cosine_and_never_returns_the_example(index):
    catalog = index.catalog()
    example = catalog.tile_ids[5]
    hits = index.similar(example, k=6)
    assert example not in set(hits.tile_id) and len(hits) == 6
    cosines = catalog.vectors @ catalog.vectors[5]
    cosines[5] = -np.inf
    expected = [catalog.tile_ids[i] for i in np.argsort(-cosines, kind="stable")[:6]]
    assert list(hits.tile_id) == expected
    assert np.allclose(hits.score, np.sort(cosines)[::-1][:6], atol=1e-5)
    assert hits.attrs["score_kind"].startswith("cosine similarity to the query (text and examples combined)")


def test_text_plus_examples_is_rocchio_and_examples_are_left_out(index, tiny_model):
    catalog = index.catalog()
    right, wrong = catalog.tile_ids[0], catalog.tile_ids[1]
    hits = index.search("forest", k=5, like=[right], unlike=[wrong])
    assert not {right, wrong} & set(hits.tile_id)
    query = rocchio_query(embed_queries(tiny_model, ["forest"])[0], Examples(_vectors(index, [right]),
                                                                          _vectors(index, [wrong])))
    assert np.allclose(hits.score, _vectors(index, hits.tile_id) @ query, atol=1e-5)
    assert list(hits.score) == sorted(hits.score, reverse=True)


def test_the_probe_takes_over_with_three_labels_of_each_kind(index, tiny_model):
    catalog = index.catalog()
    positives, negatives = catalog.tile_ids[:3], catalog.tile_ids[10:13]
    hits = index.search("river", k=4, like=positives, unlike=negatives)
    assert hits.attrs["score_kind"].startswith("probability from a linear probe")
    assert ((hits.score > 0) & (hits.score < 1)).all() and not set(positives + negatives) & set(hits.tile_id)
    text = embed_queries(tiny_model, ["river"])[0]
    examples = Examples(_vectors(index, positives), _vectors(index, negatives))
    loose, bias = probe_weights(text, examples, prior_strength=1e-4)
    fitted = 1 / (1 + np.exp(-(np.concatenate([examples.positives, examples.negatives]) @ loose + bias)))
    assert fitted[:3].min() > fitted[3:].max()  # with a weak pull it separates what it was shown
    tight, _ = probe_weights(text, examples, prior_strength=1e4)
    assert np.allclose(tight, 10.0 * rocchio_query(text, examples), atol=1e-2)  # a strong pull keeps the query
    scores, rank_key, kind = score_tiles(catalog.vectors, text, examples, "rocchio")
    assert kind == "rocchio" and np.allclose(scores, catalog.vectors @ rocchio_query(text, examples))
    probabilities, logits, kind = score_tiles(catalog.vectors, text, examples, "probe")
    assert kind == "probe" and np.allclose(probabilities, 1 / (1 + np.exp(-logits)))
    with pytest.raises(GeoretError, match="needs at least one right and one wrong example"):
        score_tiles(catalog.vectors, text, Examples(examples.positives, examples.negatives[:0]), "probe")


def test_image_chips_find_the_tile_they_were_cut_from(index, rasters, tmp_path):
    catalog = index.catalog()
    tile_id = next(t for t in catalog.tile_ids if t.startswith("utm_rgb"))
    row = index.fetch_rows([tile_id])[0]
    with rasterio.open(rasters["utm"]) as src:
        window = Window(row["col_off"], row["row_off"], row["width"], row["height"])
        pixels = src.read(window=window)
        profile = {**src.profile, "width": row["width"], "height": row["height"],
                   "transform": src.window_transform(window)}
    Image.fromarray(pixels.transpose(1, 2, 0)).save(tmp_path / "chip.png")
    with rasterio.open(tmp_path / "chip.tif", "w", **profile) as dst:
        dst.write(pixels)
    for example in (tmp_path / "chip.png", str(tmp_path / "chip.tif"), pixels.transpose(1, 2, 0)):
        hits = index.search(like=[example], k=1)
        assert hits.tile_id[0] == tile_id and hits.score[0] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(GeoretError, match="is neither a tile id of .* nor an image file"):
        index.search(like=["no-such-tile"])
    with pytest.raises(GeoretError, match="nothing to search for"):
        index.search(unlike=[tile_id])


def test_min_score_and_dissolve_into_regions(index):
    hits = index.search("water", k=12)
    cut = index.search("water", k=12, min_score=float(hits.score[5]))
    assert list(cut.tile_id) == list(hits.tile_id[:6]) and cut.attrs == hits.attrs
    regions = index.search("water", k=12, dissolve=True)
    assert regions["tiles"].sum() == 12 and list(regions.region) == list(range(1, len(regions) + 1))
    catalog = index.catalog()
    for region in regions.itertuples():
        members = hits[hits.tile_id.isin(region.tile_ids.split(","))]
        assert region.best_score == pytest.approx(members.score.max())
        assert region.mean_score == pytest.approx(members.score.mean())
        assert region.geometry.equals(shapely.union_all(members.geometry.values))
        if region.tiles > 1:  # every member touches another member of its region
            idx = np.array([catalog.index_of[t] for t in members.tile_id])
            for i in idx:
                gaps = catalog.geometry.gap(np.full(len(idx), i), idx)
                assert np.sort(gaps)[1] < 0.01 * catalog.geometry.tile_side_m
    assert len(regions) < 12  # the 64 px test tiles of one raster touch


def test_touching_groups_are_connected_components():
    labels = touching_groups(6, (np.array([0, 1, 4]), np.array([1, 2, 5])))
    assert labels.tolist() == [0, 0, 0, 3, 4, 4]


def test_labels_last_in_the_index_and_export_as_a_layer(built_index, index, tmp_path):
    ids = index.catalog().tile_ids
    saved = index.label("roads", positive=ids[:2], negative=[ids[2]], who="ana")
    assert (saved.positives, saved.negatives) == (ids[:2], [ids[2]])
    again = index.label("roads", negative=[ids[0]], who="ben")  # re-marking moves a tile
    assert (again.positives, again.negatives) == ([ids[1]], [ids[2], ids[0]])
    assert [(label.who, label.mark) for label in again.labels][-1] == ("ben", "negative")
    with pytest.raises(GeoretError, match="no tile 'nope'"):
        index.label("roads", positive=["nope"])

    hits = json.loads(invoke_cli("query", "--db", built_index, "--labels", "roads", "-k", "3", "--format", "json",
                                 check=True).stdout)
    assert hits["query"] == "(examples)" and not set(ids[:3]) & {r["tile_id"] for r in hits["results"]}
    assert invoke_cli("label", "--db", built_index, check=True).stdout.splitlines() == ["roads  1 right, 2 wrong"]
    invoke_cli("label", "--db", built_index, "--set", "more", "--positive", f"{ids[5]},{ids[6]}", "--positive", ids[7],
               check=True)
    assert index.label_sets()["more"].positives == ids[5:8]
    index.clear_labels("more")
    invoke_cli("label", "--db", built_index, "--export", "roads", tmp_path / "roads.gpkg", check=True)
    layer = gpd.read_file(tmp_path / "roads.gpkg")
    assert dict(zip(layer.tile_id, layer["mark"])) == {ids[1]: "positive", ids[2]: "negative", ids[0]: "negative"}
    assert set(layer.who) == {"ana", "ben"} and layer.crs.to_epsg() == 4326
    missing = invoke_cli("query", "--db", built_index, "--labels", "nope")
    assert missing.returncode == 1 and "no label set 'nope'" in missing.stderr and "saved sets: roads" in missing.stderr
    invoke_cli("label", "--db", built_index, "--clear", "--set", "roads", check=True)
    assert index.label_sets() == {}


def test_cli_examples_threshold_and_regions(built_index, index):
    ids = index.catalog().tile_ids
    collection = json.loads(invoke_cli("query", "river", "--db", built_index, "--like", ids[3], "--unlike", ids[4],
                                       "-k", "4", "--format", "geojson", check=True).stdout)
    assert collection["georet"]["score"].startswith("cosine similarity to the query")
    assert len(collection["features"]) == 4
    table = invoke_cli("query", "water", "--db", built_index, "-k", "12", "--dissolve", check=True).stdout
    assert table.splitlines()[0].split()[:4] == ["region", "best", "mean", "tiles"]
    empty = invoke_cli("query", "water", "--db", built_index, "--min-score", "2", check=True).stdout
    assert empty.strip() == "no matching tiles"
    none = invoke_cli("query", "--db", built_index)
    assert none.returncode == 1 and "TEXT: nothing to search for: give a query text or examples of what you want" in none.stderr
