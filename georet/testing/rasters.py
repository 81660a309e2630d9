"""Small real GeoTIFFs for georet's tests and benchmarks, written by rasterio.

Run ``python tests/data/make_rasters.py OUTDIR`` to look at them; the test
fixtures call the same functions into a temporary folder. Every raster has a
distinct pattern per 32-px cell so tiles differ from each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

# (crs, top-left x, top-left y, pixel size): a UTM zone, lon/lat and web mercator.
GRIDS = {
    "utm": ("EPSG:32631", 500_000.0, 5_800_000.0, 10.0),     # Netherlands/Belgium, 10 m
    "lonlat": ("EPSG:4326", 4.0, 52.0, 0.0001),             # ~7–11 m pixels
    "mercator": ("EPSG:3857", 560_000.0, 6_900_000.0, 10.0),   # ~5.03 E, 52.55 N
}


def pattern(bands: int, height: int, width: int, seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    """Blocky, deterministic imagery: each 32-px cell gets its own colour plus texture."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(bands, height // 32 + 1, width // 32 + 1))
    data = np.kron(cells, np.ones((32, 32)))[:, :height, :width]
    data = data + rng.normal(0, 12, size=data.shape)
    if dtype == "uint16":
        return np.clip(data * 40 + 500, 0, 65535).astype(np.uint16)
    return np.clip(data, 0, 255).astype(dtype)


def write_raster(path: Path, grid: str = "utm", size: tuple[int, int] = (256, 256), bands: int = 3,
                 dtype: str = "uint8", nodata: float | None = None, alpha: bool = False,
                 crs: bool = True, seed: int = 0, data: np.ndarray | None = None) -> Path:
    """Write one GeoTIFF; ``size`` is (width, height)."""
    crs_name, x0, y0, res = GRIDS[grid]
    width, height = size
    data = pattern(bands, height, width, seed, dtype) if data is None else data
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands + int(alpha),
               "dtype": dtype, "transform": from_origin(x0, y0, res, res), "tiled": True,
               "blockxsize": 128, "blockysize": 128}
    if crs:
        profile["crs"] = crs_name
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, indexes=list(range(1, bands + 1)))
        if alpha:
            alpha_band = np.full((height, width), 255, dtype=dtype)
            alpha_band[:, : width // 2] = 0  # left half transparent
            dst.write(alpha_band, bands + 1)
            dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                               rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha][: bands + 1]
    return path


def write_cog(path: Path, size: int = 1024, seed: int = 8) -> Path:
    """A cloud-optimised GeoTIFF as providers publish them: uint16, 256-px blocks, internal overviews."""
    data = pattern(3, size, size, seed, "uint16")
    profile = {"driver": "COG", "width": size, "height": size, "count": 3, "dtype": "uint16", "crs": GRIDS["utm"][0],
               "transform": from_origin(*GRIDS["utm"][1:3], 10.0, 10.0), "blocksize": 256, "compress": "deflate",
               "overview_resampling": "average"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def split_bands(path: Path, outdir: Path) -> list[Path]:
    """One single-band COG per band of ``path`` (red, green, blue), as Sentinel-2 ships its bands."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    with rasterio.open(path) as src:
        profile = {"driver": "COG", "width": src.width, "height": src.height, "count": 1, "dtype": src.dtypes[0],
                   "crs": src.crs, "transform": src.transform, "blocksize": 256, "compress": "deflate",
                   "overview_resampling": "average"}
        for band, colour in enumerate(("red", "green", "blue"), start=1):
            out = outdir / f"{path.stem}_{colour}.tif"
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(src.read(band), 1)
            written.append(out)
    return written


def write_all(outdir: Path) -> dict[str, Path]:
    """The standard set used by the tests."""
    outdir.mkdir(parents=True, exist_ok=True)
    rgb_nodata = pattern(3, 256, 256, seed=3)
    rgb_nodata[:, 128:, :] = 0  # bottom half nodata
    return {
        "utm": write_raster(outdir / "utm_rgb.tif", "utm", (256, 256), seed=1),
        "lonlat": write_raster(outdir / "lonlat_rgb.tif", "lonlat", (192, 128), seed=2),
        "mercator": write_raster(outdir / "mercator_rgb.tif", "mercator", (128, 128), seed=4),
        "uint16_single": write_raster(outdir / "uint16_single.tif", "utm", (128, 128), bands=1, dtype="uint16", seed=5),
        "nodata": write_raster(outdir / "nodata_rgb.tif", "utm", (256, 256), nodata=0, data=rgb_nodata),
        "alpha": write_raster(outdir / "alpha_rgba.tif", "utm", (128, 128), alpha=True, seed=6),
        "no_crs": write_raster(outdir / "no_crs.tif", "utm", (64, 64), crs=False, seed=7),
    }
