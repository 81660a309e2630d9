"""Raster → tiles: open a raster, pick its bands and stretch, read one tile window at a time.

Memory never grows with the size of the mosaic: only one window is read at a
time, and GDAL's block cache is capped while georet reads (:func:`gdal_env`).
The grid itself (windows, ids, footprints) is :mod:`georet.geo.grid`.
"""

from __future__ import annotations

import io
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Interleaving, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.warp import transform as warp_points
from rasterio.windows import Window
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from georet.errors import GeoretError, InputError
from georet.geo.grid import TileGrid, TilingParams, metres_per_pixel, tile_and_stride_px
from georet.geo.sources import RasterRef, as_ref, gdal_env

THUMBNAIL_PX = 64
_STRETCH_PERCENTILES = (2.0, 98.0)
#: ``stretch="auto"`` stretches a uint8 raster whose darkest 2 % of some band sit at or above this value
#: (haze lifts the blacks) or whose bands' 2–98 % ranges span less than :data:`NARROW_RANGE` on average
#: (flat, low-contrast colour); both chosen on hazy and clean mosaics of real chips
#: (experiments/colour_stretch)
HAZE_FLOOR = 40
NARROW_RANGE = 150
_STRETCH_SAMPLES_PER_AXIS = 8
_STRETCH_SAMPLE_PX = 64
#: A raster with overviews is stretched from the first overview at most this many px a side:
#: one small read, where 64 sample windows of a remote COG would fetch 64 blocks.
_STRETCH_OVERVIEW_PX = 1024
#: Largest side a tile is read at: a larger window is read averaged down to this (from overviews where the
#: raster has them), since models take ~100-300 px. Memory and transfer stay those of a small tile.
MAX_READ_PX = 512
#: Largest side of an example image (``read_image``): a chip, not a whole scene.
MAX_EXAMPLE_PX = 4096
#: Largest block (one compressed tile or strip, decoded whole by GDAL for any pixel in it) georet reads:
#: what one read may hold in memory. Real products use blocks of at most a few MB.
MAX_BLOCK_BYTES = 256 * 2**20
#: Largest ratio of a local raster's pixels (the bands read) to its file size, once it inflates past
#: :data:`BOMB_MIN_BYTES`. Deflate cannot compress beyond 1032:1, so beyond this a file is a decompression bomb
#: (or blocks never written): gigabytes of nothing an index would spend hours on.
MAX_INFLATION = 2000
BOMB_MIN_BYTES = 2**30

#: per-band (lows, highs) a raster's values are stretched from to 0–255; None: its uint8 values as they are
BandStretch = tuple[np.ndarray, np.ndarray]


