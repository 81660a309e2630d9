"""Land cover per tile from the user's own layer: a scene class and a confidence for every tile.

Two sources, one interface (:class:`SceneLabeler`, which zero-shot
:class:`~georet.geo.scenes.ZeroShotScenes` also meets):

* :class:`VectorLandcover` — polygons with a class field;
* :class:`RasterLandcover` — a classified raster.

``scene`` is the class covering most of the tile, ``scene_score`` its area
fraction, and all class fractions are kept. :func:`open_landcover` picks the
reader from the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Protocol

import numpy as np

from georet.errors import GeoretError, NotFoundError
from georet.geo.scenes import SceneLabel


class SceneLabeler(Protocol):
    """Anything that labels a batch of tiles (:class:`~georet.geo.scenes.ZeroShotScenes` too)."""

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]: ...


def _majority(fractions: dict[str, float]) -> SceneLabel:
    if not fractions:
        return SceneLabel("", 0.0, {})
    scene = max(fractions, key=fractions.get)
    return SceneLabel(scene, fractions[scene], fractions)


class VectorLandcover:
    """Polygons with a class field, reprojected once to the raster's CRS and indexed with an STRtree."""

    def __init__(self, path: str | Path, field: str | None, raster_crs, raster_bounds):
        import geopandas as gpd
        import shapely

        path = Path(path)
        area = gpd.GeoSeries([shapely.box(*raster_bounds)], crs=raster_crs.to_wkt())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = gpd.read_file(path, bbox=area)
        except Exception as exc:
            raise GeoretError(f"{path}: not a readable vector file ({str(exc).splitlines()[0]})") from None
        if frame.crs is None:
            raise GeoretError(f"{path}: land-cover layer has no CRS")
        field = field or _guess_class_field(frame, path)
        if field not in frame.columns:
            raise GeoretError(f"{path}: no field {field!r}; fields are {', '.join(c for c in frame.columns if c != 'geometry')}")
        frame = frame.to_crs(raster_crs.to_wkt())
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        self.geometries = shapely.make_valid(frame.geometry.values)
        self.classes = frame[field].astype(str).to_numpy()
        self.tree = shapely.STRtree(self.geometries)

    def close(self) -> None:
        """Nothing to release: the polygons live in memory."""

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        import shapely

        out = []
        for tile in tiles:
            tile_area = tile.footprint_src.area
            hits = self.tree.query(tile.footprint_src, predicate="intersects")
            fractions: dict[str, float] = {}
            if hits.size:
                areas = shapely.area(shapely.intersection(self.geometries[hits], tile.footprint_src))
                for cls, area in zip(self.classes[hits], areas):
                    fractions[cls] = fractions.get(cls, 0.0) + float(area) / tile_area
            out.append(_majority({k: round(min(v, 1.0), 4) for k, v in fractions.items() if v > 0}))
        return out


def _guess_class_field(frame, path: Path) -> str:
    candidates = [c for c in frame.columns if c != "geometry" and frame[c].dtype == object]
    if len(candidates) == 1:
        return candidates[0]
    raise GeoretError(f"{path}: name the class field with {{landcover_field}} (text fields: {', '.join(candidates) or 'none'})", names=("landcover_field",))


class RasterLandcover:
    """A classified raster, warped on the fly onto the tiled raster's pixel grid (nearest neighbour)."""

    def __init__(self, path: str | Path, raster_dataset, raster_crs):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        path = Path(path)
        try:
            self._src = rasterio.open(path)
        except Exception:
            raise GeoretError(f"{path}: not a readable land-cover raster") from None
        if self._src.crs is None:
            self._src.close()
            raise GeoretError(f"{path}: land-cover raster has no CRS")
        self._nodata = self._src.nodata
        self._vrt = WarpedVRT(self._src, crs=raster_crs, transform=raster_dataset.transform,
                              width=raster_dataset.width, height=raster_dataset.height,
                              resampling=Resampling.nearest, nodata=self._nodata)

    def close(self) -> None:
        self._vrt.close()
        self._src.close()

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        out = []
        for tile in tiles:
            values = self._vrt.read(1, window=tile.window)
            total = float(values.size)
            if self._nodata is not None:
                values = values[values != self._nodata]
            classes, counts = np.unique(values, return_counts=True)
            fractions = {_class_name(c): round(float(n) / total, 4) for c, n in zip(classes, counts)}
            out.append(_majority(fractions))
        return out


def _class_name(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img"}


def open_landcover(path: str | Path, field: str | None, dataset, crs) -> VectorLandcover | RasterLandcover:
    """The land-cover layer at ``path`` read onto an open raster (``dataset`` with ``crs``).

    Classified rasters (``.tif``, ``.vrt``, ``.img``) are warped to the raster's
    grid; anything else is read as vector polygons. Close it after use.
    """
    if not Path(path).exists():
        raise NotFoundError(f"land-cover file not found: {path}")
    if Path(path).suffix.lower() in _RASTER_SUFFIXES:
        return RasterLandcover(path, dataset, crs)
    return VectorLandcover(path, field, crs, dataset.bounds)
