"""The in-memory catalog follows the table version by version, reading only the fragments a commit changed."""

from __future__ import annotations

import numpy as np

import georet.search.catalog as catalog_module
from georet.index import TileStore
from georet.search import GeoIndex
from georet.search.catalog import TileCatalog, TileGeometry
from georet.testing.tables import synthetic_rows

SCENES = ["airport", "river", "forest"]


def assert_same_catalog(got: TileCatalog, want: TileCatalog) -> None:
    assert got.version == want.version
    assert got.tile_ids == want.tile_ids
    assert np.array_equal(got.vectors, want.vectors)
    assert np.array_equal(got.bounds, want.bounds)
    assert list(got.scenes) == list(want.scenes)
    assert got.attributes.to_pylist() == want.attributes.to_pylist()
    assert got.scene_classes == want.scene_classes and np.array_equal(got.scene_codes, want.scene_codes)
    assert np.allclose(got.geometry.y, want.geometry.y) and np.allclose(got.geometry.half_h, want.geometry.half_h)
    assert [(f.start, f.stop) for f in got.fragments] == [(f.start, f.stop) for f in want.fragments]


def assert_same_pairs(catalog: TileCatalog) -> None:
    """The catalog's spatial index (extended version by version) finds the pairs one built afresh finds."""
    everything = np.arange(len(catalog))
    fresh = TileGeometry(*catalog.bounds.T)
    for distance in (0.0, 500.0):
        assert sorted(zip(*catalog.geometry.pairs_within(everything, distance))) == \
            sorted(zip(*fresh.pairs_within(everything, distance)))


