"""``georet doctor --db DB [--repair]``: what is broken in a local index, and mending it without losing intact
rows.

Two things can break under an index: its manifest (``georet.json``), and the data files of its Lance table
(a disk error, a copy that missed files, a hand that deleted one). georet keeps what mends both:

* every manifest write writes a copy first (``georet.json.bak``), so a damaged manifest is restored from it;
* Lance never rewrites a data file and georet keeps superseded versions for a week (``KEEP_VERSIONS``), so the
  newest table version whose every data file is still on disk holds every row that was not in a lost file
  (of the last week's versions). Repair makes that version
  the latest, drops the rows of rasters the manifest no longer lists (a version from before a
  ``georet remove``), and marks incomplete each raster with fewer rows than it completed with. ``georet
  index`` on those rasters then embeds only their missing tiles.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georet.errors import GeoretError
from georet.index.store import (
    MANIFEST_BACKUP_NAME,
    MANIFEST_NAME,
    TABLE_NAME,
    TileStore,
    check_manifest,
)

LOST_ROWS = "rows lost to a damaged table; re-run `georet index` on it to embed them again"
TABLE_MISSING = "the tiles table is missing"


@dataclass
class Diagnosis:
    """What is wrong with an index (empty lists and None: nothing)."""

    path: str
    manifest: str | None = None  # the manifest's problem
    table: str | None = None  # the table's problem
    missing_files: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.manifest is None and self.table is None

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest or "ok", "table": self.table or "ok",
                "missing_files": self.missing_files,
                **({} if self.healthy else {"repair": f"georet doctor --db {self.path} --repair"})}


@dataclass
class Repair:
    """What ``--repair`` did."""

    manifest_restored: bool = False
    restored_version: int | None = None  # the table version made the latest again
    tiles_kept: int = 0
    rasters_kept: int = 0
    to_index_again: list[str] = field(default_factory=list)
    rows_of_removed_rasters: int = 0

    def describe(self) -> str:
        parts = ["restored georet.json from its copy"] if self.manifest_restored else []
        if self.restored_version is not None:
            parts.append(f"made table version {self.restored_version} (every data file present) the latest")
        parts.append(f"kept {self.tiles_kept:,} tiles of {self.rasters_kept} rasters")
        if self.to_index_again:
            parts.append(f"{len(self.to_index_again)} raster{'s' if len(self.to_index_again) > 1 else ''} to index "
                         f"again: {', '.join(self.to_index_again)}")
        return "; ".join(parts)


def diagnose(db: str | Path) -> Diagnosis:
    """The manifest's and the table's problems, read without changing anything."""
    path = Path(db).expanduser()
    found = Diagnosis(str(path))
    try:
        check_manifest(json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8")), path)
    except (OSError, ValueError, GeoretError):
        found.manifest = f"{MANIFEST_NAME} is unreadable or corrupt"
    table = path / f"{TABLE_NAME}.lance"
    if not table.is_dir():
        found.table = TABLE_MISSING
        return found
    try:
        files = _data_files(str(table), None)
    except Exception as exc:  # noqa: BLE001 - Lance raises several kinds; any means the table cannot be opened
        found.table = f"the tiles table cannot be opened ({(str(exc).splitlines() or ['?'])[0][:120]})"
        return found
    found.missing_files = [name for name in files if not (table / "data" / name).is_file()]
    if found.missing_files:
        found.table = f"{len(found.missing_files)} of {len(files)} data files missing"
    return found


def repair(db: str | Path) -> Repair:
    """Mend what :func:`diagnose` finds, under the writer lock; a one-line error where nothing can."""
    if TileStore.in_object_store(db):  # no file to stat, no lock to hold: the object store keeps versions itself
        raise GeoretError(f"{db}: --repair mends indexes in local folders; an object-store index keeps every "
                          "table version, so restore one with Lance (dataset.restore) instead")
    path = Path(db).expanduser()
    found, done = diagnose(path), Repair()
    if found.manifest:
        _restore_manifest(path)
        done.manifest_restored = True
    if found.table == TABLE_MISSING:
        raise GeoretError(f"{path}: {TABLE_MISSING}; re-run `georet index` with the same rasters "
                          "(it rebuilds the table from the manifest)")
    store = TileStore.open(path)
    with store.writing():
        if found.missing_files:
            done.restored_version = _restore_intact_version(store.table_uri)
            store.refresh()
        _reconcile(store, done)
    return done


def _data_files(uri: str, version: int | None) -> list[str]:
    import lance

    dataset = lance.dataset(uri, version=version)
    return [data.path for fragment in dataset.get_fragments() for data in fragment.data_files()]


def _restore_manifest(path: Path) -> None:
    backup = path / MANIFEST_BACKUP_NAME
    try:
        check_manifest(json.loads(backup.read_text(encoding="utf-8")), path)
    except (OSError, ValueError, GeoretError):
        raise GeoretError(f"{path}: {MANIFEST_NAME} is damaged and has no readable copy ({MANIFEST_BACKUP_NAME}); "
                          "index the rasters again into a new --db") from None
    shutil.copyfile(backup, path / MANIFEST_NAME)


def _restore_intact_version(uri: str) -> int:
    """Make the newest version whose data files all exist the latest one (its number)."""
    import lance

    data = Path(uri) / "data"
    for version in sorted((v["version"] for v in lance.dataset(uri).versions()), reverse=True):
        try:
            files = _data_files(uri, version)
        except Exception:  # noqa: BLE001 - that version's own metadata is gone or damaged: try an older one
            continue
        if all((data / name).is_file() for name in files):
            lance.dataset(uri, version=version).restore()
            return version
    raise GeoretError(f"{uri}: no version of the tiles table has all its data files; index the rasters again "
                      "into a new --db")


def _reconcile(store: TileStore, done: Repair) -> None:
    """Rows and manifest agree again: rows of unlisted rasters go, rasters short of rows become incomplete."""
    counts = store.source_counts()
    listed = store.entries()
    strays = [source for source in counts if source not in listed]
    for source in strays:
        done.rows_of_removed_rasters += store.delete_rows(source)
    changed = bool(strays)
    for source, entry in listed.items():
        rows = counts.get(source, 0)
        lost = rows < entry.rows if entry.rows is not None else rows == 0
        if entry.complete and lost:
            store.mark_incomplete(source, LOST_ROWS)
            changed = True
        if not entry.complete or lost:
            done.to_index_again.append(Path(source).name)
        elif rows:
            done.rasters_kept += 1
        done.tiles_kept += rows
    if changed:
        store.save_manifest()
