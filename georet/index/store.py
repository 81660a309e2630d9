"""The index on disk: a LanceDB table of tiles plus a small JSON manifest.

Layout of an index directory::

    DB/georet.json      manifest: format version, model identity, tiling per source
    DB/tiles.lance/     LanceDB table, one row per tile

The manifest is what makes a directory a georet index; it is rewritten
atomically (write + rename), so an interrupted run never leaves it torn. Rows
are upserted on the deterministic ``tile_id``, so re-running or resuming an
index never duplicates a tile.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from georet.errors import GeoretError

FORMAT_VERSION = 1
MANIFEST_NAME = "georet.json"
TABLE_NAME = "tiles"
#: Identity fields that must agree before an index may be queried or extended by a model.
IDENTITY_KEYS = ("arch", "weights_id", "checkpoint_id", "dim", "preprocess", "backbones")


def tile_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("geometry", pa.binary()),  # WKB polygon, EPSG:4326 (lon, lat)
        pa.field("minx", pa.float64()),
        pa.field("miny", pa.float64()),
        pa.field("maxx", pa.float64()),
        pa.field("maxy", pa.float64()),
        pa.field("source", pa.string()),
        pa.field("source_crs", pa.string()),
        pa.field("col_off", pa.int32()),
        pa.field("row_off", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("scene", pa.string()),
        pa.field("scene_score", pa.float32()),
        pa.field("landcover_fractions", pa.string()),  # JSON {class: fraction}, "" for zero-shot
        pa.field("valid_fraction", pa.float32()),
        pa.field("thumbnail", pa.binary()),  # small PNG
    ])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """A sentence naming the first identity field that differs, or None if compatible."""
    for key in IDENTITY_KEYS:
        if stored.get(key) != current.get(key):
            return (f"this index was built with model {stored.get('arch')} ({stored.get('pretrained')}), "
                    f"not {current.get('arch')} ({current.get('pretrained')}): {key} differs")
    return None


class TileStore:
    """Read/write access to one georet index directory."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        import lancedb

        self.path = path
        self.manifest = manifest
        self._manifest_stamp: tuple[int, int, int] | None = None  # unknown: the first refresh re-reads
        self._db = lancedb.connect(str(path))
        self._table = None

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "TileStore":
        """Open an existing index; a clear error if ``path`` is not one."""
        path = Path(path).expanduser()
        manifest_path = path / MANIFEST_NAME
        if not path.exists():
            raise GeoretError(f"no georet index at {path} (build one with `georet index RASTER --db {path}`)")
        if not manifest_path.is_file():
            raise GeoretError(f"{path} is not a georet index (no {MANIFEST_NAME})")
        return cls(path, _read_manifest(path))

    @classmethod
    def open_for_writing(cls, path: str | Path, model_identity: dict[str, Any],
                         model_spec: dict[str, Any]) -> "TileStore":
        """Open or create an index for ``index``; refuses a model that differs from the stored one."""
        path = Path(path).expanduser()
        if (path / MANIFEST_NAME).is_file():
            store = cls.open(path)
            problem = describe_mismatch(store.manifest["model"]["identity"], model_identity)
            if problem:
                raise GeoretError(f"cannot add to {path}: {problem}; use a new --db")
            return store
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise GeoretError(f"{path} exists and is not a georet index; refusing to write into it")
        path.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT_VERSION, "created": _now(), "updated": _now(),
                    "model": {"identity": model_identity, "spec": model_spec}, "sources": {}}
        store = cls(path, manifest)
        store._db.create_table(TABLE_NAME, schema=tile_schema(model_identity["dim"]))
        store.save_manifest()
        return store

    def refresh(self) -> None:
        """Catch up with what other processes committed since this store was opened.

        A long-lived handle (a notebook, a server) otherwise keeps reading the
        table version and manifest it first saw.
        """
        if self._table is not None:
            self._table.checkout_latest()
        stamp = self._stamp()
        if stamp is not None and stamp != self._manifest_stamp:  # re-read only when another writer replaced it
            self.manifest = _read_manifest(self.path)
            self._manifest_stamp = stamp

    def _stamp(self) -> tuple[int, int, int] | None:
        """Identity of the manifest file as written (it is replaced, never edited, on every save)."""
        try:
            stat = (self.path / MANIFEST_NAME).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    # -- manifest --------------------------------------------------------
    def save_manifest(self) -> None:
        self.manifest["updated"] = _now()
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".georet-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.manifest, fh, indent=2)
        os.replace(tmp, self.path / MANIFEST_NAME)
        self._manifest_stamp = self._stamp()

    def record_source(self, source: str, info: dict[str, Any]) -> None:
        self.manifest["sources"][source] = info
        self.save_manifest()

    @property
    def model_identity(self) -> dict[str, Any]:
        return self.manifest["model"]["identity"]

    @property
    def model_spec(self) -> dict[str, Any]:
        return self.manifest["model"]["spec"]

    # -- table -----------------------------------------------------------
    @property
    def table(self):
        if self._table is None:
            try:
                self._table = self._db.open_table(TABLE_NAME)
            except (ValueError, FileNotFoundError, OSError):
                raise GeoretError(f"{self.path}: the tiles table is missing; re-run `georet index`") from None
        return self._table

    def count(self, where: str | None = None) -> int:
        return int(self.table.count_rows(where))

    def column(self, name: str, where: str | None = None) -> pa.ChunkedArray:
        return self.table.to_lance().to_table(columns=[name], filter=where).column(name)

    def existing_ids(self, source: str) -> set[str]:
        return set(self.column("tile_id", f"source = {sql_string(source)}").to_pylist())

    def scenes(self) -> list[str]:
        return sorted({s for s in self.column("scene").to_pylist() if s})

    def upsert(self, rows: pa.Table) -> None:
        """Insert new tiles, replace tiles with the same ``tile_id``; one atomic commit."""
        self.table.merge_insert("tile_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def optimize(self) -> None:
        """Compact the small fragments that batched writes leave behind."""
        self.table.optimize()


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise GeoretError(f"{path}: {MANIFEST_NAME} is unreadable or corrupt") from None
    if manifest.get("format") != FORMAT_VERSION or "model" not in manifest:
        raise GeoretError(f"{path}: unsupported georet index format {manifest.get('format')!r}")
    return manifest


def sql_string(value: str) -> str:
    """Quote a value for a LanceDB filter expression."""
    return "'" + value.replace("'", "''") + "'"
