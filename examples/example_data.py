"""Inputs for the example notebooks: a real raster and a land-cover layer derived from it.

``example_raster()`` returns ``$GEORET_EXAMPLE_RASTER`` when set (your own raster),
else the Sentinel-2 scene from ``../shared/data`` when it is there (georet's
development data), else the real-imagery demo raster that ships with georet.
``tile_size()`` picks a tile size that gives a similar number of tiles on each.

``rgb_landcover()`` derives a coarse land-cover layer (water / vegetation /
bare-built) from the raster's colours and polygonizes it: crude, but real
polygons of real places, good enough to show how georet uses a land-cover layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely.geometry
from rasterio.enums import Resampling

from georet.demo import DEMO_RASTER

HERE = Path(__file__).resolve().parent
SHARED_RASTER = HERE.parents[1] / "shared" / "data" / "rasters" / "sentinel2_virginia_rgb_10m.tif"
CLASSES = {1: "water", 2: "vegetation", 3: "bare or built"}


def example_raster() -> Path:
    override = os.environ.get("GEORET_EXAMPLE_RASTER")
    if override:
        return Path(override)
    return SHARED_RASTER if SHARED_RASTER.exists() else DEMO_RASTER


def tile_size(raster: Path, across: int, smallest: int = 64) -> int:
    """Tile side in pixels giving about ``across`` tiles over the raster's short side."""
    with rasterio.open(raster) as src:
        return max(smallest, min(src.width, src.height) // across)


def rgb_landcover(raster: Path, out_path: Path, decimate: int = 8) -> gpd.GeoDataFrame:
    """Colour rules on a decimated read → polygons with a ``landcover`` field, saved to ``out_path``."""
    with rasterio.open(raster) as src:
        shape = (3, src.height // decimate, src.width // decimate)
        rgb = src.read([1, 2, 3], out_shape=shape, resampling=Resampling.average).astype(float)
        valid = src.dataset_mask(out_shape=shape[1:]) > 0
        transform = src.transform * src.transform.scale(src.width / shape[2], src.height / shape[1])
        crs = src.crs
    lo, hi = np.percentile(rgb[:, valid], [2, 98], axis=1)
    red, green, blue = ((rgb - lo[:, None, None]) / (hi - lo)[:, None, None]).clip(0, 1)
    classes = np.full(red.shape, 3, np.uint8)
    classes[(green > red) & (green >= blue)] = 2
    classes[(blue > red) & (blue > green * 0.95) & (red + green + blue < 1.5)] = 1
    classes[~valid] = 0
    shapes = rasterio.features.shapes(classes, mask=classes > 0, transform=transform)
    labels, polygons = zip(*((CLASSES[int(v)], shapely.geometry.shape(geom)) for geom, v in shapes))
    frame = gpd.GeoDataFrame({"landcover": labels}, geometry=list(polygons), crs=crs)
    frame = frame.dissolve("landcover").reset_index()
    frame.to_file(out_path)
    return frame
