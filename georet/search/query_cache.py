"""Query vectors kept by model and text: a repeated query skips the text tower, and a cold one skips loading it.

The web map and the QGIS panel ask the same query again each time a user pans
or changes k; a short query costs nine sentences through MiniLM and the
anchoring. A vector depends only on the model and the text (never on the
index's tiles: feedback, examples and the scene prior are computed from it
afterwards), so it is kept under a key of the model's identity, the wording
settings and the text with its whitespace normalised.

In memory (the server's warm index) the cache is a bounded LRU; the CLI also
keeps one file per model beside the vocabulary cache (``cache_dir("queries")``),
read on the first lookup and written whole (atomically) after a query added to
it, so a repeated ``georet query`` never loads the text tower at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from georet.files import atomic_write
from georet.geo import TILE_LABEL_TEMPLATES, read_classes
from georet.geo.scenes import ANCHOR_TEMPERATURE, ANCHOR_WEIGHT

#: bumped when what a vector is made of changes outside the model's identity and the constants keyed below
QUERY_CACHE_FORMAT = 1
#: vectors kept per model: 4096 × 256 float32 is 4 MiB
QUERY_CACHE_SIZE = 4096


def normalised(text: str) -> str:
    """The text as the tokenizers read it: runs of whitespace are one space, none at the ends."""
    return " ".join(text.split())


def query_model_key(identity: dict[str, Any], wording: dict[str, Any]) -> str:
    """A digest naming what turns text into vectors: the model's identity and the wording settings."""
    payload = json.dumps([QUERY_CACHE_FORMAT, identity, wording], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def wording_settings(short_query_words: int) -> dict[str, Any]:
    """The settings outside the model that shape a query's vector (wordings, anchoring, vocabulary)."""
    return {"templates": list(TILE_LABEL_TEMPLATES), "short_words": short_query_words,
            "anchor": [ANCHOR_WEIGHT, ANCHOR_TEMPERATURE],
            "classes": [[c.label, c.prompt_words] for c in read_classes()]}


class QueryVectorCache:
    """A bounded, thread-safe LRU of query vectors per model key; with ``folder``, also kept on disk there."""

    def __init__(self, capacity: int = QUERY_CACHE_SIZE, folder: Path | None = None):
        if capacity < 1:
            raise ValueError(f"a query cache holds at least one vector, not {capacity}")
        self.capacity, self.folder = capacity, folder
        self._entries: dict[str, OrderedDict[str, np.ndarray]] = {}
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key: str, text: str) -> np.ndarray | None:
        with self._lock:
            entries = self._model_entries(key)
            vector = entries.get(normalised(text))
            if vector is not None:
                entries.move_to_end(normalised(text))
            return vector

    def put(self, key: str, text: str, vector: np.ndarray) -> None:
        with self._lock:
            entries = self._model_entries(key)
            entries[normalised(text)] = np.asarray(vector, dtype=np.float32).copy()
            entries.move_to_end(normalised(text))
            while len(entries) > self.capacity:
                entries.popitem(last=False)
            self._changed.add(key)

    def save(self) -> None:
        """Write each model's file that changed since it was read, whole; a read-only cache is left alone (the
        next cold query pays the encoding again, nothing more)."""
        if self.folder is None:
            return
        with self._lock:
            for key in sorted(self._changed):
                entries = self._entries[key]
                with contextlib.suppress(OSError):
                    atomic_write(self._path(key), lambda tmp, entries=entries: _write_npz(tmp, entries))
            self._changed.clear()

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.npz"

    def _model_entries(self, key: str) -> OrderedDict[str, np.ndarray]:
        if key not in self._entries:
            entries: OrderedDict[str, np.ndarray] = OrderedDict()
            if self.folder is not None:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    with np.load(self._path(key)) as stored:
                        texts, vectors = stored["texts"], stored["vectors"]
                        entries.update((str(t), v) for t, v in zip(texts[-self.capacity:],
                                                                   vectors[-self.capacity:]))
            self._entries[key] = entries
        return self._entries[key]


def _write_npz(path: Path, entries: OrderedDict[str, np.ndarray]) -> None:
    with open(path, "wb") as out:  # a file object: numpy would add ".npz" to a temporary file's name
        np.savez(out, texts=np.array(list(entries), dtype=str), vectors=np.stack(list(entries.values())))


#: results kept per open index: a web map asks the same search again each time the user pans
RESULT_CACHE_SIZE = 256


class ResultCache:
    """The results of recent searches of one index, valid while its table stays at the version they were made
    at (any write, relabelling or new vector index makes a new version, so nothing stale is ever returned).

    Only requests that are wholly described by their fields are kept: text, area, dates, scene, options and
    example tile ids. Example images and saved label sets (which change beside the table) always search.
    """

    def __init__(self, capacity: int = RESULT_CACHE_SIZE):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: Any, version: Any) -> tuple | None:
        """What names one :class:`~georet.search.request.SearchRequest`'s result at a table version (with
        whatever else its result depends on: the sources still being written), or None when its result may
        change without them changing."""
        examples = (*request.like, *request.unlike)
        if request.labels is not None or not all(isinstance(e, str) for e in examples):
            return None
        return (version, request.text, request.k, None if request.area is None else request.area.wkb,
                request.scene, request.relational, request.near_m, request.scene_prior, request.like,
                request.unlike, request.min_score, request.dissolve, request.scorer,
                *(None if r is None else (r.start, r.end)
                  for r in (request.when_range, request.from_range, request.to_range)))

    def get(self, key: tuple | None) -> Any:
        """A copy of the kept result (callers may change what they get), or None."""
        if key is None:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
        return _copy(found)

    def put(self, key: tuple | None, result: Any) -> None:
        if key is None:
            return
        with self._lock:
            self._entries[key] = _copy(result)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def _copy(frame: Any) -> Any:
    out = frame.copy()
    out.attrs = dict(frame.attrs)
    return out