@dataclass
class Tile:
    """One tile read from a raster, ready to embed."""

    tile_id: str
    source: str
    window: Window
    pixels: np.ndarray  # (side, side, 3) uint8: the tile, read at most MAX_READ_PX a side
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
    """An open raster with its tile grid. Use as a context manager.

    ``area`` (a lon/lat geometry) restricts the tiles to those that touch it. ``stretch`` is
    the raster's :attr:`band_stretch` when another source of it has estimated it already (at
    another tile size, on the Ray driver): sampling again would read the same pixels, many
    ranges of a remote COG.
    """

    ref: RasterRef
    params: TilingParams
    area: BaseGeometry | None = None
    stretch: BandStretch | None | Literal["estimate"] = "estimate"
    dataset: rasterio.io.DatasetReader = field(init=False, repr=False)
    crs: CRS = field(init=False)
    bands: tuple[int, ...] = field(init=False)
    grid: TileGrid = field(init=False)
    metres_per_pixel: float = field(init=False)  # ground size of one pixel

    def __enter__(self) -> "RasterSource":
        """Open the raster and choose its bands and stretch. GDAL's options are entered for the opening and
        for each read, never for the object's life: rasterio keeps them per thread, and an open source may be
        read from other threads (a server, a Ray worker) than the one that opened it."""
        self._scope = ExitStack()
        self.ref = as_ref(self.ref)
        with gdal_env(self.ref.remote), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self.dataset = self._scope.enter_context(rasterio.open(self.ref.href))
            except RasterioIOError as exc:
                self._scope.close()
                raise GeoretError(self._open_error(exc)) from None
            try:
                self._configure()
            except BaseException:
                self._scope.close()
                raise
        return self

    def __exit__(self, *exc) -> None:
        self._scope.close()

    def _open_error(self, exc: RasterioIOError) -> str:
        """One line: a local file that is not a raster, or what the server said about a URL."""
        if not self.ref.remote:
            return f"{self.ref.name}: not a readable raster (corrupt or unsupported format)"
        detail = (str(exc).strip().splitlines() or ["unreadable"])[0]
        if "does not exist in the file system" in detail:
            detail = "not found, or not a raster GDAL can read"
        elif "AWS_NO_SIGN_REQUEST" in detail:
            detail = ("no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; "
                      "AWS_NO_SIGN_REQUEST=YES for a public bucket)")
        return f"{self.ref.name}: cannot open: {detail}"

    @classmethod
    def read_image(cls, path: str | Path, bands: tuple[int, ...] | None = None) -> np.ndarray:
        """A whole small image (an example chip: GeoTIFF, PNG, JPEG) as (h, w, 3) uint8.

        Bands and contrast stretch are chosen as for tiles, so an example chip
        cut from a raster looks to the model like that raster's tiles; no
        georeference is needed. A uint8 chip is left as it is: its own colours
        say nothing about the raster it was cut from (whose tiles a chip of a
        well-exposed raster must match).
        """
        source = cls(as_ref(path), TilingParams(bands=bands, stretch="never"))
        with gdal_env(source.ref.remote), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                dataset = rasterio.open(source.ref.href)
            except RasterioIOError:
                raise GeoretError(f"{source.ref.name}: not a readable image (corrupt or unsupported format)") from None
            with dataset:
                if max(dataset.width, dataset.height) > MAX_EXAMPLE_PX:
                    raise GeoretError(f"{source.ref.name}: {dataset.width}x{dataset.height} px is a scene, not an example "
                                      f"chip (at most {MAX_EXAMPLE_PX} px a side); cut the example out of it")
                source.dataset = dataset
                source.bands = source._choose_bands()
                source._stretch = source._estimate_stretch()
                data, valid = source._read_raw(Window(0, 0, dataset.width, dataset.height))
        pixels = source.to_uint8(data)
        pixels[:, ~valid] = 0
        rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
        return np.ascontiguousarray(rgb.transpose(1, 2, 0))

    def _configure(self) -> None:
        ds, params = self.dataset, self.params
        if ds.crs is None:
            if not params.assume_crs:
                raise GeoretError(f"{self.ref.name}: raster has no CRS; pass {{assume_crs}} EPSG:xxxx if you know it", names=("assume_crs",))
            try:
                self.crs = CRS.from_user_input(params.assume_crs)
            except Exception:
                raise InputError("assume_crs", f"not a CRS: {params.assume_crs!r}") from None
        else:
            self.crs = ds.crs
        self._check_georeference()
        self.bands = self._choose_bands()
        self._check_inflation()
        self.metres_per_pixel = metres_per_pixel(ds.transform, self.crs, (ds.bounds.bottom + ds.bounds.top) / 2)
        tile_px, stride_px = tile_and_stride_px(params, self.metres_per_pixel, ds.width, ds.height)
        self.grid = TileGrid(self.ref.name, ds.width, ds.height, ds.transform, self.crs, tile_px, stride_px)
        self._stretch = self._estimate_stretch() if isinstance(self.stretch, str) else self.stretch

    def _check_georeference(self) -> None:
        """Refuse a pixel grid no footprint can be drawn from: none, degenerate, not finite, or in a CRS with no
        way to longitude and latitude (an engineering or local grid)."""
        name, transform = self.ref.name, self.dataset.transform
        if transform.is_identity:
            raise GeoretError(f"{name}: raster has no geotransform (pixel grid not georeferenced)")
        if not all(np.isfinite(transform[:6])):
            raise GeoretError(f"{name}: its geotransform is not finite ({tuple(transform[:6])})")
        if transform.determinant == 0:
            raise GeoretError(f"{name}: its geotransform is degenerate: pixels of {transform.a} x {transform.e} "
                              "map units have no area")
        if not (self.crs.is_geographic or self.crs.is_projected):
            raise GeoretError(f"{name}: its CRS ({self.crs.to_string()[:60]}) is neither geographic nor projected, "
                              "so its tiles cannot be placed on the map; reproject it (gdalwarp -t_srs EPSG:xxxx)")
        centre = transform * (self.dataset.width / 2, self.dataset.height / 2)
        try:
            lon, lat = warp_points(self.crs, "EPSG:4326", [centre[0]], [centre[1]])
        except Exception:  # noqa: BLE001 - PROJ's errors have no common type; all mean the same here
            lon, lat = [np.nan], [np.nan]
        if not (np.isfinite(lon[0]) and np.isfinite(lat[0])):
            raise GeoretError(f"{name}: its centre cannot be transformed from {self.crs.to_string()[:60]} to "
                              "longitude and latitude (a CRS PROJ cannot use, or coordinates outside it)")

    def _check_inflation(self) -> None:
        """Refuse what would decode to gigabytes per read (one huge compressed block) or in all (a few KB that
        inflate beyond any real compression): bounded memory and time for any file a user is handed."""
        ds = self.dataset
        item = np.dtype(ds.dtypes[self.bands[0] - 1]).itemsize
        per_block = ds.count if ds.interleaving == Interleaving.pixel else 1
        rows, cols = ds.block_shapes[self.bands[0] - 1]
        block = rows * cols * item * per_block
        if ds.compression is not None and block > MAX_BLOCK_BYTES:
            raise GeoretError(f"{self.ref.name}: one compressed block is {rows} x {cols} px ({block / 2**20:,.0f} MB "
                              f"decoded whole for any pixel in it; at most {MAX_BLOCK_BYTES // 2**20} MB); "
                              "retile it (gdal_translate -co TILED=YES)")
        if self.ref.remote:
            return
        inflated = ds.width * ds.height * len(self.bands) * item
        on_disk = max(1, Path(self.ref.href).stat().st_size)
        if inflated > BOMB_MIN_BYTES and inflated / on_disk > MAX_INFLATION:
            raise GeoretError(f"{self.ref.name}: {_size(on_disk)} on disk inflate to {_size(inflated)} of pixels "
                              f"({inflated / on_disk:,.0f}:1, beyond any real compression): a decompression bomb, or "
                              "blocks that were never written")

    def _choose_bands(self) -> tuple[int, ...]:
        ds = self.dataset
        if self.params.bands:
            bad = [b for b in self.params.bands if b > ds.count]
            if bad:
                raise InputError("bands", f"{self.ref.name} has {ds.count} band(s); band {bad[0]} was asked for")
            return self.params.bands
        interp = list(ds.colorinterp)
        rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
        if len(rgb) == 3:
            return tuple(rgb)
        return (1, 2, 3) if ds.count >= 3 else (1,)

    def _estimate_stretch(self) -> BandStretch | None:
        """Per-band 2–98 % percentiles from a fixed grid of small sample windows (None: leave uint8 as is).

        One stretch per raster (not per tile) keeps tiles comparable; sampling
        keeps it cheap and bounded in memory for any raster size.
        """
        uint8 = all(self.dataset.dtypes[b - 1] == "uint8" for b in self.bands)
        if uint8 and self.params.stretch == "never":
            return None
        if uint8 and self.params.stretch == "auto":
            try:
                stretch = self._percentiles()
            except GeoretError:  # a damaged file: leave it as is here, its tiles fail (and say so) when read
                return None
            return stretch if needs_stretch(*stretch) else None
        return self._percentiles()

    @property
    def stretched(self) -> bool:
        """Whether this raster's bands are stretched (always for non-uint8 data)."""
        return self._stretch is not None

    @property
    def band_stretch(self) -> BandStretch | None:
        """The stretch this raster's tiles are read with, for other sources of it (``stretch=``)."""
        return self._stretch

    def _percentiles(self) -> BandStretch:
        samples: list[list[np.ndarray]] = [[] for _ in self.bands]
        for data, valid in self._stretch_samples():
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

    def _stretch_samples(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The whole raster from an overview when it has one (one small read), else a grid of windows."""
        ds = self.dataset
        overviews = ds.overviews(self.bands[0])
        if overviews:
            factor = next((f for f in overviews if max(ds.width, ds.height) / f <= _STRETCH_OVERVIEW_PX), overviews[-1])
            shape = (max(1, ds.height // factor), max(1, ds.width // factor))
            yield self._read_raw(Window(0, 0, ds.width, ds.height), out_shape=shape)
            return
        win = min(_STRETCH_SAMPLE_PX, ds.width, ds.height)
        for row in np.linspace(0, ds.height - win, _STRETCH_SAMPLES_PER_AXIS).astype(int):
            for col in np.linspace(0, ds.width - win, _STRETCH_SAMPLES_PER_AXIS).astype(int):
                yield self._read_raw(Window(int(col), int(row), win, win))

    def _read_raw(self, window: Window,
                  out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Band data (C, h, w) and a validity mask (h, w) from nodata/alpha/internal masks.

        A pixel is invalid only where every selected band is masked, as in GDAL's
        dataset mask: a real 0 in one band of a nodata=0 raster is still data.
        """
        try:
            shape = (len(self.bands), *out_shape) if out_shape else None
            with gdal_env(self.ref.remote):  # per read: see __enter__
                data = self.dataset.read(self.bands, window=window, out_shape=shape, resampling=Resampling.average)
                valid = np.any(self.dataset.read_masks(self.bands, window=window, out_shape=shape) > 0, axis=0)
        except RasterioError as exc:  # a truncated or damaged file fails here, not when opened
            cause = exc.__cause__ or exc  # rasterio's own message only says "see previous exception"
            detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise GeoretError(f"{self.ref.name}: read failed in the window at column {int(window.col_off)}, "
                              f"row {int(window.row_off)} ({int(window.width)}x{int(window.height)} px): "
                              f"{detail}") from None
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def read(self, window: Window) -> Tile:
        shrink = min(1.0, MAX_READ_PX / self.grid.tile_px)
        out_shape = None if shrink == 1.0 else (max(1, round(window.height * shrink)), max(1, round(window.width * shrink)))
        data, valid = self._read_raw(window, out_shape)
        pixels = self.to_uint8(data)
        pixels[:, ~valid] = 0
        size = round(self.grid.tile_px * shrink)
        if pixels.shape[1:] != (size, size):  # raster smaller than one tile: pad as invalid
            padded = np.zeros((pixels.shape[0], size, size), dtype=np.uint8)
            padded[:, : pixels.shape[1], : pixels.shape[2]] = pixels
            pixels = padded
        valid_fraction = float(valid.sum()) / float(size * size)
        rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
        poly_src, poly = self.grid.footprint(window)
        return Tile(self.grid.tile_id(window), self.ref.name, window, np.ascontiguousarray(rgb.transpose(1, 2, 0)),
                    valid_fraction, poly_src, poly)

    def to_uint8(self, data: np.ndarray) -> np.ndarray:
        """Band data (C, h, w) as the index's colours: this raster's stretch, or its uint8 values as they are."""
        if self._stretch is None:
            return data.astype(np.uint8, copy=True)
        lo, hi = self._stretch
        scaled = (data.astype(np.float32) - lo[:, None, None].astype(np.float32)) / (hi - lo)[:, None, None].astype(np.float32)
        return (np.nan_to_num(np.clip(scaled, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)

    def windows(self) -> list[Window]:
        """The windows to tile: all of them, or those touching ``area``."""
        return self.grid.windows(self.area)

    def iter_tiles(self, windows: Sequence[Window] | None = None) -> Iterator[Tile]:
        """The tiles of ``windows`` (default: :meth:`windows`), in order (each read under GDAL's options)."""
        for window in self.windows() if windows is None else windows:
            yield self.read(window)


def _size(n: float) -> str:
    """``n`` bytes for a person: 131 KB, 12.0 GB."""
    if n < 1024:
        return f"{n:,.0f} bytes"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:,.1f} {unit}"
    return f"{n / 1024:,.1f} GB"


def needs_stretch(lows: np.ndarray, highs: np.ndarray) -> bool:
    """Whether a uint8 raster with these per-band 2–98 % percentiles is hazy or flat enough to stretch.

    Well-exposed imagery (aerial orthophotos, the chips the models were
    trained on) already spans most of 0–255 from near black; a stretch would
    only shift its colours. Hazy or colour-cast products (Sentinel-2 and
    Landsat "visual" files) have lifted blacks or narrow bands.
    """
    return bool(np.max(lows) >= HAZE_FLOOR or np.mean(highs - lows) < NARROW_RANGE)
