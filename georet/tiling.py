"""Raster → tiles: a deterministic grid of windows over each raster, read one
window at a time so memory never grows with the size of the mosaic.

Edge policy ("shift"): tiles never hang over the raster edge. Along each axis the
grid starts at 0 and steps by ``stride``; if the last tile stops short of the
edge, one more tile is added flush with the edge (so it overlaps its
neighbour). Every pixel is covered and every tile is full size. A raster
smaller than one tile gives a single tile padded with invalid pixels.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyproj
import rasterio
import rasterio.env
import shapely
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from georet.errors import GeoretError

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg"}
THUMBNAIL_PX = 64
_STRETCH_PERCENTILES = (2.0, 98.0)
_STRETCH_SAMPLES_PER_AXIS = 8
_STRETCH_SAMPLE_PX = 64
_FOOTPRINT_VERTICES_PER_EDGE = 8
_METRES_PER_DEGREE = 111_320.0
#: GDAL's block cache defaults to 5 % of RAM and fills as a big mosaic streams past;
#: a row of tiles needs only one row of blocks, so a small cap keeps memory flat.
#: An explicit GDAL_CACHEMAX in the environment wins.
GDAL_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TilingParams:
    """How rasters are cut into tiles; recorded in the index manifest.

    ``tile_size`` is pixels (``256``) or ground distance (``"200m"``, ``"1.5km"``);
    ``stride`` is pixels and defaults to the tile size (no overlap).
    """

    tile_size: int | str = 256
    stride: int | None = None
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5
    assume_crs: str | None = None

    def __post_init__(self) -> None:
        parse_tile_size(self.tile_size)
        if self.stride is not None and self.stride < 1:
            raise GeoretError(f"--stride must be a positive number of pixels, got {self.stride}")
        if not 0.0 <= self.min_valid <= 1.0:
            raise GeoretError(f"--min-valid must lie in [0, 1], got {self.min_valid}")
        if self.bands is not None and len(self.bands) not in (1, 3):
            raise GeoretError(f"--bands takes 1 or 3 band numbers, got {len(self.bands)}")

    def to_dict(self) -> dict:
        return {"tile_size": self.tile_size, "stride": self.stride,
                "bands": list(self.bands) if self.bands else None,
                "min_valid": self.min_valid, "assume_crs": self.assume_crs, "edge_policy": "shift"}


def parse_tile_size(value: int | str) -> tuple[float, str]:
    """``256`` → (256, 'px'); ``"200m"`` → (200, 'm'); ``"1.5km"`` → (1500, 'm')."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(px|m|km)?", text)
    if not match or float(match.group(1)) <= 0:
        raise GeoretError(f"tile size must look like 256, 256px, 200m or 1.5km; got {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "px"
    if unit == "km":
        return number * 1000.0, "m"
    if unit == "px" and not number.is_integer():
        raise GeoretError(f"a tile size in pixels must be a whole number; got {value!r}")
    return number, unit


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` → (4, 3, 2)."""
    if not text:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise GeoretError(f"--bands takes band numbers like 4,3,2; got {text!r}") from None
    if any(b < 1 for b in bands):
        raise GeoretError(f"band numbers start at 1; got {text!r}")
    return bands


def discover_rasters(paths: Sequence[str | Path]) -> list[Path]:
    """Files, directories (searched recursively for rasters) and VRTs → sorted raster paths."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            hits = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not hits:
                raise GeoretError(f"no rasters ({', '.join(sorted(RASTER_SUFFIXES))}) in directory {path}")
            found.extend(hits)
        elif path.is_file():
            found.append(path)
        else:
            raise GeoretError(f"no such file or directory: {path}")
    return sorted(dict.fromkeys(p.resolve() for p in found))


def grid_offsets(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis under the "shift" edge policy."""
    if length <= tile:
        return [0]
    offsets = list(range(0, length - tile + 1, stride))
    if offsets[-1] + tile < length:
        offsets.append(length - tile)
    return offsets


@dataclass
class Tile:
    """One tile read from a raster, ready to embed."""

    tile_id: str
    source: str
    window: Window
    pixels: np.ndarray  # (tile_px, tile_px, 3) uint8
    valid_fraction: float
    footprint_src: Polygon
    footprint: Polygon  # EPSG:4326, lon/lat

    def thumbnail_png(self) -> bytes:
        image = Image.fromarray(self.pixels).resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=False)
        return buf.getvalue()


@dataclass
class RasterSource:
    """An open raster with its tile grid. Use as a context manager."""

    path: Path
    params: TilingParams
    dataset: rasterio.io.DatasetReader = field(init=False, repr=False)
    crs: CRS = field(init=False)
    bands: tuple[int, ...] = field(init=False)
    tile_px: int = field(init=False)
    stride_px: int = field(init=False)

    def __enter__(self) -> "RasterSource":
        if "GDAL_CACHEMAX" not in os.environ:
            rasterio.env.set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_BYTES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self.dataset = rasterio.open(self.path)
            except RasterioIOError:
                raise GeoretError(f"{self.path}: not a readable raster (corrupt or unsupported format)") from None
        try:
            self._configure()
        except Exception:
            self.dataset.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.dataset.close()

    def _configure(self) -> None:
        ds, params = self.dataset, self.params
        if ds.crs is None:
            if not params.assume_crs:
                raise GeoretError(f"{self.path}: raster has no CRS; pass --assume-crs EPSG:xxxx if you know it")
            try:
                self.crs = CRS.from_user_input(params.assume_crs)
            except Exception:
                raise GeoretError(f"--assume-crs: not a CRS: {params.assume_crs!r}") from None
        else:
            self.crs = ds.crs
        if ds.transform.is_identity:
            raise GeoretError(f"{self.path}: raster has no geotransform (pixel grid not georeferenced)")
        self.bands = self._choose_bands()
        self.tile_px = self._tile_size_in_pixels()
        self.stride_px = params.stride or self.tile_px
        self._to_lonlat = pyproj.Transformer.from_crs(
            pyproj.CRS.from_wkt(self.crs.to_wkt()), pyproj.CRS.from_epsg(4326), always_xy=True)
        self._stretch = self._estimate_stretch()
        self._path_digest = hashlib.sha1(str(self.path).encode()).hexdigest()[:8]

    def _choose_bands(self) -> tuple[int, ...]:
        ds = self.dataset
        if self.params.bands:
            bad = [b for b in self.params.bands if b > ds.count]
            if bad:
                raise GeoretError(f"{self.path}: has {ds.count} band(s), --bands asks for band {bad[0]}")
            return self.params.bands
        interp = list(ds.colorinterp)
        rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
        if len(rgb) == 3:
            return tuple(rgb)
        return (1, 2, 3) if ds.count >= 3 else (1,)

    def _tile_size_in_pixels(self) -> int:
        size, unit = parse_tile_size(self.params.tile_size)
        if unit == "px":
            return int(size)
        res_x = abs(self.dataset.transform.a)
        if self.crs.is_geographic:
            lat = (self.dataset.bounds.bottom + self.dataset.bounds.top) / 2
            metres_per_pixel = res_x * _METRES_PER_DEGREE * math.cos(math.radians(lat))
        else:
            metres_per_pixel = res_x * self.crs.linear_units_factor[1]
        return max(1, round(size / metres_per_pixel))

    def _estimate_stretch(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-band 2–98 % percentiles from a fixed grid of small sample windows.

        One stretch per raster (not per tile) keeps tiles comparable; sampling
        keeps it cheap and bounded in memory for any raster size.
        """
        ds = self.dataset
        if all(ds.dtypes[b - 1] == "uint8" for b in self.bands):
            return None
        samples: list[list[np.ndarray]] = [[] for _ in self.bands]
        win = min(_STRETCH_SAMPLE_PX, ds.width, ds.height)
        for row in np.linspace(0, ds.height - win, _STRETCH_SAMPLES_PER_AXIS).astype(int):
            for col in np.linspace(0, ds.width - win, _STRETCH_SAMPLES_PER_AXIS).astype(int):
                window = Window(int(col), int(row), win, win)
                data, valid = self._read_raw(window)
                for i in range(len(self.bands)):
                    samples[i].append(data[i][valid])
        lows, highs = [], []
        for values in samples:
            values = np.concatenate(values) if values else np.array([])
            if values.size == 0:
                lo, hi = 0.0, 1.0
            else:
                lo, hi = np.percentile(values, _STRETCH_PERCENTILES)
                hi = hi if hi > lo else lo + 1.0
            lows.append(lo)
            highs.append(hi)
        return np.array(lows, dtype=np.float64), np.array(highs, dtype=np.float64)

    def _read_raw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Band data (C, h, w) and a validity mask (h, w) from nodata/alpha/internal masks.

        A pixel is invalid only where every selected band is masked, as in GDAL's
        dataset mask: a real 0 in one band of a nodata=0 raster is still data.
        """
        data = self.dataset.read(self.bands, window=window)
        valid = np.any(self.dataset.read_masks(self.bands, window=window) > 0, axis=0)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def windows(self) -> list[Window]:
        ds = self.dataset
        return [Window(col, row, min(self.tile_px, ds.width - col), min(self.tile_px, ds.height - row))
                for row in grid_offsets(ds.height, self.tile_px, self.stride_px)
                for col in grid_offsets(ds.width, self.tile_px, self.stride_px)]

    def tile_id(self, window: Window) -> str:
        """Stable across runs: file stem + path digest + pixel window."""
        return (f"{self.path.stem}-{self._path_digest}-c{int(window.col_off)}-r{int(window.row_off)}"
                f"-{int(window.width)}x{int(window.height)}")

    def footprint(self, window: Window) -> tuple[Polygon, Polygon]:
        """Tile polygon in the source CRS and, densified then transformed, in EPSG:4326.

        Densifying keeps the lon/lat outline honest where projected straight
        edges become curves (large tiles, high latitudes).
        """
        left, bottom, right, top = rasterio.windows.bounds(window, self.dataset.transform)
        poly_src = box(left, bottom, right, top)
        edge = max(right - left, top - bottom) / _FOOTPRINT_VERTICES_PER_EDGE
        dense = shapely.segmentize(poly_src, edge)
        lonlat = shapely.transform(dense, lambda xy: np.column_stack(self._to_lonlat.transform(xy[:, 0], xy[:, 1])))
        return poly_src, lonlat

    def read(self, window: Window) -> Tile:
        data, valid = self._read_raw(window)
        pixels = self._to_uint8(data)
        pixels[:, ~valid] = 0
        size = self.tile_px
        if pixels.shape[1:] != (size, size):  # raster smaller than one tile: pad as invalid
            padded = np.zeros((pixels.shape[0], size, size), dtype=np.uint8)
            padded[:, : pixels.shape[1], : pixels.shape[2]] = pixels
            pixels = padded
        valid_fraction = float(valid.sum()) / float(size * size)
        rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
        poly_src, poly = self.footprint(window)
        return Tile(self.tile_id(window), str(self.path), window, np.ascontiguousarray(rgb.transpose(1, 2, 0)),
                    valid_fraction, poly_src, poly)

    def _to_uint8(self, data: np.ndarray) -> np.ndarray:
        if self._stretch is None:
            return data.astype(np.uint8, copy=True)
        lo, hi = self._stretch
        scaled = (data.astype(np.float32) - lo[:, None, None].astype(np.float32)) / (hi - lo)[:, None, None].astype(np.float32)
        return (np.nan_to_num(np.clip(scaled, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)

    def iter_tiles(self, skip_ids: set[str] = frozenset()) -> Iterator[Tile]:
        for window in self.windows():
            if self.tile_id(window) not in skip_ids:
                yield self.read(window)
