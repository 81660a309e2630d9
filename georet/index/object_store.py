"""Indexes in object stores: ``--db s3://bucket/prefix`` (and gs://, az://: whatever Lance reaches).

An object store has no atomic rename and no file locks, so the manifest
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

import json
import re
from contextlib import contextmanager
from typing import Any, Iterator

from georet.errors import GeoretError
from georet.index.store import (FORMAT_VERSION, TABLE_NAME, TileStore, check_manifest, describe_mismatch, now,
                                tile_schema)

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
            raise GeoretError(f"no georet index at {uri} (build one with `georet index RASTER --db {uri}`)")
        text = dataset.config().get(MANIFEST_KEY)
        if text is None:
            raise GeoretError(f"{uri} is not a georet index (its {TABLE_NAME} table has no georet manifest)")
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
        if cls.exists(uri):
            store = cls.open(uri)
            problem = describe_mismatch(store.model_identity, model_identity)
            if problem:
                raise GeoretError(f"cannot add to {uri}: {problem}; use a new --db")
        elif cls._dataset(uri) is not None:
            raise GeoretError(f"{uri} holds a Lance table that is not a georet index; refusing to write into it")
        else:
            store = cls(uri, {"format": FORMAT_VERSION, "created": now(), "updated": now(),
                              "model": {"identity": model_identity, "spec": model_spec}, "sources": {}})
            try:
                store._db.create_table(TABLE_NAME, schema=tile_schema(model_identity["dim"]))
            except Exception as exc:  # no bucket, no permission, no credentials: the store says which
                raise GeoretError(f"{uri}: cannot create the index: {store_message(exc)}") from None
            store.save_manifest()
        store.drop_duplicate_tiles()
        yield store

    def refresh(self) -> None:
        if self._table is not None:
            self._table.checkout_latest()
        dataset = self._dataset(self.path)
        if dataset is not None and dataset.version != self._manifest_stamp:
            self.manifest = _parse(dataset.config().get(MANIFEST_KEY, "{}"), self.path)
            self._manifest_stamp = dataset.version

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
