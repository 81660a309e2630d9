"""Every tile of an index in memory: vectors, footprints as metric rectangles, scenes.

Relational scoring needs all tiles at once (z-scores over the whole index,
partners anywhere on the map), which a vector search cannot give; the catalog
is read once and kept until the table's version changes. A new version is read
fragment by fragment: Lance never rewrites a fragment's files, so only the
fragments a commit added or changed are read again (a writer adding one raster to
a million-tile index then costs a server its new rows, not a million).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import pyarrow as pa
import shapely

from georet.geo import SceneClass, classes_for_labels
from georet.geo.dates import DateRange
from georet.index import ANN_NPROBES, ANN_REFINE_FACTOR, TileStore
from georet.index.rows import vector_matrix
from georet.search.results import ROW_COLUMNS

EARTH_RADIUS_M = 6_371_008.8
#: Tiles whose scores estimate a phrase's mean and standard deviation in very large indexes: the
#: estimates' standard errors are then ~1 % of a standard deviation, far below what reorders hits.
STATS_SAMPLE = 16_384
#: Result-row columns the catalog keeps in memory: all but the footprint polygon (~40 bytes a tile).
MEMORY_COLUMNS = [c for c in ROW_COLUMNS if c != "geometry"]
#: attribute chunks (one or more a commit) a catalog keeps before combining them
MAX_CHUNKS = 64


class TileGeometry:
    """Every tile's footprint as a metric rectangle, with a spatial index over them.

    Distances are metres in a sinusoidal projection centred on the index: exact
    along parallels and meridians, and within a fraction of a percent for
    neighbouring tiles of one region (not meant for indexes spanning continents).
    The spatial index is one or more trees, each over a run of rows: a catalog that
    grows by a raster adds a tree over its tiles instead of rebuilding a million-tile one.
    """

    #: trees kept before they are rebuilt as one
    MAX_TREES = 8

    def __init__(self, minx: np.ndarray, miny: np.ndarray, maxx: np.ndarray, maxy: np.ndarray,
                 lon0: float | None = None):
        lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
        if lon0 is None:
            lon0 = float(np.degrees(np.angle(np.exp(1j * np.radians(lon)).mean()))) if len(lon) else 0.0
        self.lon0 = lon0
        coslat = np.cos(np.radians(lat))
        scale = np.pi / 180 * EARTH_RADIUS_M
        self.x = ((lon - lon0 + 180) % 360 - 180) * coslat * scale
        self.y = lat * scale
        self.half_w = (maxx - minx) / 2 * coslat * scale
        self.half_h = (maxy - miny) / 2 * scale
        #: (first row, rows it answers for, tree over the rectangles of rows first…)
        self.trees: list[tuple[int, int, shapely.STRtree]] = [(0, len(self.x), self._tree(0, len(self.x)))]

    def _tree(self, start: int, stop: int) -> shapely.STRtree:
        x, y, w, h = (a[start:stop] for a in (self.x, self.y, self.half_w, self.half_h))
        return shapely.STRtree(shapely.box(x - w, y - h, x + w, y + h))

    def extended(self, keep: int, bounds: np.ndarray) -> "TileGeometry":
        """The first ``keep`` tiles' geometry followed by tiles of ``bounds`` (n, 4), in the same projection;
        their trees are kept (answering for those rows only) and one is added over the new tiles."""
        added = TileGeometry(*bounds.T, lon0=self.lon0)
        grown = object.__new__(TileGeometry)
        grown.lon0 = self.lon0
        for name in ("x", "y", "half_w", "half_h"):
            kept = getattr(self, name)[:keep]
            setattr(grown, name, np.concatenate([kept, getattr(added, name)]) if len(bounds) else kept)
        kept = [(start, min(rows, keep - start), tree) for start, rows, tree in self.trees if start < keep]
        grown.trees = kept + ([(keep, len(bounds), added.trees[0][2])] if len(bounds) else [])
        if len(grown.trees) > self.MAX_TREES:
            grown.trees = [(0, len(grown.x), grown._tree(0, len(grown.x)))]
        return grown

    @cached_property
    def tile_side_m(self) -> float:
        """Median tile side in metres (the default "near" distance is a fraction of it)."""
        return float(np.median(np.concatenate([2 * self.half_w, 2 * self.half_h]))) if len(self.x) else 0.0

    def gap(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Distance in metres between the footprints of tiles i and j (0 when they touch or overlap)."""
        dx = np.maximum(0.0, np.abs(self.x[i] - self.x[j]) - self.half_w[i] - self.half_w[j])
        dy = np.maximum(0.0, np.abs(self.y[i] - self.y[j]) - self.half_h[i] - self.half_h[j])
        return np.hypot(dx, dy)

    def pairs_within(self, subjects: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
        """(subject, other) index pairs whose footprints lie within ``distance`` metres.

        The tree returns envelope hits of the subject boxes grown by ``distance``
        (no GEOS predicate, which is the slow part); the exact rectangle gap
        then decides.
        """
        grown = shapely.box(self.x[subjects] - self.half_w[subjects] - distance,
                            self.y[subjects] - self.half_h[subjects] - distance,
                            self.x[subjects] + self.half_w[subjects] + distance,
                            self.y[subjects] + self.half_h[subjects] + distance)
        queries, others = [], []
        for start, rows, tree in self.trees:
            query, other = tree.query(grown)
            answered = other < rows  # a tree may still hold rows a later version dropped
            queries.append(query[answered])
            others.append(other[answered] + start)
        hit_query, other = np.concatenate(queries), np.concatenate(others)
        subject = subjects[hit_query]
        keep = self.gap(subject, other) <= distance
        return subject[keep], other[keep]

    def overlapping(self, subjects: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(subject, other, shared) for distinct tiles whose footprints share at least ``share`` of the smaller
        one (``shared``: that share): the same place, also when two acquisitions' grids are shifted by a few
        pixels."""
        subject, other = self.pairs_within(subjects, 0.0)
        keep = subject != other
        subject, other = subject[keep], other[keep]
        wide = np.minimum(self.x[subject] + self.half_w[subject], self.x[other] + self.half_w[other]) \
            - np.maximum(self.x[subject] - self.half_w[subject], self.x[other] - self.half_w[other])
        high = np.minimum(self.y[subject] + self.half_h[subject], self.y[other] + self.half_h[other]) \
            - np.maximum(self.y[subject] - self.half_h[subject], self.y[other] - self.half_h[other])
        area = 4 * np.minimum(self.half_w[subject] * self.half_h[subject], self.half_w[other] * self.half_h[other])
        shared = np.clip(wide, 0, None) * np.clip(high, 0, None) / area
        keep = shared >= share
        return subject[keep], other[keep], shared[keep]


@dataclass(frozen=True)
class FragmentRows:
    """Where one Lance fragment's rows sit in a catalog (``start:stop``), and what made them: ``key`` is the
    fragment's id, data files and deletion file, so an equal key means equal rows."""

    key: tuple
    start: int
    stop: int


def fragment_key(fragment) -> tuple:
    """What a fragment's rows are made of: its id, its data files (new ones when columns are added or
    rewritten) and its deletion file (a new one at every delete)."""
    return fragment.fragment_id, tuple(f.path for f in fragment.metadata.files), fragment.deletion_file()


@dataclass
class TileCatalog:
    """All vectors and footprints of an index in memory, for relational scoring."""

    version: int
    tile_ids: list[str]
    vectors: np.ndarray  # (n, dim) float32, unit length
    bounds: np.ndarray  # (n, 4) minx, miny, maxx, maxy in EPSG:4326
    scenes: np.ndarray  # (n,) object: scene label or "" / None
    dataset: object = None  # the Lance dataset at ``version``: row i of the catalog is its row i
    #: the result-row columns but the footprint (:data:`MEMORY_COLUMNS`), strings dictionary-encoded
    attributes: pa.Table | None = None
    #: the rows of each Lance fragment, in table order (what a later version's read can reuse)
    fragments: tuple[FragmentRows, ...] = ()
    #: the buffer ``vectors`` is a view of, when a later version may append to it in place
    arena: "VectorArena | None" = None

    @cached_property
    def geometry(self) -> TileGeometry:
        """Every footprint as a metric rectangle, with a spatial index: built on first use, since only
        relational, change and dissolving searches ask, and a million tiles' tree takes about a second."""
        return TileGeometry(*self.bounds.T)

    def positions(self, tile_ids: Sequence[str]) -> np.ndarray:
        """Catalog positions of tiles by id (ids a search of the same table version returned)."""
        return np.array([self.index_of[t] for t in tile_ids], dtype=int)

    def nearest(self, query: np.ndarray, k: int, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Positions and cosine distances of the ``k`` tiles nearest to ``query`` by the table's vector index
        (:data:`~georet.index.ANN_NPROBES` probes, an exact re-rank of ``ANN_REFINE_FACTOR``·k unless
        ``refine`` is off), at the catalog's version.

        The exact re-rank is done here (:meth:`rerank`), on the vectors in memory: Lance's would read the
        candidates' vectors from disk again (12.2 ms a query at a million tiles against 9.4, the same tiles
        in the same order on 50 real captions: ``experiments/fast_queries``)."""
        if refine:
            return self.rerank(self.candidates(query, k * ANN_REFINE_FACTOR), query, k)
        found = self._search(query, k)
        return self.positions(found["tile_id"].to_pylist()), found["_distance"].to_numpy()

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray:
        """Positions of the ``n`` tiles nearest to ``query`` by the vector index alone (its approximate
        distances, not re-ranked): what :meth:`rerank` orders exactly for this or a nearby query."""
        return self.positions(self._search(query, n)["tile_id"].to_pylist())

    def rerank(self, positions: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` of ``positions`` nearest to ``query`` by exact cosine distance, nearest first."""
        distances = 1.0 - self.vectors[positions] @ np.asarray(query, dtype=self.vectors.dtype)
        best = np.argsort(distances, kind="stable")[:k]
        return positions[best], distances[best]

    def _search(self, query: np.ndarray, k: int) -> pa.Table:
        """Lance's nearest neighbours by the vector index, asked directly: LanceDB's query builder adds ~1.5 ms
        of async round trips to a 10 ms search."""
        nearest = {"column": "vector", "q": query, "k": k, "nprobes": ANN_NPROBES, "metric": "cosine"}
        return self.dataset.to_table(columns=["tile_id", "_distance"], nearest=nearest)

    def rows(self, positions: Sequence[int]) -> dict[int, dict]:
        """Result rows (:data:`~georet.search.results.ROW_COLUMNS`) of some tiles, by catalog position.

        Everything but the footprint comes from memory; the footprints are one
        random-access read of k rows. Taking every column from the table cost
        ~14 ms at a million tiles (each numeric column ~2 ms at random
        positions), a filter on tile ids 100+ ms.
        """
        wanted = sorted({int(p) for p in positions})
        if not wanted:
            return {}
        attributes = self.attributes.take(pa.array(wanted)).to_pylist()
        footprints = self.dataset.take(wanted, columns=["geometry"])["geometry"].to_pylist()
        return {p: {**row, "geometry": wkb} for p, row, wkb in zip(wanted, attributes, footprints)}

    def __len__(self) -> int:
        return len(self.tile_ids)

    def of_sources(self, sources: frozenset[str]) -> np.ndarray:
        """(tiles,) bool: the tiles of any of ``sources``."""
        encoded = self.attributes.column("source").combine_chunks()  # dictionary-encoded (see _compact)
        wanted = np.array([value in sources for value in encoded.dictionary.to_pylist()] + [False])
        return wanted[encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)]

    @cached_property
    def date_codes(self) -> tuple[list[str], np.ndarray]:
        """The distinct acquisition dates, oldest first, and each tile's position among them (-1: undated)."""
        encoded = self.attributes.column("acquired").combine_chunks()  # dictionary-encoded (see _compact)
        values = encoded.dictionary.to_pylist()
        order = sorted(range(len(values)), key=lambda i: (DateRange.of(values[i]).start, values[i]))
        rank = np.empty(len(values) + 1, dtype=int)
        rank[order] = np.arange(len(values))
        rank[-1] = -1
        indices = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
        return [values[i] for i in order], rank[indices]

    @cached_property
    def date_groups(self) -> tuple[np.ndarray | None, np.ndarray]:
        """Catalog positions sorted by acquisition date (undated first), and where each date's run starts: the
        per-date statistics of a change query then cost a gather and a sum, not a pass per date."""
        return group_positions(self.date_codes[1])

    def dated_within(self, when: DateRange) -> np.ndarray:
        """Whether each tile's acquisition date shares a day with ``when`` (undated tiles never do)."""
        dates, codes = self.date_codes
        inside = np.array([DateRange.of(d).overlaps(when) for d in dates] + [False], dtype=bool)
        return inside[codes]

    @cached_property
    def index_of(self) -> dict[str, int]:
        """Row of each tile id in the catalog."""
        return {tile_id: i for i, tile_id in enumerate(self.tile_ids)}

    @cached_property
    def stats_vectors(self) -> np.ndarray:
        """The vectors of a fixed random sample of at most :data:`STATS_SAMPLE` tiles, to estimate the mean and
        spread of a phrase's scores (kept: gathering them costs more than scoring them)."""
        n = len(self)
        if n <= STATS_SAMPLE:
            return self.vectors
        return self.vectors[np.sort(np.random.default_rng(0).choice(n, STATS_SAMPLE, replace=False))]

    @cached_property
    def _scene_encoding(self) -> tuple[list[str], np.ndarray]:
        """Scene labels and each tile's position among them (-1: none), from the dictionary-encoded column the
        catalog keeps: a pass over integers, where one over a million labels takes a third of a second (paid at
        every table version a server sees)."""
        kept = self.attributes is not None and "scene" in self.attributes.column_names
        column = self.attributes.column("scene").combine_chunks() if kept else pa.array(self.scenes, pa.string())
        encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        return encoded.dictionary.to_pylist(), encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(int)

    @cached_property
    def scene_classes(self) -> list[SceneClass]:
        """The distinct scene labels of the tiles, sorted, with their prompt words."""
        labels, codes = self._scene_encoding
        return classes_for_labels(labels[i] for i in np.unique(codes) if i >= 0)

    @cached_property
    def scene_codes(self) -> np.ndarray:
        """Each tile's position in :attr:`scene_classes`; -1 for a tile without scene."""
        labels, codes = self._scene_encoding
        column = {c.label: i for i, c in enumerate(self.scene_classes)}
        return np.array([column.get(label, -1) for label in labels] + [-1], dtype=int)[codes]

    @classmethod
    def read(cls, store: TileStore, previous: "TileCatalog | None" = None) -> "TileCatalog":
        """Read the catalog of the table's current version (columns an older table lacks are null), taking the
        rows of fragments ``previous`` holds unchanged from it and reading only the others."""
        dataset = store.dataset
        missing = store.missing_columns(MEMORY_COLUMNS)
        kept = {f.key: f for f in previous.fragments} if previous is not None else {}
        fragments = dataset.get_fragments()
        keys = [fragment_key(f) for f in fragments]
        unread = [f for f, key in zip(fragments, keys) if key not in kept]
        # nothing to reuse: every fragment in one parallel scan (also what gives an empty table its columns)
        fresh = _read_rows(dataset, unread if len(unread) < len(fragments) else None, missing) if unread \
            or not fragments else None
        counts = iter([f.count_rows() for f in unread])
        parts, layout, start, offset = [], [], 0, 0
        for key in keys:  # each fragment's rows: a slice of the previous catalog, or of the rows just read
            if key in kept:
                parts.append((previous, kept[key].start, kept[key].stop))
            else:
                n = next(counts)
                parts.append((fresh, offset, offset + n))
                offset += n
            layout.append(FragmentRows(key, start, start + parts[-1][2] - parts[-1][1]))
            start = layout[-1].stop
        return _assemble(int(dataset.version), parts or [(fresh, 0, 0)], tuple(layout), dataset)


def _read_rows(dataset, fragments: list | None, missing: list[str]) -> TileCatalog:
    """The catalog rows of some fragments (None: all), in table order: a catalog of them alone."""
    table = dataset.scanner(columns=list(dict.fromkeys(["vector", "minx", "miny", "maxx", "maxy",
                                                        *(c for c in MEMORY_COLUMNS if c not in missing)])),
                            fragments=fragments).to_table()
    for name in missing:
        table = table.append_column(name, pa.nulls(len(table), pa.string()))
    ids = table["tile_id"].to_pylist()
    bounds = np.column_stack([table[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy")]).reshape(len(ids), 4)
    return TileCatalog(-1, ids, vector_matrix(table), bounds, np.asarray(table["scene"].to_pylist(), dtype=object),
                       None, _compact(table.select(MEMORY_COLUMNS)))


def _assemble(version: int, parts: list[tuple[TileCatalog, int, int]], layout: tuple[FragmentRows, ...],
              dataset) -> TileCatalog:
    """One catalog from row ranges ``(catalog, start, stop)`` of others.

    Ranges that continue each other are taken as one slice. A catalog taken whole keeps its arrays (and its
    spatial index); one that is the start of the previous catalog plus new rows (a writer added a raster or
    removed the last one) keeps the previous vectors in place (:class:`VectorArena`) and derives its id
    lookup, so a million-tile catalog is not copied at every commit."""
    merged: list[list] = []
    for source, start, stop in parts:
        if merged and merged[-1][0] is source and merged[-1][2] == start:
            merged[-1][2] = stop
        elif stop > start or not merged:
            merged.append([source, start, stop])
    first, head_stop = merged[0][0], merged[0][2]
    if len(merged) == 1 and merged[0][1] == 0 and head_stop == len(first):
        catalog = TileCatalog(version, first.tile_ids, first.vectors, first.bounds, first.scenes, dataset,
                              first.attributes, layout, first.arena)
        for built in ("geometry", "index_of"):  # the same rows: what was derived from them holds
            if built in first.__dict__:
                catalog.__dict__[built] = first.__dict__[built]
        return catalog
    grows = merged[0][1] == 0 and all(source is not first for source, _, _ in merged[1:])
    ids = [t for source, start, stop in merged for t in source.tile_ids[start:stop]]
    added = [source.vectors[start:stop] for source, start, stop in merged[1:]]
    vectors, arena = None, first.arena
    if grows and not added:  # rows dropped from the end only
        vectors = arena.view(head_stop) if arena is not None else first.vectors[:head_stop]
    elif grows and arena is not None:
        vectors = arena.extended(head_stop, added)
    if vectors is None:
        vectors, arena = VectorArena.holding([source.vectors[start:stop] for source, start, stop in merged])
    attributes = pa.concat_tables([source.attributes.slice(start, stop - start) for source, start, stop in merged])
    catalog = TileCatalog(version, ids, vectors,
                          np.concatenate([source.bounds[start:stop] for source, start, stop in merged]),
                          np.concatenate([source.scenes[start:stop] for source, start, stop in merged]), dataset,
                          _compact(attributes) if attributes.column(0).num_chunks > MAX_CHUNKS else attributes,
                          layout, arena)
    if grows and "geometry" in first.__dict__:
        catalog.geometry = first.geometry.extended(head_stop, catalog.bounds[head_stop:])
    if grows and "index_of" in first.__dict__:  # the previous lookup, less the rows dropped, plus the new ones
        lookup = dict(first.index_of)
        for tile_id in first.tile_ids[head_stop:]:
            lookup.pop(tile_id, None)
        lookup.update((tile_id, head_stop + i) for i, tile_id in enumerate(ids[head_stop:]))
        catalog.__dict__["index_of"] = lookup
    return catalog


class VectorArena:
    """A buffer of tile vectors with room to grow; catalogs hold views of its first rows.

    Rows a live view holds are never changed, so an older catalog stays valid while a newer one extends the
    buffer in place: past the end of every live view (a raster added; also once the catalog that still held a
    removed raster's rows is gone). Otherwise the newer catalog copies into an arena of its own."""

    #: room kept for rows not yet written, as a share of the rows held
    SPARE = 0.25

    def __init__(self, buffer: np.ndarray):
        self.buffer = buffer
        self._lock = threading.Lock()
        self._views: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> a live view

    @classmethod
    def holding(cls, pieces: list[np.ndarray]) -> "tuple[np.ndarray, VectorArena]":
        """A view of a new arena holding ``pieces`` in order (the one copy an incompatible change costs)."""
        n, dim = sum(len(p) for p in pieces), max((p.shape[1] for p in pieces if p.size), default=0)
        arena = cls(np.empty((n + int(n * cls.SPARE) + 1, dim), dtype=np.float32))
        if n:
            np.concatenate(pieces, out=arena.buffer[:n])
        return arena.view(n), arena

    def view(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows, counted as held while the view lives."""
        with self._lock:
            return self._register(self.buffer[:rows])

    def extended(self, keep: int, added: list[np.ndarray]) -> np.ndarray | None:
        """A view of the first ``keep`` rows followed by ``added``, written in place; None where a live view
        holds rows past ``keep`` or the room is short."""
        more = sum(len(a) for a in added)
        with self._lock:
            if any(len(view) > keep for view in self._views.values()) or keep + more > len(self.buffer):
                return None
            view = self._register(self.buffer[:keep + more])  # the rows past ``keep`` are now this view's
        np.concatenate(added, out=self.buffer[keep:keep + more])
        return view

    def _register(self, view: np.ndarray) -> np.ndarray:
        self._views[id(view)] = view
        return view


def group_positions(codes: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Positions sorted by ``codes`` (stable; None when they already are, as rows written raster by raster
    mostly are), and the start of each code's run in that order."""
    order = np.argsort(codes, kind="stable")
    in_order = bool(np.all(order == np.arange(len(order))))
    return None if in_order else order, np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])


def _compact(table: pa.Table) -> pa.Table:
    """The columns with few distinct values (source file, CRS, scene) dictionary-encoded: a million tiles
    of one raster then hold one copy of its name, not a million."""
    return pa.table([column.combine_chunks().dictionary_encode() if name in ("source", "source_crs", "scene",
                                                                               "acquired")
                     else column.combine_chunks() for name, column in zip(table.column_names, table.columns)],
                    names=table.column_names)
