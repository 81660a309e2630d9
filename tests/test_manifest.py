"""The manifest's source entries, typed: what indexing writes reads back whole, and an entry this georet does not
know is refused in one line instead of half-read."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import invoke_cli

from georet.errors import GeoretError
from georet.index import Grid, SourceEntry, TileStore


def test_every_entry_indexing_writes_reads_back_whole(built_index):
    raw = json.loads((built_index / "georet.json").read_text())["sources"]
    entries = TileStore.open(built_index).entries()
    assert list(entries) == list(raw) and len(entries) == 3
    for name, entry in entries.items():
        assert entry.to_dict() == raw[name]  # nothing lost or added on the way through the types
        assert entry.complete and entry.grid.tile_px == 64 and entry.grids == (entry.grid,)
        assert entry.classes and not entry.labelled_by_landcover and entry.example_classes == ()


def test_entries_are_parsed_once_per_manifest_version(tmp_path, built_index):
    """A search reads them on every request: kept until the manifest changes here or in another process."""
    db = tmp_path / "copy.db"
    shutil.copytree(built_index, db)
    store = TileStore.open(db)
    first = store.entries()
    assert store.entries() is first
    name = next(iter(first))
    store.mark_incomplete(name, "a test said so")  # changed here, not saved yet
    assert not store.entries()[name].complete and first[name].complete
    manifest = json.loads((db / "georet.json").read_text())
    manifest["sources"][name]["acquired"] = "2020-01-01"  # another process rewrites the manifest
    (db / "georet.json").write_text(json.dumps(manifest))
    store.refresh()
    assert store.entries()[name].acquired == "2020-01-01" and store.entries()[name].complete


def test_grids_of_several_scales_and_overlap():
    small = Grid(crs="EPSG:32631", width=512, height=512, bands=(1, 2, 3), tile_px=64, stride_px=32, tile_m=640.0)
    large = Grid(crs="EPSG:32631", width=512, height=512, bands=(1, 2, 3), tile_px=128, stride_px=128, tile_m=1280.0)
    entry = SourceEntry(grid=small, scales=(small, large), state="incomplete", reason="stopped")
    again = SourceEntry.from_dict(entry.to_dict())
    assert again == entry and again.grids == (small, large) and small.overlapping and not large.overlapping
    assert not again.complete
    old = {k: v for k, v in entry.to_dict().items() if k not in ("state", "reason")}
    assert SourceEntry.from_dict(old).complete  # format-1 manifests written before states held only whole rasters


def test_an_entry_from_an_early_georet_still_reads():
    """Entries written before states, dates and ground sizes existed, with the tile count they once held."""
    early = {"crs": "EPSG:32631", "width": 512, "height": 512, "bands": [1, 2, 3], "tile_px": 64, "stride_px": 64,
             "tiling": {"tile_size": 64}, "scenes": "zero-shot", "classes": ["forest"], "tiles": 64}
    entry = SourceEntry.from_dict(early)
    assert entry.complete and entry.grid.tile_m is None and entry.acquired is None and entry.classes == ("forest",)
    assert "tiles" not in entry.to_dict()  # the table counts tiles now


@pytest.mark.parametrize("change, problem", [
    (lambda e: e.update(tile_szie=64), "unknown key 'tile_szie' in a source entry"),
    (lambda e: e.pop("tile_px"), "a source entry's grid is incomplete or malformed"),
])
def test_an_entry_it_cannot_read_is_one_line(tmp_path, built_index, change, problem):
    db = tmp_path / "copy.db"
    shutil.copytree(built_index, db)
    manifest = json.loads((db / "georet.json").read_text())
    change(next(iter(manifest["sources"].values())))
    (db / "georet.json").write_text(json.dumps(manifest))
    with pytest.raises(GeoretError, match=problem):
        TileStore.open(db).entries()
    result = invoke_cli("query", "a harbour", "--db", db)
    assert result.returncode == 1 and problem in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
