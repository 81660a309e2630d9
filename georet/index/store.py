"""The index on disk: a LanceDB table of tiles plus a small JSON manifest.

Layout of an index directory::

    DB/georet.json      manifest: format version, model identity, tiling and state per source
    DB/tiles.lance/     LanceDB table, one row per tile
    DB/.georet.lock     writer lock (see :mod:`georet.index.lock`)

The manifest is what makes a directory a georet index; it is rewritten
atomically (write + rename), so an interrupted run never leaves it torn. Rows
are upserted on the deterministic ``tile_id``, so re-running or resuming an
index never duplicates a tile, and writers hold the writer lock, so two runs
never upsert at the same time.

The table is the truth about tiles: per-source tile counts are counted from
it, never stored. The manifest says what the rows cannot: each source's
tiling and its state. A source is marked ``incomplete`` *before* its first
row is written and ``complete`` after its last, so rows can never exist
without an entry that accounts for them, even after ``kill -9``.

Object-store indexes (``--db s3://bucket/prefix``, or gs://, az://: any URL Lance
reaches) are :class:`ObjectStoreTileStore`. An object store has no atomic rename and no file locks, so the manifest
cannot be a file replaced beside the table as in a local folder. Here it lives
*inside* the Lance dataset, as a config entry: writing it is a Lance commit
like writing rows, so every table version carries the manifest that was
current when it was committed, and a reader sees both or neither. The
protocol is the local one: a source is marked incomplete (a commit) before
its first rows (commits) and complete after its last.

There is no writer lock: run one writer per object-store index at a time.
Lance's commits keep the table consistent if two do run, and the next writer
drops any tile they both wrote (:meth:`TileStore.drop_duplicate_tiles`).
Credentials and endpoints come from the environment, as Lance, GDAL and boto3
read them (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``…).
"""

from __future__ import annotations

import functools
import json
import os
import re
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa

from georet.errors import ConflictError, GeoretError, NotFoundError, ReadOnlyError
from georet.files import atomic_write_text
from georet.geo import is_url
from georet.index.lock import LOCK_NAME, lock_holder, writer_lock
from georet.index.manifest import COMPLETE, FEW_SHOT, IN_PROGRESS, INCOMPLETE, SourceEntry

FORMAT_VERSION = 1
MANIFEST_NAME = "georet.json"
MANIFEST_BACKUP_NAME = "georet.json.bak"
TABLE_NAME = "tiles"
#: fragments with fewer rows are merged by :meth:`TileStore.optimize`; larger ones are left as written
SMALL_FRAGMENT_ROWS = 65_536
#: how long superseded table versions stay on disk: what ``georet doctor --repair`` can go back to when a
#: data file is lost (LanceDB's own default)
KEEP_VERSIONS = timedelta(days=7)
#: From this many tiles ``georet index`` builds an approximate vector index by itself. Below it a warm
#: index (the server) searches exactly from memory: 6 ms at 100k rows, 61 ms at 1M, linear in between
#: (benchmarks/results/ann.json), so ~15 ms here; the index answers 1M rows in 12 ms.
AUTO_VECTOR_INDEX_ROWS = 250_000
#: Training the index's partitions needs a few thousand vectors; ``georet optimize`` refuses fewer.
MIN_VECTOR_INDEX_ROWS = 5_000
#: The index and its search settings, chosen from measured recall@10 against exact search on 100k real
#: embeddings (benchmarks/results/ann.json): IVF_HNSW_SQ with 40 probes and a 10× exact re-rank gave
#: 0.979 (IVF_PQ needed a 50× re-rank for 0.975 and trained 5× longer).
VECTOR_INDEX_TYPE = "IVF_HNSW_SQ"
ANN_NPROBES, ANN_REFINE_FACTOR = 40, 10
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
        pa.field("acquired", pa.string()),  # ISO date of the raster's acquisition (2016-05-01, 2016-05, 2016), or null
    ])


