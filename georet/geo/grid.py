"""The tile grid of a raster: pure geometry, no I/O (like :mod:`rasterio.windows`).

Edge policy ("shift"): tiles never hang over the raster edge. Along each axis the
grid starts at 0 and steps by ``stride``; if the last tile stops short of the
edge, one more tile is added flush with the edge (so it overlaps its
neighbour). Every pixel is covered and every tile is full size. A raster
smaller than one tile gives a single tile (padded with invalid pixels when read).

Everything here is computed from the raster's size, transform and CRS alone, so
the same grid (same windows, same tile ids, same footprints) comes out of a
local file, a remote COG or a plan made on another machine.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyproj
import shapely
import shapely.prepared
from affine import Affine
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from georet.errors import GeoretError, InputError
from georet.geo.sources import RASTER_SUFFIXES, is_url, name_part

_FOOTPRINT_VERTICES_PER_EDGE = 8
_METRES_PER_DEGREE = 111_320.0
#: Tile sides georet accepts, in pixels. Below 8 px a tile shows nothing a model can
#: recognise. Memory grows with the square of the side: a batch of 32 tiles of 2048 px
#: holds 0.4 GB of pixels plus 1.6 GB while being converted for the model, which is
#: what a laptop can give; larger tiles would be shrunk to the model's ~100–300 px
#: input anyway, so a coarser overview of the raster is the way to cover more ground.
MIN_TILE_PX, MAX_TILE_PX = 8, 2048

if TYPE_CHECKING:  # rasterio is imported where a grid is cut: parsing tile sizes needs no GDAL
    from rasterio.crs import CRS
    from rasterio.windows import Window


def check_tile_px(tile_px: int, where: str = "") -> int:
    """``tile_px`` if georet can tile with it, else a one-line error (``where`` names the raster)."""
    if not MIN_TILE_PX <= tile_px <= MAX_TILE_PX:
        prefix = f"{where}: " if where else ""
        raise GeoretError(f"{prefix}tiles of {tile_px} px are outside what georet takes "
                          f"({MIN_TILE_PX}–{MAX_TILE_PX} px per side); choose another --tile-size")
    return tile_px


#: how uint8 rasters are stretched (:class:`TilingParams`)
STRETCH_MODES = ("auto", "always", "never")
#: ``tile_size`` that asks for the model's ground scale (:class:`GroundScale`)
AUTO = "auto"


@dataclass(frozen=True)
class GroundScale:
    """The scale a model sees scenes at: tiles of ``metres`` of ground, never fewer than ``min_px`` pixels,
    a ``stride`` share of a tile apart.

    Scene models learn from chips that each show a few hundred metres of ground
    (AID: 600 px at 0.5–8 m). Cut at that ground size, a tile of any raster shows
    what the model knows, whatever the sensor's pixel size: a fixed pixel count
    shows one roof at 0.25 m and a whole town at 10 m. On coarse imagery, where
    that ground is only a few pixels, the tile grows to ``min_px`` (the model's
    input size), since upsampling invents no detail. Tiles overlap because real
    scenes do not line up with any grid: a tile that straddles two scenes
    matches neither, and a neighbour shifted by a third of a tile catches the
    scene whole. The rule and its figures: docs/search.md#tile-size.
    """

    metres: float
    min_px: int
    stride: float = 2 / 3

    def __post_init__(self) -> None:
        if not self.metres > 0 or self.min_px < MIN_TILE_PX or not 0.0 < self.stride <= 1.0:
            raise GeoretError(f"a ground scale needs metres > 0, min_px >= {MIN_TILE_PX} and a stride in (0, 1]; "
                              f"got {self.metres}, {self.min_px}, {self.stride}")

    def tile_px(self, metres_per_pixel: float, width: int, height: int) -> int:
        """Tile side in pixels of a raster with this pixel size and shape.

        Never larger than the raster's shorter side (a small raster gives whole
        tiles, not one padded tile) nor :data:`MAX_TILE_PX`.
        """
        px = max(self.min_px, round(self.metres / metres_per_pixel))
        return max(MIN_TILE_PX, min(px, MAX_TILE_PX, width, height))


#: The scale of the scene chips remote-sensing text-image models learn from (AID, RSICD, RSITMD,
#: UCM: a few hundred metres at 0.3-8 m) and of georet's default input size; a model whose config
#: declares another ground size overrides the metres. 300 m tiles every 200 m were chosen on layouts
#: of validation chips, on and off the grid: docs/search.md#tile-size.
DEFAULT_GROUND_SCALE = GroundScale(metres=300.0, min_px=150, stride=2 / 3)


@dataclass(frozen=True)
class TilingParams:
    """How rasters are cut into tiles; recorded in the index manifest.

    ``tile_size`` is ``"auto"`` (each raster's tiles cover the model's ground
    ``scale``, from its pixel size; :class:`GroundScale`, filled in by
    :func:`georet.index.index_raster` from the model), pixels (``256``) or ground
    distance (``"200m"``, ``"1.5km"``); or several of them (``("auto", "1.2km")``:
    every raster is tiled at each size into the one index, and :meth:`scales`
    gives the tiling of each). ``stride`` is pixels or a fraction of the
    tile (``"2/3"``, ``0.5``); None is the scale's stride for ``auto`` tiles and
    the tile size (no overlap) for the others. ``stretch`` says
    whether uint8 rasters get the per-raster 2–98 % band stretch every other
    dtype gets: ``auto`` when their colours are hazy or cast (see
    :func:`georet.geo.raster.needs_stretch`), ``always`` or ``never``.
    """

    tile_size: int | str | tuple[int | str, ...] = AUTO
    stride: int | float | str | None = None
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5
    assume_crs: str | None = None
    stretch: Literal["auto", "always", "never"] = "auto"
    scale: GroundScale | None = None

    def __post_init__(self) -> None:
        sizes = self.tile_sizes
        if not sizes:
            raise InputError("tile_size", "names no tile size")
        for size in sizes:
            if size != AUTO:
                parse_tile_size(size)
        if len(set(map(str, sizes))) < len(sizes):
            raise InputError("tile_size", f"names a tile size twice: {','.join(map(str, sizes))}")
        if self.scale is not None and AUTO not in sizes:
            raise InputError("tile_size", f"is {self.tile_size!r}: a ground scale applies to tile size auto")
        if self.stride is not None:
            parse_stride(self.stride)
        if not 0.0 <= self.min_valid <= 1.0:
            raise InputError("min_valid", f"must lie in [0, 1], got {self.min_valid}")
        if self.bands is not None and len(self.bands) not in (1, 3):
            raise InputError("bands", f"takes 1 or 3 band numbers, got {len(self.bands)}")
        if self.stretch not in STRETCH_MODES:
            raise InputError("stretch", f"{self.stretch!r} is not one of {', '.join(STRETCH_MODES)}")

    @property
    def tile_sizes(self) -> tuple[int | str, ...]:
        """The tile sizes asked for: one, or several for an index at several scales."""
        return tuple(self.tile_size) if isinstance(self.tile_size, (tuple, list)) else (self.tile_size,)

    def scales(self) -> list["TilingParams"]:
        """One tiling per tile size, smallest first as asked (``[self]`` for one size); the ground scale goes
        with the ``auto`` size only."""
        if len(self.tile_sizes) == 1:
            return [self]
        return [replace(self, tile_size=size, scale=self.scale if size == AUTO else None) for size in self.tile_sizes]

    def to_dict(self) -> dict:
        """As the manifest records it (a re-run with equal params finds its sources complete)."""
        size = list(self.tile_sizes) if len(self.tile_sizes) > 1 else self.tile_size
        params = {"tile_size": size, "stride": self.stride,
                  "bands": list(self.bands) if self.bands else None,
                  "min_valid": self.min_valid, "assume_crs": self.assume_crs, "stretch": self.stretch,
                  "edge_policy": "shift"}
        if self.scale is not None:
            params["scale"] = {"metres": self.scale.metres, "min_px": self.scale.min_px, "stride": self.scale.stride}
        return params


def parse_stride(value: int | float | str) -> tuple[float, str]:
    """``200`` → (200, 'px'); ``"2/3"`` → (0.667, 'tile'); ``0.5`` → (0.5, 'tile').

    Whole numbers are pixels; fractions (``a/b`` or a decimal) in (0, 1] are a
    share of the tile, so one stride suits rasters whose tiles differ in pixels.
    """
    text = str(value).strip()
    if re.fullmatch(r"\d+", text) and int(text) >= 1:
        if not math.isfinite(float(text)):
            raise InputError("stride", f"is more pixels than any raster has: {value!r}")
        return float(text), "px"
    ratio = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    decimal = re.fullmatch(r"\d*\.\d+", text)
    share = (int(ratio.group(1)) / int(ratio.group(2)) if ratio and int(ratio.group(2)) else
             float(text) if decimal else 0.0)
    if not 0.0 < share <= 1.0:
        raise InputError("stride", f"takes pixels (200) or a fraction of the tile in (0, 1] (2/3, 0.5); got {value!r}")
    return share, "tile"


def stride_in_pixels(stride: int | float | str | None, tile_px: int) -> int:
    """The step between tiles in pixels: the tile size when None."""
    if stride is None:
        return tile_px
    number, unit = parse_stride(stride)
    return int(number) if unit == "px" else max(1, round(number * tile_px))


def parse_tile_sizes(text: str) -> int | str | tuple[int | str, ...]:
    """The command line's ``--tile-size``: ``auto``, ``256``, ``200m`` or several, comma-separated
    (``auto,1.2km``: one index at each scale); whole numbers become pixel counts."""
    sizes = tuple(int(part) if part.isdecimal() else part for part in (p.strip() for p in text.split(",")))
    return sizes if len(sizes) > 1 else sizes[0]


def parse_tile_size(value: int | str) -> tuple[float, str]:
    """``256`` → (256, 'px'); ``"200m"`` → (200, 'm'); ``"1.5km"`` → (1500, 'm')."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(px|m|km)?", text)
    if not match or not 0 < float(match.group(1)) < math.inf:
        raise InputError("tile_size", f"must look like 256, 256px, 200m or 1.5km; got {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "px"
    if unit == "km":
        return number * 1000.0, "m"
    if unit == "px":
        if not number.is_integer():
            raise InputError("tile_size", f"in pixels must be a whole number; got {value!r}")
        check_tile_px(int(number))
    return number, unit


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` → (4, 3, 2)."""
    if not text:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise InputError("bands", f"takes band numbers like 4,3,2; got {text!r}") from None
    if any(b < 1 for b in bands):
        raise InputError("bands", f"band numbers start at 1; got {text!r}")
    return bands


def grid_offsets(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis under the "shift" edge policy."""
    if length <= tile:
        return [0]
    offsets = list(range(0, length - tile + 1, stride))
    if offsets[-1] + tile < length:
        offsets.append(length - tile)
    return offsets


def name_stem(name: str) -> str:
    """The readable start of a raster's tile ids: the file stem of a path; for a URL or STAC name, its last
    part without a raster suffix (STAC item ids may hold dots)."""
    part = name_part(name)
    if is_url(name) or name.startswith("stac://"):
        suffix = PurePosixPath(part).suffix
        return part[: -len(suffix)] if suffix.lower() in RASTER_SUFFIXES else part
    return Path(part).stem


def metres_per_pixel(transform: Affine, crs: CRS, mid_latitude: float) -> float:
    """Ground size of one pixel (its width); geographic CRSs convert at ``mid_latitude`` (the raster's
    centre), which is exact enough for the tiles of one scene."""
    res_x = abs(transform.a)
    if crs.is_geographic:
        return res_x * _METRES_PER_DEGREE * math.cos(math.radians(mid_latitude))
    return res_x * crs.linear_units_factor[1]


def tile_and_stride_px(params: TilingParams, pixel_m: float, width: int, height: int) -> tuple[int, int]:
    """``params.tile_size`` (auto, pixels or ground distance) and stride → pixels of a ``width`` × ``height``
    raster whose pixels are ``pixel_m`` metres wide (:func:`metres_per_pixel`)."""
    if len(params.tile_sizes) > 1:
        raise GeoretError(f"one tile size per grid, got {params.tile_size!r}: TilingParams.scales() gives one each")
    if params.tile_size == AUTO:
        scale = params.scale or DEFAULT_GROUND_SCALE
        tile_px = scale.tile_px(pixel_m, width, height)
        return tile_px, stride_in_pixels(scale.stride if params.stride is None else params.stride, tile_px)
    size, unit = parse_tile_size(params.tile_size)
    tile_px = int(size) if unit == "px" else max(1, round(size / pixel_m))
    return tile_px, stride_in_pixels(params.stride, tile_px)


@dataclass(frozen=True)
class TileGrid:
    """Windows, stable ids and footprints of the tiles of one raster."""

    name: str  # names the tiles (a path, URL or stac:// name); never opened here
    width: int
    height: int
    transform: Affine
    crs: CRS
    tile_px: int
    stride_px: int

    def __post_init__(self) -> None:
        check_tile_px(self.tile_px, self.name)

    @cached_property
    def _id_prefix(self) -> str:
        return f"{name_stem(self.name)}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"

    @cached_property
    def _to_lonlat(self) -> pyproj.Transformer:
        return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(self.crs.to_wkt()), pyproj.CRS.from_epsg(4326),
                                           always_xy=True)

    def windows(self, area: BaseGeometry | None = None) -> list[Window]:
        """Tile windows row by row (clipped to a raster smaller than one tile): all, or those touching ``area``.

        ``area`` is lon/lat. Its bounds in the raster's CRS pick the candidate
        rows and columns (so a small area of a huge raster costs little), then
        each candidate's lon/lat footprint is tested against the area itself.
        """
        rows = grid_offsets(self.height, self.tile_px, self.stride_px)
        cols = grid_offsets(self.width, self.tile_px, self.stride_px)
        if area is not None:
            rows, cols = self._offsets_near(area, rows, cols)
        from rasterio.windows import Window

        windows = [Window(col, row, min(self.tile_px, self.width - col), min(self.tile_px, self.height - row))
                   for row in rows for col in cols]
        if area is None:
            return windows
        prepared = shapely.prepared.prep(area)
        return [w for w in windows if prepared.intersects(self.footprint(w)[1])]

    def _offsets_near(self, area: BaseGeometry, rows: list[int], cols: list[int]) -> tuple[list[int], list[int]]:
        to_src = pyproj.Transformer.from_crs(pyproj.CRS.from_epsg(4326), pyproj.CRS.from_wkt(self.crs.to_wkt()),
                                             always_xy=True)
        left, bottom, right, top = to_src.transform_bounds(*area.bounds, densify_pts=21)
        if not np.all(np.isfinite([left, bottom, right, top])):  # the area reaches where the CRS is undefined
            return rows, cols
        inverse = ~self.transform
        xs, ys = zip(*(inverse * corner for corner in ((left, top), (right, top), (left, bottom), (right, bottom))))
        col_lo, col_hi, row_lo, row_hi = min(xs), max(xs), min(ys), max(ys)
        return ([r for r in rows if r + self.tile_px >= row_lo and r <= row_hi],
                [c for c in cols if c + self.tile_px >= col_lo and c <= col_hi])

    def tile_id(self, window: Window) -> str:
        """Stable across runs: file stem + path digest + pixel window."""
        return (f"{self._id_prefix}-c{int(window.col_off)}-r{int(window.row_off)}"
                f"-{int(window.width)}x{int(window.height)}")

    def footprint(self, window: Window) -> tuple[Polygon, Polygon]:
        """Tile polygon in the source CRS and, densified then transformed, in EPSG:4326.

        Densifying keeps the lon/lat outline honest where projected straight
        edges become curves (large tiles, high latitudes).
        """
        import rasterio.windows

        left, bottom, right, top = rasterio.windows.bounds(window, self.transform)
        poly_src = box(left, bottom, right, top)
        edge = max(right - left, top - bottom) / _FOOTPRINT_VERTICES_PER_EDGE
        dense = shapely.segmentize(poly_src, edge)
        lonlat = shapely.transform(dense, lambda xy: np.column_stack(self._to_lonlat.transform(xy[:, 0], xy[:, 1])))
        return poly_src, lonlat
