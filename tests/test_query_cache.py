"""Query vectors are kept per model and text: repeated queries skip the text tower and answer exactly as before."""

from __future__ import annotations

import numpy as np
import pytest

import georet.search.geoindex as geoindex_module
import georet.search.query_text as query_text_module
from georet.geo import read_classes
from georet.index import TileStore
from georet.models import load_query_encoder
from georet.search import SearchRequest, open_index
from georet.search.query_cache import QueryVectorCache, normalised
from georet.testing.tables import synthetic_rows

QUERIES = [SearchRequest(text="cropland", k=5),  # short: eight wordings, anchoring, pseudo-feedback
           SearchRequest(text="many planes are parked in the airport", k=5),  # a caption: as written
           SearchRequest(text="airport near river", k=5),  # relational: three phrases
           SearchRequest(text="a  river ", k=5, like=("tile-0000007",), unlike=("tile-0000100",))]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A 40×40 grid of tiles with random vectors, made for georet-base (whose query side needs no torch)."""
    identity = load_query_encoder("georet-base", "bundled").identity
    path = tmp_path_factory.mktemp("qc") / "grid.db"
    scenes = [c.label for c in read_classes()]
    with TileStore.open_for_writing(path, identity, {"arch": "georet-base", "pretrained": "bundled",
                                                     "checkpoint": None}) as store:
        store.table.add(synthetic_rows(1600, identity["dim"], scenes, grid_side=40))
    return path


@pytest.fixture
def encodings(monkeypatch):
    """How many texts went through the text tower."""
    seen: list[str] = []
    real = query_text_module.embed_queries

    def counting(model, texts, vocabulary=None):
        seen.extend(texts)
        return real(model, texts, vocabulary)

    monkeypatch.setattr(query_text_module, "embed_queries", counting)
    return seen


def test_a_repeated_query_is_answered_from_the_cache_exactly_as_without_it(db, encodings):
    index = open_index(db)
    first = [index.run(request) for request in QUERIES]
    assert len(encodings) == 1 + 1 + 3 + 1
    encodings.clear()
    again = [index.run(request) for request in QUERIES]
    assert encodings == []
    fresh = open_index(db, query_cache=QueryVectorCache())  # nothing cached: every vector encoded again
    uncached = [fresh.run(request) for request in QUERIES]
    assert len(encodings) == 6
    for a, b, c in zip(first, again, uncached):
        assert len(a) == 5 and a.tile_id.tolist() == b.tile_id.tolist() == c.tile_id.tolist()
        # a first query reads Lance's distances, later ones the catalog in memory: they round apart
        np.testing.assert_allclose(a.score, b.score, atol=1e-6)
        np.testing.assert_allclose(a.score, c.score, atol=1e-6)
    assert first[0].attrs["score_kind"] == again[0].attrs["score_kind"]  # feedback still runs on a cached vector
    # whitespace is all that is normalised: another word is another query
    encodings.clear()
    index.run(SearchRequest(text=" cropland  ", k=5))
    index.run(SearchRequest(text="Cropland", k=5))
    assert encodings == ["Cropland"]


def test_the_cli_s_cache_on_disk_serves_a_cold_query_without_loading_the_text_tower(db, tmp_path, monkeypatch,
                                                                                   encodings):
    folder = tmp_path / "queries"
    cache = QueryVectorCache(folder=folder)
    expected = open_index(db, query_cache=cache).run(QUERIES[0])
    cache.save()
    assert [p.suffix for p in folder.iterdir()] == [".npz"]  # one file per model, written whole

    def no_tower(*args, **kwargs):
        raise AssertionError("the text tower was loaded")

    monkeypatch.setattr(query_text_module, "load_query_encoder", no_tower)
    encodings.clear()
    cold = open_index(db, query_cache=QueryVectorCache(folder=folder)).run(QUERIES[0])
    assert encodings == []
    assert cold.tile_id.tolist() == expected.tile_id.tolist()
    np.testing.assert_array_equal(cold.score, expected.score)


def test_the_cache_is_bounded_least_recently_used_first_and_survives_a_broken_file(tmp_path):
    cache = QueryVectorCache(capacity=2, folder=tmp_path)
    for n, text in enumerate(["a", "b", "c"]):
        cache.put("model", text, np.full(3, n, np.float32))
    assert cache.get("model", "a") is None and cache.get("model", "b") is not None
    cache.put("model", "d", np.zeros(3, np.float32))  # "b" was read since "c": "c" goes
    assert cache.get("model", "c") is None and cache.get("model", "b") is not None
    assert cache.get("other model", "b") is None
    cache.save()
    reread = QueryVectorCache(capacity=2, folder=tmp_path)
    np.testing.assert_array_equal(reread.get("model", "b"), np.full(3, 1, np.float32))
    assert reread.get("model", "c") is None
    (tmp_path / "model.npz").write_bytes(b"not numpy")
    assert QueryVectorCache(folder=tmp_path).get("model", "b") is None  # an unreadable file is not trusted
    assert normalised("  a \t marina\n") == "a marina"
    with pytest.raises(ValueError, match="at least one"):
        QueryVectorCache(capacity=0)


def test_a_repeated_search_is_answered_from_the_result_cache_until_the_table_changes(tmp_path, monkeypatch):
    identity = load_query_encoder("georet-base", "bundled").identity
    path = tmp_path / "small.db"
    spec = {"arch": "georet-base", "pretrained": "bundled", "checkpoint": None}
    scenes = [c.label for c in read_classes()]
    with TileStore.open_for_writing(path, identity, spec) as store:
        store.table.add(synthetic_rows(100, identity["dim"], scenes, grid_side=10))
    index = open_index(path)
    searches = []
    real = geoindex_module.GeoIndex._text_search
    monkeypatch.setattr(geoindex_module.GeoIndex, "_text_search",
                        lambda self, request, *rest: searches.append(request.text) or real(self, request, *rest))
    request = SearchRequest(text="harbour", k=3, bbox="4.0,51.0,4.5,51.5")
    first = index.run(request)
    first.loc[0, "score"] = -9.0  # what a caller does with its frame stays its own
    again = index.run(SearchRequest(text="harbour", k=3, bbox="4.0,51.0,4.5,51.5"))
    assert searches == ["harbour"] and again.score[0] != -9.0 and again.attrs == first.attrs
    index.run(SearchRequest(text="harbour", k=4, bbox="4.0,51.0,4.5,51.5"))  # another k: another search
    assert searches == ["harbour", "harbour"]
    # a tile added by another writer is a new table version: the search runs again and finds it
    query = index.queries.embed(["harbour"])[0]
    with TileStore.open_for_writing(path, identity, spec) as store:
        store.table.add(synthetic_rows(1, identity["dim"], scenes, vectors=query[None], grid_side=10,
                                       id_prefix="new"))
    assert index.run(request).tile_id[0] == "new-0000000" and len(searches) == 3
