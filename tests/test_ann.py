"""The approximate vector index: built by `georet optimize` (and by `georet index` past a row count),
used by searches, refused on indexes too small to train it."""

from __future__ import annotations

import numpy as np
from conftest import invoke_cli

from georet.index import TileStore
from georet.search import GeoIndex, embed_queries
from georet.testing.tables import synthetic_rows


def clustered_unit_vectors(n: int, dim: int, clusters: int = 60, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` centres, as real tile embeddings are (scenes repeat): uniform
    random vectors have no neighbourhoods, so every approximate index scores badly on them and the
    recall measured on them swings with the k-means seed."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_optimize_builds_the_index_that_searches_then_use(tmp_path, tiny_model, built_index):
    db = tmp_path / "big.db"
    with TileStore.open_for_writing(db, tiny_model.identity, dict(tiny_model.spec.__dict__)) as store:
        store.table.add(synthetic_rows(6000, tiny_model.dim, ["airport", "river"],
                                       vectors=clustered_unit_vectors(6000, tiny_model.dim)))
    too_small = invoke_cli("optimize", "--db", built_index)
    assert too_small.returncode == 1 and "has 26 tiles; an approximate index needs at least 5,000" in too_small.stderr
    done = invoke_cli("optimize", "--db", db, check=True)
    assert done.stdout.strip() == "6,000 tiles; IVF_HNSW_SQ vector index over 6,000 of them"

    index = GeoIndex(TileStore.open(db), model=tiny_model)
    assert index._nearest.has_vector_index()
    catalog = index.catalog()
    recalls = []
    for text in ("many planes parked at an airport", "a river winding through fields", "dense green forest trees",
                 "a sandy beach with waves", "boats moored in a harbour", "green farmland in neat plots",
                 "a bridge over the water", "a stadium with a running track"):  # sentences: no pseudo-feedback
        hits = index.search(text, k=10, relational=False)
        query = embed_queries(tiny_model, [text])[0]
        exact = {catalog.tile_ids[i] for i in np.argsort(-(catalog.vectors @ query))[:10]}
        recalls.append(len(exact & set(hits.tile_id)) / 10)
        cosines = catalog.vectors[[catalog.index_of[t] for t in hits.tile_id]] @ query
        assert np.allclose(hits.score, cosines, atol=1e-4)  # refined: the scores are exact cosines
    print(f"recall@10 on clustered vectors: {np.mean(recalls):.2f}")
    assert np.mean(recalls) >= 0.9


def test_relational_candidates_from_the_vector_index_rank_as_scoring_every_tile(tmp_path, tiny_model, monkeypatch):
    """Past RELATIONAL_POOL_ROWS (lowered here) subjects come from the index's nearest tiles and z-scores are
    computed only where needed; on 6,000 tiles the pool holds a third of them, so the ranking is the exact one."""
    import georet.search.geoindex as geoindex

    db = tmp_path / "big.db"
    with TileStore.open_for_writing(db, tiny_model.identity, dict(tiny_model.spec.__dict__)) as store:
        store.table.add(synthetic_rows(6000, tiny_model.dim, ["airport", "river"],
                                       vectors=clustered_unit_vectors(6000, tiny_model.dim)))
        assert store.vector_index() is None and not store.has_vector_index()  # read before the build: what
        assert store.build_vector_index()["indexed_rows"] == 6000               # the build reports is newer
        assert store.has_vector_index()
    index = GeoIndex(TileStore.open(db), model=tiny_model)
    queries = ("airport near river", "river north of forest", "bridge not near farmland")
    exact = [index.search(q, k=10, near="2km") for q in queries]
    monkeypatch.setattr(geoindex, "RELATIONAL_POOL_ROWS", 5_000)
    pool = index._subject_pool(index.catalog(), tiny_model.encode_text(["airport"])[0], np.ones(6000, bool), 10)
    assert len(pool) == geoindex.RELATIONAL_POOL  # the candidate stage is on
    pooled = [index.search(q, k=10, near="2km") for q in queries]
    for q, a, b in zip(queries, exact, pooled):
        assert len(a) == 10 and list(a.tile_id) == list(b.tile_id), q
        assert np.allclose(a.score, b.score, atol=1e-5) and list(a.partners) == list(b.partners), q


def test_a_search_inside_an_area_finds_every_tile_there_through_the_vector_index(tmp_path, tiny_model):
    """The vector index probes a few of its partitions; with the area as a prefilter, the tiles inside that
    lie in partitions it did not probe would be missing (29 of 753 in a North Dakota box of a million-tile
    index): a short answer from the index is confirmed by an exact search over the area's tiles."""
    db = tmp_path / "big.db"
    rows = synthetic_rows(6000, tiny_model.dim, ["airport", "river"], vectors=clustered_unit_vectors(6000, tiny_model.dim))
    with TileStore.open_for_writing(db, tiny_model.identity, dict(tiny_model.spec.__dict__)) as store:
        store.table.add(rows)
        store.build_vector_index()
    box = (4.0, 51.0, 4.12, 51.12)
    inside = {t for t, x0, y0, x1, y1 in zip(*(rows[c].to_pylist() for c in ("tile_id", "minx", "miny", "maxx", "maxy")))
              if x0 <= box[2] and x1 >= box[0] and y0 <= box[3] and y1 >= box[1]}
    assert 60 < len(inside) < 200
    index = GeoIndex(TileStore.open(db), model=tiny_model)
    hits = index.search("many planes parked at an airport", k=1000, bbox=box, relational=False)
    assert set(hits.tile_id) == inside
    few = index.search("many planes parked at an airport", k=5, bbox=box, relational=False)
    assert list(few.tile_id) == list(hits.tile_id[:5])  # the nearest of them, in order
    assert index.search("many planes parked at an airport", k=10, bbox=box, when="2020", relational=False).empty
