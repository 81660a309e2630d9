"""Areas (to search in, or to index): a bbox in any CRS and/or polygons → one EPSG:4326 geometry to filter tiles by."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from georet.errors import InputError, NotFoundError


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"minx,miny,maxx,maxy"`` (or a 4-sequence) → floats, checked for order."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise InputError("bbox", f"must be minx,miny,maxx,maxy numbers; got {text!r}") from None
    if len(values) != 4 or not all(np.isfinite(values)):
        raise InputError("bbox", f"must be four numbers minx,miny,maxx,maxy; got {text!r}")
    minx, miny, maxx, maxy = values
    if minx >= maxx or miny >= maxy:
        raise InputError("bbox", f"must have minx < maxx and miny < maxy; got {text!r}")
    return minx, miny, maxx, maxy


def _crs(value: str) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError:
        raise InputError("bbox_crs", f"not a CRS: {value!r} (use e.g. EPSG:3857)") from None


def search_area(bbox: str | Sequence[float] | None = None, bbox_crs: str | None = None,
                within: str | Path | BaseGeometry | gpd.GeoDataFrame | None = None) -> BaseGeometry | None:
    """The area to search in, as one EPSG:4326 geometry (None = everywhere).

    ``bbox_crs`` (default EPSG:4326) says in which CRS ``bbox`` is given; alone it is an error.
    """
    areas: list[BaseGeometry] = []
    if bbox is None and bbox_crs is not None:
        raise InputError("bbox_crs", "says in which CRS the bounding box is given; give the box too")
    if bbox is not None:
        box = shapely.box(*parse_bbox(bbox))
        crs = _crs(bbox_crs or "EPSG:4326")
        if crs.is_geographic:
            minx, miny, maxx, maxy = box.bounds
            if not (-180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90):
                raise InputError("bbox", f"{bbox!r} is outside lon/lat range; for projected coordinates give its CRS too")
        areas.append(_to_lonlat(box, crs))
    if within is not None:
        areas.append(_read_area(within))
    if not areas:
        return None
    return shapely.intersection_all(areas) if len(areas) > 1 else areas[0]


def _to_lonlat(box: BaseGeometry, crs: pyproj.CRS) -> BaseGeometry:
    """A bbox given in ``crs`` as a lon/lat polygon, clipped to where ``crs`` is defined.

    Beyond its domain a projection wraps or diverges (x = 1e9 in web mercator
    is some longitude modulo 360), which would silently search the wrong
    place; such a box is clipped to the CRS's area of use, and refused if
    nothing of it is left.
    """
    lonlat = pyproj.CRS.from_epsg(4326)
    if crs == lonlat:
        return box
    forward = pyproj.Transformer.from_crs(crs, lonlat, always_xy=True)
    if not _round_trips(box, crs, forward):
        domain = _projected_area_of_use(crs)
        clipped = box.intersection(domain) if domain is not None else shapely.Polygon()
        if clipped.is_empty or not _round_trips(clipped, crs, forward):
            where = f" (x {domain.bounds[0]:.0f}…{domain.bounds[2]:.0f}, y {domain.bounds[1]:.0f}…{domain.bounds[3]:.0f})" \
                if domain is not None else ""
            raise InputError("bbox", f"lies outside the area where {crs.to_string()} is defined{where}")
        box = clipped
    return shapely.make_valid(shapely.transform(_dense(box), lambda xy: np.column_stack(forward.transform(xy[:, 0], xy[:, 1]))))


def _dense(geom: BaseGeometry) -> BaseGeometry:
    minx, miny, maxx, maxy = geom.bounds
    return shapely.segmentize(geom, max(maxx - minx, maxy - miny) / 16)


def _round_trips(geom: BaseGeometry, crs: pyproj.CRS, forward: pyproj.Transformer) -> bool:
    """True when every boundary point maps to lon/lat and back to itself (within a millimetre per km)."""
    xy = shapely.get_coordinates(_dense(geom))
    lon, lat = forward.transform(xy[:, 0], xy[:, 1])
    back = pyproj.Transformer.from_crs(pyproj.CRS.from_epsg(4326), crs, always_xy=True)
    x, y = back.transform(lon, lat)
    scale = max(1.0, float(np.abs(xy).max()))
    return bool(np.all(np.isfinite([lon, lat, x, y])) and np.allclose(np.column_stack([x, y]), xy, rtol=0,
                                                                      atol=1e-6 * scale))


def _projected_area_of_use(crs: pyproj.CRS) -> BaseGeometry | None:
    area = crs.area_of_use
    if area is None:
        return None
    to_crs = pyproj.Transformer.from_crs(pyproj.CRS.from_epsg(4326), crs, always_xy=True)
    bounds = to_crs.transform_bounds(area.west, area.south, area.east, area.north, densify_pts=21)
    return shapely.box(*bounds) if np.all(np.isfinite(bounds)) else None


def _read_area(within) -> BaseGeometry:
    if isinstance(within, BaseGeometry):
        return within
    if isinstance(within, gpd.GeoDataFrame):
        frame = within
    else:
        path = Path(within).expanduser()
        if not path.exists():
            raise NotFoundError(f"within: no such file: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = gpd.read_file(path)
        except Exception:
            raise InputError("within", f"{path} is not a readable vector file") from None
    if frame.crs is None:
        raise InputError("within", "the vector layer has no CRS")
    if frame.empty:
        raise InputError("within", "the vector layer has no features")
    return shapely.make_valid(frame.to_crs(4326).geometry.union_all())
