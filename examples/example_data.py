"""Inputs for the example notebooks: a real raster and a land-cover layer derived from it.

``example_raster()`` returns the Sentinel-2 scene from ``../shared/data`` when it
is there (georet's development data) and otherwise writes a small synthetic
GeoTIFF (clearly named so) — replace it with your own raster.

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
from rasterio.transform import from_origin

HERE = Path(__file__).resolve().parent
SHARED_RASTER = HERE.parents[1] / "shared" / "data" / "rasters" / "sentinel2_virginia_rgb_10m.tif"
CLASSES = {1: "water", 2: "vegetation", 3: "bare or built"}


def example_raster(workdir: Path) -> Path:
    override = os.environ.get("GEORET_EXAMPLE_RASTER")
    if override:
        return Path(override)
    if SHARED_RASTER.exists():
        return SHARED_RASTER
    path = Path(workdir) / "synthetic_example.tif"
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 3, size=(16, 16))
    palette = np.array([[40, 70, 150], [60, 130, 50], [170, 150, 120]], np.uint8)
    data = palette[np.kron(cells, np.ones((64, 64), int))].transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(420_000, 4_160_000, 10, 10)) as dst:
        dst.write(data)
    return path


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