def test_a_new_version_reads_only_the_fragments_it_added_or_changed(tmp_path, tiny_model, monkeypatch):
    db = tmp_path / "growing.db"
    spec = dict(tiny_model.spec.__dict__)
    with TileStore.open_for_writing(db, tiny_model.identity, spec) as store:
        store.table.add(synthetic_rows(300, tiny_model.dim, SCENES, seed=1, acquired="2020-06-01"))
        store.table.add(synthetic_rows(200, tiny_model.dim, SCENES, seed=2, first_id=300, acquired="2021-06-01"))
    index = GeoIndex(TileStore.open(db), model=tiny_model)
    first = index.catalog()
    first.geometry  # built, as by a relational search: later versions extend it
    assert len(first) == 500 and [(f.start, f.stop) for f in first.fragments] == [(0, 300), (300, 500)]

    read: list[int] = []  # rows of each read the catalog made from the table from now on
    real_read = catalog_module._read_rows
    monkeypatch.setattr(catalog_module, "_read_rows", lambda *args: read.append(len(rows := real_read(*args)))
                        or rows)

    with TileStore.open_for_writing(db, tiny_model.identity, spec) as writer:  # another writer adds a raster
        writer.table.add(synthetic_rows(50, tiny_model.dim, SCENES, seed=3, first_id=500, id_prefix="new"))
    index.store.refresh()
    grown = index.catalog()
    assert read == [50]
    assert grown.tile_ids[:500] == first.tile_ids and grown.tile_ids[500:] == [f"new-{i:07d}" for i in range(500, 550)]
    monkeypatch.setattr(catalog_module, "_read_rows", real_read)
    assert_same_catalog(grown, TileCatalog.read(index.store))
    assert len(grown.geometry.trees) == 2
    assert_same_pairs(grown)
    monkeypatch.setattr(catalog_module, "_read_rows", lambda *args: read.append(len(rows := real_read(*args)))
                        or rows)
    grown_vectors = grown.vectors.copy()

    with TileStore.open_for_writing(db, tiny_model.identity, spec) as writer:  # and one more
        writer.table.add(synthetic_rows(30, tiny_model.dim, SCENES, seed=4, first_id=550, id_prefix="new"))
    index.store.refresh()
    regrown = index.catalog()
    assert read == [50, 30] and len(regrown) == 580
    assert np.shares_memory(regrown.vectors, grown.vectors)  # appended in place, not copied
    assert regrown.index_of == {t: i for i, t in enumerate(regrown.tile_ids)}
    with TileStore.open_for_writing(db, tiny_model.identity, spec) as writer:  # the last one removed again
        writer.table.delete("tile_id BETWEEN 'new-0000550' AND 'new-0000599'")
    index.store.refresh()
    grown_again = index.catalog()
    assert read == [50, 30] and np.shares_memory(grown_again.vectors, grown.vectors)  # a view: nothing read
    assert grown_again.tile_ids == grown.tile_ids and np.array_equal(grown_again.vectors, grown_vectors)

    def add_then_remove(first_id: int, n: int) -> tuple[TileCatalog, TileCatalog, np.ndarray]:
        """A raster of ``n`` tiles added, then removed: the catalogs after each, and its vectors."""
        rows = synthetic_rows(n, tiny_model.dim, SCENES, seed=first_id, first_id=first_id, id_prefix="new")
        with TileStore.open_for_writing(db, tiny_model.identity, spec) as writer:
            writer.table.add(rows)
        index.store.refresh()
        added = index.catalog()
        with TileStore.open_for_writing(db, tiny_model.identity, spec) as writer:
            writer.table.delete(f"tile_id BETWEEN 'new-{first_id:07d}' AND 'new-{first_id + n - 1:07d}'")
        index.store.refresh()
        return added, index.catalog(), rows["vector"].combine_chunks().flatten().to_numpy().reshape(n, -1)

    regrown_vectors = regrown.vectors.copy()
    added, truncated, vectors = add_then_remove(600, 20)
    # the 580-tile catalog still lives, so the rows it holds past 550 are not written over: a copy
    assert not np.shares_memory(added.vectors, regrown.vectors)
    assert np.array_equal(regrown.vectors, regrown_vectors) and np.array_equal(added.vectors[550:], vectors)
    assert np.shares_memory(truncated.vectors, added.vectors) and len(truncated) == 550
    del regrown, added
    again, _, vectors = add_then_remove(700, 10)  # now no catalog holds the rows past 550: written in place
    assert np.shares_memory(again.vectors, truncated.vectors)
    assert np.array_equal(again.vectors[550:], vectors) and np.array_equal(again.vectors[:550], grown_vectors)
    assert_same_pairs(again)  # its trees: the first 500 rows, the 50 added, the 10 (20 dropped, 30 dropped)
    assert read == [50, 30, 20, 10]

    with TileStore.open_for_writing(db, tiny_model.identity, spec) as writer:  # part of one fragment, all of another
        writer.table.delete("tile_id BETWEEN 'tile-0000000' AND 'tile-0000099' OR tile_id >= 'tile-0000300'")
    index.store.refresh()
    shrunk = index.catalog()
    assert read == [50, 30, 20, 10, 200]  # the first fragment's 200 rows left; the new one's 50 kept from memory
    assert np.array_equal(grown.vectors, grown_vectors)  # what older catalogs hold is never overwritten
    assert shrunk.tile_ids == first.tile_ids[100:300] + grown.tile_ids[500:]
    monkeypatch.setattr(catalog_module, "_read_rows", real_read)
    assert_same_catalog(shrunk, TileCatalog.read(index.store))

    # catalog positions are the table's row positions: the footprints read by position belong to the same tiles
    positions = [0, 150, 199, 200, 249]
    rows = shrunk.rows(positions)
    assert [rows[p]["tile_id"] for p in positions] == [shrunk.tile_ids[p] for p in positions]
    assert shrunk.of_sources(frozenset({"synthetic.tif"})).all()
    assert set(shrunk.date_codes[0]) >= {"2020-06-01"} and (shrunk.date_codes[1][200:] == -1).all()


def test_an_unchanged_table_keeps_its_catalog(tmp_path, tiny_model):
    db = tmp_path / "still.db"
    with TileStore.open_for_writing(db, tiny_model.identity, dict(tiny_model.spec.__dict__)) as store:
        store.table.add(synthetic_rows(40, tiny_model.dim, SCENES))
    index = GeoIndex(TileStore.open(db), model=tiny_model)
    first = index.catalog()
    index.store.refresh()
    assert index.catalog() is first
    assert "geometry" not in first.__dict__  # the spatial index waits for a search that needs it
    built = first.geometry
    again = TileCatalog.read(index.store, first)  # the same version read again shares every array
    assert again.vectors is first.vectors and again.geometry is built
