"""Which tiles a search may return: one rule (inside an area, of a scene, acquired when, of a raster whose
writing has finished) in the three forms the search strategies need, so a cold search of the table and a warm
one of the catalog never disagree.

A raster's rows are committed in batches while it is indexed; its manifest entry says ``incomplete`` before
the first and ``complete`` after the last. A search reads the manifest before the table, so hiding the
sources the manifest calls unfinished means no answer ever holds part of a raster, whatever a writer in
another process is doing (docs/reliability.md).

LanceDB has no geometry predicates and stores dates as ISO text of any precision, so a filter is
* a SQL **prefilter** (:meth:`TileFilter.where`) on the bounds columns, the scene and the date text, which
  may keep a few tiles too many and never too few;
* a **mask** over the in-memory catalog (:meth:`TileFilter.mask`), the same prefilter on its columns;
* an **exact test** of one stored row (:meth:`TileFilter.keeps`): its scene, its footprint against the
  area, its date range against ``when``. Both prefilters are completed by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from georet.geo.dates import DateRange
from georet.index import sql_string

if TYPE_CHECKING:
    from georet.search.catalog import TileCatalog
    from georet.search.request import SearchRequest


@dataclass(frozen=True)
class TileFilter:
    """Tiles inside ``area`` (EPSG:4326), of ``scene``, acquired ``when`` (None: any), and of none of the
    ``unfinished`` sources (rasters being written, or whose writing stopped)."""

    area: BaseGeometry | None = None
    scene: str | None = None
    when: DateRange | None = None
    unfinished: frozenset[str] = frozenset()

    @classmethod
    def of(cls, request: SearchRequest, unfinished: frozenset[str] = frozenset()) -> TileFilter:
        return cls(request.area, request.scene, request.when_range, unfinished)

    @property
    def keeps_all(self) -> bool:
        return self.area is None and self.scene is None and self.when is None and not self.unfinished

    @property
    def keeps_none(self) -> bool:
        """An area that lies outside every CRS a search can test (an empty geometry)."""
        return self.area is not None and self.area.is_empty

    def where(self) -> str | None:
        """The SQL prefilter (None: no filter). An ISO date of any precision that shares a day with ``when``
        sorts at or after its start's year and at or before its end."""
        clauses = [f"scene = {sql_string(self.scene)}"] if self.scene is not None else []
        if self.area is not None:
            minx, miny, maxx, maxy = self.area.bounds
            clauses.append(f"maxx >= {minx!r} AND minx <= {maxx!r} AND maxy >= {miny!r} AND miny <= {maxy!r}")
        if self.when is not None:
            clauses.append(f"acquired >= '{self.when.start.year:04d}' AND acquired <= '{self.when.end.isoformat()}'")
        if self.unfinished:
            clauses.append(f"source NOT IN ({', '.join(sql_string(s) for s in sorted(self.unfinished))})")
        return " AND ".join(clauses) or None

    def mask(self, catalog: TileCatalog) -> np.ndarray:
        """(tiles,) bool: the prefilter over the catalog (dates exactly, the area by bounds)."""
        kept = np.ones(len(catalog), dtype=bool)
        if self.scene is not None:
            kept &= catalog.scenes == self.scene
        if self.when is not None:
            kept &= catalog.dated_within(self.when)
        if self.area is not None:
            minx, miny, maxx, maxy = self.area.bounds
            b = catalog.bounds
            kept &= (b[:, 2] >= minx) & (b[:, 0] <= maxx) & (b[:, 3] >= miny) & (b[:, 1] <= maxy)
        if self.unfinished:
            kept &= ~catalog.of_sources(self.unfinished)
        return kept

    def keeps(self, row: dict[str, Any]) -> bool:
        """The exact test of one stored row (``scene``, footprint WKB in ``geometry``, ISO date in ``acquired``)."""
        if self.scene is not None and row.get("scene") != self.scene:
            return False
        if row.get("source") in self.unfinished:
            return False
        if self.area is not None and not shapely.intersects(shapely.from_wkb(row["geometry"]), self.area):
            return False
        if self.when is None:
            return True
        acquired = row.get("acquired")
        return acquired is not None and DateRange.of(acquired).overlaps(self.when)  # undated tiles never

    def without_scene(self) -> TileFilter:
        """The same area and dates, any scene (a change query's earlier tiles)."""
        return TileFilter(self.area, None, self.when, self.unfinished)