#: Columns added to the table since format 1, with the SQL value old rows get: a writer adds them to an
#: older table, and readers of a table no writer has touched yet see that value.
ADDED_COLUMNS = {"acquired": "CAST(NULL AS STRING)"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _writes_table(method: Callable) -> Callable:
    """Marks a :class:`TileStore` method that commits to the table: what :attr:`TileStore.dataset` read
    before is stale after it (queries read that dataset, which pylance opens at one version). The mark takes
    effect when the method returns, so a method must not read :attr:`TileStore.dataset` after its own write."""
    @functools.wraps(method)
    def write(self: "TileStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:  # a failed commit may still have written a version
            self._read_dataset = None
    return write


def describe_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """A sentence naming the first identity field that differs, or None if compatible.

    Only the mismatch: each caller adds what to do about it (a writer: use a
    new --db; a query: re-index).
    """
    for key in IDENTITY_KEYS:
        if stored.get(key) != current.get(key):
            if (stored.get("arch"), stored.get("pretrained")) == (current.get("arch"), current.get("pretrained")):
                return (f"this index was built with other {stored.get('pretrained')} weights of {stored.get('arch')} "
                        f"(an earlier georet release or a changed file: {key} differs)")
            return (f"this index was built with model {stored.get('arch')} ({stored.get('pretrained')}), "
                    f"not {current.get('arch')} ({current.get('pretrained')}): {key} differs")
    return None


class TileStore:
    """Read/write access to one georet index directory."""

    def __init__(self, path: Path | str, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self._manifest_stamp: tuple[int, int, int] | None = None  # unknown: the first refresh re-reads
        #: (manifest, its stamp, its entries typed): parsed once per manifest version (see :meth:`entries`)
        self._entries: tuple[dict[str, Any], Any, dict[str, SourceEntry]] | None = None
        self._db = None
        self._table = None
        self._read_dataset = None
        #: pylance's caches (the vector index's partitions, file metadata), shared by every version this store
        #: opens: a long-lived reader (a server) then keeps its vector index warm across a writer's commits
        self._lance_session = None

    @property
    def db(self):
        """The LanceDB connection, made on first use: writes go through it; queries read :attr:`dataset`."""
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(str(self.path))
        return self._db

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "TileStore":
        """Open an existing index (a folder, or an object-store URL); a clear error if ``path`` is not one."""
        if cls.in_object_store(path):
            return ObjectStoreTileStore.open(str(path))
        path = Path(path).expanduser()
        manifest_path = path / MANIFEST_NAME
        if not path.exists():
            raise NotFoundError(f"no georet index at {path} (build one with `georet index RASTER --db {path}`)")
        if not manifest_path.is_file():
            raise NotFoundError(f"{path} is not a georet index (no {MANIFEST_NAME})")
        return cls(path, _read_manifest(path))

    @classmethod
    @contextmanager
    def open_for_writing(cls, path: str | Path, model_identity: dict[str, Any], model_spec: dict[str, Any], *,
                         lock_timeout: float | None = None,
                         on_wait: Callable[[str], None] | None = None) -> Iterator["TileStore"]:
        """Open or create an index and hold its writer lock while the block runs.

        Refuses a model that differs from the stored one, a folder that holds
        something else, and a read-only index (with a clear error, before any write).
        """
        if cls.in_object_store(path):
            with ObjectStoreTileStore.open_for_writing(str(path), model_identity, model_spec) as store:
                yield store
            return
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            raise GeoretError(f"{path} exists and is not a folder; refusing to write into it")
        # Checked here and again under the lock: here so that a folder of someone else's files never gets
        # our lock file; under the lock because another writer may have created the index meanwhile.
        if path.is_dir() and not (path / MANIFEST_NAME).is_file() and not (path / LOCK_NAME).exists() \
                and any(path.iterdir()):
            raise ConflictError(f"{path} exists and is not a georet index; refusing to write into it")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GeoretError(f"cannot create the index folder {path}: {exc.strerror.lower()}") from None
        require_writable(path)
        with writer_lock(path, lock_timeout, on_wait):
            if (path / MANIFEST_NAME).is_file():
                store = cls.open(path)
                problem = describe_mismatch(store.model_identity, model_identity)
                if problem:
                    raise ConflictError(f"cannot add to {path}: {problem}; use a new {{db}}", names=("db",))
            elif any(p.name != LOCK_NAME for p in path.iterdir()):
                raise ConflictError(f"{path} exists and is not a georet index; refusing to write into it")
            else:
                store = cls(path, {"format": FORMAT_VERSION, "created": now(), "updated": now(),
                                   "model": {"identity": model_identity, "spec": model_spec}, "sources": {}})
            if not store.has_table():  # new, or a manifest whose table was deleted
                store.db.create_table(TABLE_NAME, schema=tile_schema(model_identity["dim"]))
                for source in store.manifest["sources"]:
                    store.mark_incomplete(source, "its tiles were lost with the tiles table; re-run to rebuild")
                store.save_manifest()
            store.add_missing_columns()
            store.drop_duplicate_tiles()
            yield store

    @staticmethod
    def in_object_store(path: str | Path) -> bool:
        """True for an index URL (s3://…), which :class:`ObjectStoreTileStore` serves."""
        return is_url(str(path))

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """True when ``path`` holds a georet index (it may still fail to open, e.g. a corrupt manifest)."""
        if cls.in_object_store(path):
            return ObjectStoreTileStore.exists(str(path))
        return (Path(path).expanduser() / MANIFEST_NAME).is_file()

    @contextmanager
    def writing(self, lock_timeout: float | None = None) -> Iterator[None]:
        """Hold the writer lock of this index (after checking it can be written) while the block runs."""
        require_writable(self.path)
        with writer_lock(self.path, lock_timeout):
            self.refresh()
            yield

    def writer_pid(self) -> int | None:
        """The pid of the process writing to this index now, if any."""
        return lock_holder(self.path)

    def refresh(self) -> None:
        """Catch up with what other processes committed since this store was opened.

        A long-lived handle (a notebook, a server) otherwise keeps reading the
        table version and manifest it first saw.
        """
        if self._table is not None:
            self._table.checkout_latest()
        self._read_dataset = None  # opened again, at the latest version, when next read
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
        """Write the manifest whole, and its copy first: a manifest a disk or an editor damages is restored
        from the copy by ``georet doctor --repair``."""
        self.manifest["updated"] = now()
        text = json.dumps(self.manifest, indent=2)
        atomic_write_text(self.path / MANIFEST_BACKUP_NAME, text)
        atomic_write_text(self.path / MANIFEST_NAME, text)
        self._manifest_stamp = self._stamp()

    def entries(self) -> dict[str, SourceEntry]:
        """Every source's manifest entry, typed (in the order they were first indexed). Parsed once per
        manifest version: a search reads them on every request, and an index may hold thousands of rasters.
        Do not change the dict returned."""
        cached = self._entries
        if cached is None or cached[0] is not self.manifest or cached[1] != self._manifest_stamp:
            parsed = {name: SourceEntry.from_dict(raw, str(self.path)) for name, raw in self.manifest["sources"].items()}
            self._entries = cached = (self.manifest, self._manifest_stamp, parsed)
        return cached[2]

    def entry(self, source: str) -> SourceEntry | None:
        """One source's entry, parsed alone (indexing reads one raster's between writes to the manifest)."""
        raw = self.manifest["sources"].get(source)
        return None if raw is None else SourceEntry.from_dict(raw, str(self.path))

    def begin_source(self, source: str, entry: SourceEntry) -> None:
        """Record ``source`` as incomplete before any of its rows is written (caller holds the lock)."""
        self.manifest["sources"][source] = replace(entry, state=INCOMPLETE, reason=IN_PROGRESS).to_dict()
        self.save_manifest()

    def mark_incomplete(self, source: str, reason: str) -> None:
        """Say ``source`` must be indexed again, and why (the caller saves the manifest)."""
        self.manifest["sources"][source].update(state=INCOMPLETE, reason=reason)
        self._entries = None

    def record_examples(self, source: str, method: str, examples: dict[str, int]) -> None:
        """Say ``source`` was relabelled from marked examples: how, and how many of each class (the caller
        saves the manifest)."""
        self.manifest["sources"][source].update(scenes=FEW_SHOT, scene_examples={"method": method,
                                                                                 "examples": examples})
        self._entries = None

    def end_source(self, source: str, failure: str | None = None) -> None:
        """Mark ``source`` complete, or incomplete with the one-line ``failure`` that stopped it."""
        entry = self.manifest["sources"][source]
        entry.update(state=INCOMPLETE if failure else COMPLETE, reason=failure)
        if not failure:  # what a repair checks the rows it kept against
            entry["rows"] = self.count(f"source = {sql_string(source)}")
        self.save_manifest()

    @_writes_table
    def set_acquired(self, source: str, acquired: str | None, origin: str | None) -> None:
        """Date every row of ``source`` (an ISO date, or None) and its manifest entry (caller holds the lock)."""
        value = "NULL" if acquired is None else sql_string(acquired)
        self.table.update(where=f"source = {sql_string(source)}", values_sql={"acquired": value})
        self.manifest["sources"][source].update(acquired=acquired, acquired_from=origin)
        self.save_manifest()

    def remove_source(self, source: str) -> int:
        """Delete every row of ``source`` and its manifest entry; the number of rows deleted (caller holds the lock)."""
        removed = self.delete_rows(source)
        self.manifest["sources"].pop(source, None)
        self.save_manifest()
        return removed

    @_writes_table
    def delete_rows(self, source: str) -> int:
        """Delete every row of ``source``, keeping its manifest entry; the number deleted (caller holds the lock)."""
        where = f"source = {sql_string(source)}"
        removed = self.count(where) if self.has_table() else 0
        if removed:
            self.table.delete(where)
        return removed

    def sources(self) -> dict[str, dict[str, Any]]:
        """Every source with its manifest entry, state and tile count as the table has it now.

        Rows whose source has no entry (written by a version of georet that
        recorded sources only at the end, then killed) are listed as incomplete.
        """
        counts = self.source_counts()
        writer = self.writer_pid()
        listed: dict[str, dict[str, Any]] = {}
        for source, entry in self.manifest["sources"].items():
            entry = {**entry, "tiles": counts.get(source, 0)}
            entry.setdefault("state", COMPLETE)  # format-1 manifests written before states existed
            entry.setdefault("reason", None)
            if entry["reason"] == IN_PROGRESS and writer is not None:
                entry["reason"] = f"being indexed now (pid {writer})"
            listed[source] = entry
        for source, count in counts.items():
            if source not in listed:
                listed[source] = {"state": INCOMPLETE, "tiles": count,
                                  "reason": "rows without a manifest entry (interrupted run); "
                                            "re-run `georet index` on it or `georet remove` it"}
        return listed

    def unfinished_sources(self) -> frozenset[str]:
        """Sources the manifest does not call complete: being written, or stopped midway."""
        return frozenset(name for name, entry in self.entries().items() if not entry.complete)

    def source_counts(self) -> dict[str, int]:
        """Tiles per source, counted in the table."""
        if not self.has_table():
            return {}
        counts = self.column("source").combine_chunks().value_counts()
        return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}

    @property
    def model_identity(self) -> dict[str, Any]:
        return self.manifest["model"]["identity"]

    @property
    def model_spec(self) -> dict[str, Any]:
        return self.manifest["model"]["spec"]

    # -- table -----------------------------------------------------------
    @property
    def table_uri(self) -> str:
        """Where the tiles table's Lance dataset lives (for writers other than LanceDB, such as Ray Data)."""
        return str(self.path / f"{TABLE_NAME}.lance")

    def has_table(self) -> bool:
        """False when the folder has a manifest but its tiles table was deleted."""
        return (self.path / f"{TABLE_NAME}.lance").is_dir()

    @property
    def table(self):
        if self._table is None:
            try:
                self._table = self.db.open_table(TABLE_NAME)
            except (ValueError, FileNotFoundError, OSError):
                raise GeoretError(f"{self.path}: the tiles table is missing; re-run `georet index`") from None
        return self._table

    @property
    def dataset(self):
        """The tiles table as a Lance dataset, at the latest version when first read after a refresh or a
        write: what queries read. pylance alone imports in a third of LanceDB's time, most of a cold query."""
        if self._read_dataset is None:
            import lance

            try:
                self._read_dataset = lance.dataset(self.table_uri, session=self._lance_session)
            except (ValueError, FileNotFoundError, OSError):
                raise GeoretError(f"{self.path}: the tiles table is missing; re-run `georet index`") from None
            self._lance_session = self._read_dataset.session()
        return self._read_dataset

    @property
    def version(self) -> int:
        """The table version :attr:`dataset` reads."""
        return int(self.dataset.version)

    @_writes_table
    def add_missing_columns(self) -> None:
        """Give a table written by an earlier georet the columns added since (:data:`ADDED_COLUMNS`), in one
        commit; its rows keep working, with nulls there (caller holds the lock)."""
        missing = {name: value for name, value in ADDED_COLUMNS.items() if name not in self.table.schema.names}
        if missing:
            self.table.add_columns(missing)

    def missing_columns(self, columns: Sequence[str]) -> list[str]:
        """Which of ``columns`` this table does not have yet (an older index no writer has opened since)."""
        return [c for c in columns if c in ADDED_COLUMNS and c not in self.dataset.schema.names]

    def count(self, where: str | None = None) -> int:
        return int(self.table.count_rows(where))

    def column(self, name: str, where: str | None = None) -> pa.ChunkedArray:
        return self.table.to_lance().to_table(columns=[name], filter=where).column(name)

    def existing_ids(self, source: str) -> set[str]:
        return set(self.column("tile_id", f"source = {sql_string(source)}").to_pylist())

    def scenes(self) -> list[str]:
        return sorted({s for s in self.column("scene").to_pylist() if s})

    @_writes_table
    def upsert(self, rows: pa.Table) -> None:
        """Insert new tiles, replace tiles with the same ``tile_id``; one atomic commit."""
        self.table.merge_insert("tile_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)

    @_writes_table
    def update_rows(self, rows: pa.Table) -> None:
        """Replace some columns of tiles already in the table (``rows``: ``tile_id`` and those columns); one
        atomic commit."""
        self.table.merge_insert("tile_id").when_matched_update_all().execute(rows)

    @_writes_table
    def drop_duplicate_tiles(self) -> int:
        """Keep one row per ``tile_id``; the number of extra rows deleted, in one commit (caller holds the lock).

        Writers serialise now, but indexes written concurrently by georet
        versions before the writer lock can hold a tile twice; the copies are
        identical (same tile, same model), so the first one stays.
        """
        ids = self.column("tile_id").combine_chunks()
        if len(ids) == len(ids.unique()):
            return 0
        rows = self.table.to_lance().to_table(columns=["tile_id"], with_row_id=True).to_pylist()
        seen: set[str] = set()
        extra: list[int] = []
        for row in rows:
            if row["tile_id"] in seen:
                extra.append(row["_rowid"])
            seen.add(row["tile_id"])
        self.table.delete("_rowid IN (" + ", ".join(map(str, extra)) + ")")
        return len(extra)

    @_writes_table
    def optimize(self) -> None:
        """Compact the small fragments that batched writes leave behind, add new rows to a vector index, and
        drop table versions older than :data:`KEEP_VERSIONS`.

        Only fragments under :data:`SMALL_FRAGMENT_ROWS` are merged: LanceDB's own ``optimize`` merges up to a
        million rows a fragment, so adding one raster to a million-tile index rewrote the whole table (over
        18 minutes on 2 cores, ``benchmarks/serve_load.py --writes``)."""
        dataset = self.table.to_lance()
        dataset.optimize.compact_files(target_rows_per_fragment=SMALL_FRAGMENT_ROWS)
        dataset.optimize.optimize_indices(num_indices_to_merge=0)  # a delta: merging rewrote the 1M-row index
        dataset.cleanup_old_versions(older_than=KEEP_VERSIONS)
        self.table.checkout_latest()

    # -- approximate search ----------------------------------------------------
    def _vector_index_name(self) -> str | None:
        return next((index["name"] for index in self.dataset.list_indices() if "vector" in index["fields"]), None)

    def has_vector_index(self) -> bool:
        """Whether the table has a vector index: what a search asks at every new version, without the index's
        statistics (:meth:`vector_index`), which take about a second at a million rows."""
        return self._vector_index_name() is not None

    def vector_index(self) -> dict[str, Any] | None:
        """``{"type", "indexed_rows", "unindexed_rows"}`` of the table's vector index, or None without one."""
        name = self._vector_index_name()
        if name is None:
            return None
        stats = self.dataset.index_statistics(name)
        return {"type": str(stats["index_type"]), "indexed_rows": int(stats["num_indexed_rows"]),
                "unindexed_rows": int(stats["num_unindexed_rows"])}

    def build_vector_index(self) -> dict[str, Any]:
        """(Re)build the :data:`VECTOR_INDEX_TYPE` index over every row and describe it; caller holds the
        writer lock.

        √n partitions, as measured in ``benchmarks/ann.py``; searches then probe
        :data:`ANN_NPROBES` partitions and re-rank :data:`ANN_REFINE_FACTOR` × k
        candidates exactly.
        """
        rows = self.count()
        if rows < MIN_VECTOR_INDEX_ROWS:
            raise GeoretError(f"{self.path} has {rows:,} tiles; an approximate index needs at least "
                              f"{MIN_VECTOR_INDEX_ROWS:,} (below {AUTO_VECTOR_INDEX_ROWS:,} exact search is fast anyway)")
        self._create_vector_index(rows)
        return self.vector_index()  # read after the commit: the dataset read before it is stale

    @_writes_table
    def _create_vector_index(self, rows: int) -> None:
        self.table.create_index(metric="cosine", vector_column_name="vector", index_type=VECTOR_INDEX_TYPE,
                                num_partitions=max(1, int(rows ** 0.5)), replace=True)

    def wants_vector_index(self) -> bool:
        """True past :data:`AUTO_VECTOR_INDEX_ROWS` rows when no index covers most of them."""
        rows = self.count()
        if rows < AUTO_VECTOR_INDEX_ROWS:
            return False
        index = self.vector_index()
        return index is None or index["unindexed_rows"] > index["indexed_rows"]


#: The Lance config key that holds the manifest.
MANIFEST_KEY = "georet.manifest"


class ObjectStoreTileStore(TileStore):
    """A :class:`TileStore` whose manifest is committed inside its Lance table."""

    @classmethod
    def _dataset(cls, uri: str):
        """The tiles dataset at its latest version, or None where there is none."""
        import lance

        try:
            return lance.dataset(f"{uri}/{TABLE_NAME}.lance")
        except Exception as exc:  # Lance raises ValueError/OSError with the store's own message
            if "not found" in str(exc).lower() and "nosuchbucket" not in str(exc).lower():
                return None
            raise GeoretError(f"{uri}: cannot open the index: {store_message(exc)}") from None

    @classmethod
    def open(cls, uri: str) -> "ObjectStoreTileStore":
        uri = uri.rstrip("/")
        dataset = cls._dataset(uri)
        if dataset is None:
            raise NotFoundError(f"no georet index at {uri} (build one with `georet index RASTER --db {uri}`)")
        return cls._of(uri, dataset)

    @classmethod
    def _of(cls, uri: str, dataset) -> "ObjectStoreTileStore":
        """The store of an opened tiles dataset; an error if it carries no georet manifest."""
        text = dataset.config().get(MANIFEST_KEY)
        if text is None:
            raise NotFoundError(f"{uri} is not a georet index (its {TABLE_NAME} table has no georet manifest)")
        store = cls(uri, _parse(text, uri))
        store._manifest_stamp = dataset.version
        return store

    @classmethod
    def exists(cls, uri: str) -> bool:
        dataset = cls._dataset(uri.rstrip("/"))
        return dataset is not None and MANIFEST_KEY in dataset.config()

    @classmethod
    @contextmanager
    def open_for_writing(cls, uri: str, model_identity: dict[str, Any],
                         model_spec: dict[str, Any]) -> Iterator["ObjectStoreTileStore"]:
        uri = uri.rstrip("/")
        dataset = cls._dataset(uri)
        if dataset is not None and MANIFEST_KEY not in dataset.config():
            raise ConflictError(f"{uri} holds a Lance table that is not a georet index; refusing to write into it")
        if dataset is not None:
            store = cls._of(uri, dataset)
            problem = describe_mismatch(store.model_identity, model_identity)
            if problem:
                raise ConflictError(f"cannot add to {uri}: {problem}; use a new {{db}}", names=("db",))
        else:
            store = cls(uri, {"format": FORMAT_VERSION, "created": now(), "updated": now(),
                              "model": {"identity": model_identity, "spec": model_spec}, "sources": {}})
            try:
                store.db.create_table(TABLE_NAME, schema=tile_schema(model_identity["dim"]))
            except Exception as exc:  # no bucket, no permission, no credentials: the store says which
                raise GeoretError(f"{uri}: cannot create the index: {store_message(exc)}") from None
            store.save_manifest()
        store.add_missing_columns()
        store.drop_duplicate_tiles()
        yield store

    def refresh(self) -> None:
        """Catch up with the latest table version, and with the manifest committed in it when that changed."""
        table = self.table
        table.checkout_latest()
        self._read_dataset = None
        if table.version != self._manifest_stamp:
            self.manifest = _parse(table.to_lance().config().get(MANIFEST_KEY, "{}"), self.path)
            self._manifest_stamp = table.version

    @_writes_table
    def save_manifest(self) -> None:
        """Commit the manifest as a new table version (the table itself must exist)."""
        self.manifest["updated"] = now()
        dataset = self._dataset(self.path)
        dataset.update_config({MANIFEST_KEY: json.dumps(self.manifest)})
        self._manifest_stamp = dataset.version
        if self._table is not None:
            self._table.checkout_latest()

    def has_table(self) -> bool:
        return self._dataset(self.path) is not None

    @property
    def table_uri(self) -> str:
        return f"{self.path}/{TABLE_NAME}.lance"

    @contextmanager
    def writing(self, lock_timeout: float | None = None) -> Iterator[None]:
        """No lock exists in an object store (see the module note); catch up with the latest version."""
        self.refresh()
        yield

    def writer_pid(self) -> int | None:
        return None


def store_message(exc: BaseException) -> str:
    """The object store's own words from a Lance error (its S3 XML <Message>, else the first line, short)."""
    text = str(exc)
    match = re.search(r"<Message>(.*?)</Message>", text)
    if match:
        return match.group(1)
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return first.split(", /")[0][:300]


def _parse(text: str, uri: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError:
        raise GeoretError(f"{uri}: the georet manifest in its table is corrupt") from None
    return check_manifest(manifest, uri)


def remove_sources(db: str | Path, sources: Sequence[str], lock_timeout: float | None = None) -> dict[str, int]:
    """Delete ``sources`` (paths as stored, paths to the same files, or unique file names) from the index.

    All names are matched before anything is deleted, so a typo removes nothing.
    Returns the number of tiles removed per source.
    """
    store = TileStore.open(db)
    with store.writing(lock_timeout):
        known = store.sources()
        matched = list(dict.fromkeys(_match_source(name, known, store.path) for name in sources))
        removed = {source: store.remove_source(source) for source in matched}
        if any(removed.values()):
            store.optimize()
        return removed


def optimize_index(db: str | Path, lock_timeout: float | None = None) -> dict[str, Any]:
    """``georet optimize``: compact the table and (re)build its approximate vector index, under the writer lock."""
    store = TileStore.open(db)
    with store.writing(lock_timeout):
        store.optimize()
        return {"tiles": store.count(), "vector_index": store.build_vector_index()}


def _match_source(name: str, known: dict[str, Any], index_dir: Path) -> str:
    if name in known:
        return name
    resolved = str(Path(name).expanduser().resolve())
    if resolved in known:
        return resolved
    by_name = [source for source in known if Path(source).name == name]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        raise GeoretError(f"{name!r} matches several sources in {index_dir}; give the full path: {', '.join(by_name)}")
    listing = ", ".join(Path(source).name for source in known) or "none"
    raise GeoretError(f"no source {name!r} in {index_dir}; its sources: {listing}")


def require_writable(path: Path) -> None:
    """A one-line error before any write to an index on a read-only folder or file system."""
    if not os.access(path, os.W_OK):
        raise ReadOnlyError(f"{path} is read-only; georet can query it but not change it (copy the folder to extend it)")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise GeoretError(f"{path}: {MANIFEST_NAME} is unreadable or corrupt") from None
    return check_manifest(manifest, path)


def check_manifest(manifest: Any, where: str | Path) -> dict[str, Any]:
    """``manifest`` if this georet can read it, else a one-line error naming the index."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION or "model" not in manifest:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise GeoretError(f"{where}: unsupported georet index format {found!r}")
    return manifest


def sql_string(value: str) -> str:
    """Quote a value for a LanceDB filter expression."""
    return "'" + value.replace("'", "''") + "'"
