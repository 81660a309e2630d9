"""Web-map tiles of an indexed raster, so a map can show the imagery under the hits.

rio-tiler cuts and reprojects a web-mercator tile (z/x/y) out of the raster,
reading only the blocks (or overview) it needs, from a local file or a COG URL
alike; the raster's own band choice and contrast stretch, the ones its index
tiles were made with (:class:`~georet.geo.raster.RasterSource`), turn the data
into colours, so the map shows what the model saw.
"""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

from georet.geo.grid import TilingParams
from georet.geo.raster import RasterSource
from georet.geo.sources import RasterRef, gdal_env

TILE_PX = 256


class MapTiles:
    """The web-mercator tiles of one raster. The raster stays open until :meth:`close` (or the end of a
    ``with`` block); one tile is read at a time, under GDAL's options for that read only."""

    def __init__(self, ref: RasterRef, tiling: TilingParams):
        from rio_tiler.io import Reader

        self._source = RasterSource(ref, tiling).__enter__()  # bands and stretch as the index used them
        self._reader = Reader(None, dataset=self._source.dataset)
        self._lock = threading.Lock()  # a GDAL dataset serves one thread at a time

    def close(self) -> None:
        with self._lock:
            self._source.__exit__(None, None, None)

    def __enter__(self) -> "MapTiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        return tuple(float(v) for v in self._reader.get_geographic_bounds("EPSG:4326"))

    @property
    def zoom_range(self) -> tuple[int, int]:
        """The zoom levels worth asking for: from a few tiles over the raster to its full resolution."""
        return int(self._reader.minzoom), int(self._reader.maxzoom)

    def png(self, z: int, x: int, y: int) -> bytes | None:
        """The tile as an RGBA PNG (transparent outside the raster and where it has no data), or None when
        the tile lies outside the raster."""
        from rio_tiler.errors import TileOutsideBounds

        with self._lock, gdal_env(self._source.ref.remote):
            try:
                image = self._reader.tile(x, y, z, tilesize=TILE_PX, indexes=self._source.bands)
            except TileOutsideBounds:
                return None
        pixels = self._source.to_uint8(np.asarray(image.array.data))
        rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
        alpha = np.asarray(image.mask, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(np.dstack([*rgb, alpha])).save(buffer, format="PNG")
        return buffer.getvalue()
