"""The k eligible tiles nearest a query vector, by the fastest of three ways for the index's size and state.

* warm (the catalog is in memory at the table's version), below the vector-index size: an exact scan of
  the vectors in memory;
* warm, with a vector index and no filter: the index gives positions, the catalog gives the rows;
* cold, or filtered past the index size: Lance's nearest neighbours with the filter's SQL as a prefilter,
  its exact test on the rows, the limit widened until ``k`` hits survive.

All three answer the same rows with the same ``score`` (cosine similarity); which one runs is a matter of
speed alone. Kept apart from :class:`~georet.search.geoindex.GeoIndex`, which decides *what* to search for.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from georet.index import ANN_NPROBES, ANN_REFINE_FACTOR, TileStore
from georet.index.rows import vector_matrix
from georet.search.catalog import TileCatalog
from georet.search.filters import TileFilter
from georet.search.results import ROW_COLUMNS

#: a filtered Lance search that keeps too few rows after the exact test asks for this many times more
WIDEN_FACTOR = 4


class NearestTiles:
    """Nearest-neighbour searches over one index: ``catalog`` reads (or returns the cached) catalog, and
    ``loaded`` returns the catalog in memory now, if any, without reading one."""

    def __init__(self, store: TileStore, catalog: Callable[[], TileCatalog],
                 loaded: Callable[[], TileCatalog | None]):
        self.store = store
        self._catalog, self._loaded = catalog, loaded
        self._vector_index: tuple[int, bool] | None = None  # (table version, whether it has an index)

    def catalog_is_current(self) -> bool:
        """Whether every vector is already in memory at the table's current version."""
        loaded = self._loaded()
        return loaded is not None and loaded.version == self.store.version

    def has_vector_index(self) -> bool:
        """Whether the table (at its current version) has an approximate vector index; asked once per version."""
        version = self.store.version
        if self._vector_index is None or self._vector_index[0] != version:
            self._vector_index = (version, self.store.has_vector_index())
        return self._vector_index[1]

    def hits(self, query: np.ndarray, k: int, where: TileFilter, with_vectors: bool = False,
             pool: np.ndarray | None = None) -> list[dict]:
        """The ``k`` eligible tiles nearest ``query`` (rows with ``score``, and ``vector`` when asked), among
        ``pool``'s candidates (catalog positions) when given."""
        current = self.catalog_is_current()
        if current and not self.has_vector_index():
            hits = self._scan_catalog(query, k, where)
        elif current and where.keeps_all:
            hits = self._nearest_in_catalog(query, k, pool)
        else:
            hits = self._search_table(query, k, where, ["vector"] if with_vectors and not current else [])
        if with_vectors and current:
            catalog = self._catalog()
            hits = [{**hit, "vector": catalog.vectors[catalog.index_of[hit["tile_id"]]]} for hit in hits]
        return hits

    def _scan_catalog(self, query: np.ndarray, k: int, where: TileFilter) -> list[dict]:
        """Warm, below the vector-index size: exact search over the vectors in memory is faster than any index."""
        catalog = self._catalog()
        cosines = catalog.vectors @ query
        return top_rows(catalog, cosines, cosines, where.mask(catalog), k, where)

    def _nearest_in_catalog(self, query: np.ndarray, k: int, pool: np.ndarray | None = None) -> list[dict]:
        """Warm, past the vector-index size, no filter: the index gives ids (or ``pool`` is re-ranked), the
        catalog's positions give the rows (selecting every column in the search costs 2.5× the ids)."""
        catalog = self._catalog()
        positions, distances = catalog.nearest(query, k) if pool is None else catalog.rerank(pool, query, k)
        rows = catalog.rows(positions)
        return [{**rows[p], "score": 1.0 - float(d)} for p, d in zip(positions, distances)]

    def _search_table(self, query: np.ndarray, k: int, where: TileFilter, extra_columns: Sequence[str] = ()
                      ) -> list[dict]:
        """Cold: Lance's nearest neighbours with the filter's SQL as a prefilter, its exact test on the rows,
        the limit widened until ``k`` hits survive.

        Through the vector index, fewer rows than asked do not mean the filter passes no more: the index only
        looks in the partitions it probes, and an area's tiles lie in many (a box of 753 tiles in a
        million-tile index gave 29). Such a short answer is asked again as an exact search over the rows the
        filter passes, which are then few."""
        missing = self.store.missing_columns(ROW_COLUMNS)
        if where.when is not None and missing:  # an index from before dates: no tile has one
            return []
        columns = [*(c for c in ROW_COLUMNS if c not in missing), *extra_columns]
        limit, exact = k, False
        short_means_all = where.where() is None or not self.has_vector_index()
        while True:
            hits = self._nearest_rows(query, limit, columns, where.where(), exact)
            kept = [h for h in hits if where.keeps(h)]
            if len(kept) >= k or len(hits) < limit and (exact or short_means_all):
                break
            if len(hits) < limit:
                exact = True
            else:
                limit *= WIDEN_FACTOR
        return [{**h, "score": 1.0 - h["_distance"]} for h in kept[:k]]

    def _nearest_rows(self, query: np.ndarray, limit: int, columns: list[str], where: str | None,
                      exact: bool = False) -> list[dict]:
        """Lance's nearest neighbours (through the vector index, its probes and an exact re-rank, when the table
        has one and ``exact`` is off; else an exact scan), filtered first by ``where``: rows with
        ``_distance``. Read with pylance alone, so a cold query never imports LanceDB."""
        if exact and where is not None:
            return self._nearest_passing(query, limit, columns, where)
        nearest = {"column": "vector", "q": query, "k": limit, "metric": "cosine"}
        if self.has_vector_index():
            nearest.update(nprobes=ANN_NPROBES, refine_factor=ANN_REFINE_FACTOR)
        return self.store.dataset.to_table(columns=[*columns, "_distance"], nearest=nearest, filter=where,
                                           prefilter=where is not None).to_pylist()

    def _nearest_passing(self, query: np.ndarray, limit: int, columns: list[str], where: str) -> list[dict]:
        """The exact nearest of the rows ``where`` passes, ranked here: the rows are read by the filter
        alone (tens of milliseconds for an area at a million tiles), where Lance's exact search with a
        prefilter compares every vector of the table (two seconds)."""
        table = self.store.dataset.to_table(columns=list(dict.fromkeys([*columns, "vector"])), filter=where)
        if not len(table):
            return []
        vectors = vector_matrix(table)
        distances = 1.0 - vectors @ np.asarray(query, dtype=vectors.dtype)
        order = np.argsort(distances, kind="stable")[:limit]
        rows = table.select(columns).take(pa.array(order, pa.int64())).to_pylist()
        return [{**row, "_distance": float(distances[i])} for row, i in zip(rows, order)]


def top_rows(catalog: TileCatalog, scores: np.ndarray, rank_key: np.ndarray, eligible: np.ndarray, k: int,
             where: TileFilter) -> list[dict]:
    """Stored rows of the ``k`` best eligible tiles by ``rank_key``, with ``score``; the filter's exact test."""
    candidates = np.flatnonzero(eligible)
    if where.area is None and len(candidates) > 4 * k:  # at a million tiles a full sort costs more than the scan
        candidates = candidates[np.argpartition(-rank_key[candidates], 4 * k)[:4 * k]]
    order = candidates[np.argsort(-rank_key[candidates], kind="stable")]
    hits: list[dict] = []
    for start in range(0, len(order), 4 * k):  # rows come in chunks: the exact area test may drop some
        chunk = order[start:start + 4 * k]
        rows = catalog.rows(chunk)
        for i in chunk:
            row = rows[int(i)]
            if where.keeps(row):
                hits.append({**row, "score": float(scores[i])})
        if len(hits) >= k:
            break
    return hits[:k]
