"""The imagery under the hits: an index's rasters as web-map layers, read in the colours the index saw.

Kept apart from searching: a search never opens a raster, while the map opens each of the index's
rasters once (its bands and stretch as indexed, :class:`~georet.geo.maptiles.MapTiles`) and keeps it open
for the tiles that follow, until :meth:`ImageryLayers.close`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from georet.errors import GeoretError, NotFoundError
from georet.geo import RasterRef, TilingParams
from georet.index import SourceEntry, TileStore

if TYPE_CHECKING:
    from georet.geo.maptiles import MapTiles


class ImageryLayers:
    """The rasters of one index as map layers: listed (:meth:`layers`), cut into web-mercator tiles
    (:meth:`tile`), closed (:meth:`close`). Thread-safe: the server serves map tiles from many threads."""

    def __init__(self, store: TileStore):
        self.store = store
        self._open: dict[str, MapTiles | GeoretError] = {}
        self._lock = threading.Lock()

    def layers(self) -> list[dict[str, Any]]:
        """Number (for :meth:`tile`), name, acquisition date, lon/lat bounds and zoom range of each raster; a
        raster that cannot be opened now (moved, offline) says why."""
        self.store.refresh()
        layers = []
        for number, (name, entry) in enumerate(self.store.entries().items()):
            layer = {"id": number, "name": RasterRef(name).display_name, "acquired": entry.acquired}
            tiles = self._tiles_of(name, entry)
            if isinstance(tiles, GeoretError):
                layers.append({**layer, "error": str(tiles)})
            else:
                layers.append({**layer, "bounds": tiles.bounds, "zoom": tiles.zoom_range})
        return layers

    def tile(self, number: int, z: int, x: int, y: int) -> bytes | None:
        """Web-mercator tile z/x/y of raster ``number`` as a PNG, or None outside the raster."""
        sources = list(self.store.entries().items())
        if not 0 <= number < len(sources):
            raise NotFoundError(f"no source {number} in {self.store.path} (it has {len(sources)})")
        tiles = self._tiles_of(*sources[number])
        if isinstance(tiles, GeoretError):
            raise tiles
        return tiles.png(z, x, y)

    def close(self) -> None:
        """Close every raster opened (the server does on shutdown)."""
        with self._lock:
            for tiles in self._open.values():
                if not isinstance(tiles, GeoretError):
                    tiles.close()
            self._open.clear()

    def _tiles_of(self, name: str, entry: SourceEntry) -> MapTiles | GeoretError:
        """The open map-tile reader of one source, opened once (two requests at once open it once)."""
        from georet.geo.maptiles import MapTiles  # GDAL: imported by the map's first tile, not by every search

        with self._lock:
            if name not in self._open:
                params = TilingParams(bands=entry.grid.bands or None, assume_crs=entry.tiling.get("assume_crs"),
                                      stretch=entry.tiling.get("stretch", "auto"))
                try:
                    self._open[name] = MapTiles(RasterRef(name, entry.href or name), params)
                except GeoretError as exc:
                    self._open[name] = exc
            return self._open[name]
