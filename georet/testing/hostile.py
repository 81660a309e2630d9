"""Rasters made to break an indexer, written by rasterio: what ``tests/test_hostile_input.py`` feeds
``georet index`` and what ``docs/reliability.md`` reports.

Each writer returns the path it wrote. None needs more than a few MB of disk or memory to write: the
decompression bombs are sparse GeoTIFFs (GDAL's ``SPARSE_OK``), whose blocks are never written and read
back as gigabytes of zeros from a file of a few KB.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from georet.testing.rasters import pattern

_UTM = CRS.from_epsg(32631)
_ORIGIN = (500_000.0, 5_800_000.0)


def _write(path: Path, data: np.ndarray | None, *, width: int, height: int, count: int = 3,
           transform: Affine | None = None, crs: CRS | str | None = _UTM, **profile) -> Path:
    transform = transform if transform is not None else from_origin(*_ORIGIN, 10.0, 10.0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype="uint8",
                       transform=transform, crs=crs, **profile) as dst:
        if data is not None:
            dst.write(data)
    return path


def sparse_bomb(path: Path, side: int = 65_536) -> Path:
    """A few KB on disk, ``side``² × 3 bytes (12 GB at the default) once inflated: no block is written."""
    return _write(path, None, width=side, height=side, tiled=True, blockxsize=512, blockysize=512,
                  compress="deflate", SPARSE_OK=True)


def one_huge_block(path: Path, side: int = 16_384) -> Path:
    """One block of ``side``² × 3 bytes (768 MB at the default): reading any pixel decodes all of it."""
    return _write(path, None, width=side, height=side, tiled=True, blockxsize=side, blockysize=side,
                  compress="deflate", SPARSE_OK=True)


def pixel_size(path: Path, x: float, y: float) -> Path:
    """A VRT (``path``) whose pixels are ``x`` by ``y`` map units (zero, negative or NaN) over a GeoTIFF beside
    it: GDAL will not write a degenerate geotransform into a GeoTIFF, but reads one from a VRT."""
    data = _write(path.with_suffix(".pixels.tif"), pattern(3, 256, 256), width=256, height=256)
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">'
                    f"{data.name}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
                    for b in (1, 2, 3))
    path.write_text(f'<VRTDataset rasterXSize="256" rasterYSize="256"><SRS>{_UTM.to_wkt()}</SRS>'
                    f"<GeoTransform>{_ORIGIN[0]}, {x}, 0, {_ORIGIN[1]}, 0, {y}</GeoTransform>{bands}</VRTDataset>")
    return path


def nan_geotransform(path: Path) -> Path:
    """A geotransform whose origin is NaN."""
    transform = Affine(10.0, 0.0, math.nan, 0.0, -10.0, math.nan)
    return _write(path, pattern(3, 256, 256), width=256, height=256, transform=transform)


def unreadable_crs(path: Path) -> Path:
    """An engineering CRS (a local grid in metres): there is no way from it to longitude and latitude."""
    local = CRS.from_wkt('LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["Easting",EAST],'
                         'AXIS["Northing",NORTH]]')
    return _write(path, pattern(3, 256, 256), width=256, height=256, crs=local)


def no_crs(path: Path) -> Path:
    """A georeferenced grid without any CRS."""
    return _write(path, pattern(3, 256, 256), width=256, height=256, crs=None)


def many_bands(path: Path, count: int = 200) -> Path:
    """``count`` bands of 256 × 256, tiled and band-interleaved as hyperspectral products are."""
    return _write(path, pattern(count, 256, 256), width=256, height=256, count=count, tiled=True,
                  blockxsize=128, blockysize=128, interleave="band")


def one_pixel(path: Path) -> Path:
    """A 1 × 1 raster."""
    return _write(path, np.full((3, 1, 1), 120, dtype=np.uint8), width=1, height=1)


def all_nodata(path: Path) -> Path:
    """A raster whose every pixel is its nodata value."""
    return _write(path, np.zeros((3, 512, 512), dtype=np.uint8), width=512, height=512, nodata=0)


#: every hostile raster by what it is: (file name, writer); the tests and ``benchmarks/hostile_rasters.py``
#: both read this list
RASTERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "sparse bomb: 128 KB inflating to 12 GB": ("bomb.tif", sparse_bomb),
    "one compressed block of 768 MB": ("block.tif", one_huge_block),
    "zero pixel size": ("zero.vrt", lambda p: pixel_size(p, 0.0, -10.0)),
    "NaN pixel size": ("nan-px.vrt", lambda p: pixel_size(p, math.nan, -10.0)),
    "NaN geotransform origin": ("nan.tif", nan_geotransform),
    "engineering CRS (no way to lon/lat)": ("local.tif", unreadable_crs),
    "no CRS": ("nocrs.tif", no_crs),
    "200 bands": ("bands.tif", many_bands),
    "negative pixel width (columns run west)": ("west.vrt", lambda p: pixel_size(p, -10.0, -10.0)),
    "1 x 1 pixel": ("pixel.tif", one_pixel),
    "all nodata": ("empty.tif", all_nodata),
}
