"""Assemble image chips into one georeferenced mosaic GeoTIFF.

Scene datasets (AID, RSICD, …) come as loose, un-georeferenced JPEG chips. Laid
out on a grid with a *synthetic* georeference they become a raster that the
whole georet pipeline can read like any orthophoto: the demo raster and the
relational-query benchmark are built this way. The georeference is made up,
so the GeoTIFF says so in its metadata, together with the chip of every cell.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from georet.errors import GeoretError

SYNTHETIC_NOTE = "synthetic georeference: chips laid out on a made-up grid, not their true location"


def write_mosaic(grid: Sequence[Sequence[str | Path]], out: str | Path, *, chip_size: int = 150,
                 pixel_size: float = 1.0, crs: str = "EPSG:32631", origin: tuple[float, float] = (500_000.0, 5_800_000.0),
                 description: str = "", compress: str = "jpeg") -> Path:
    """Write ``grid`` (rows of chip image paths) as an RGB GeoTIFF.

    Each chip is resized to ``chip_size`` pixels and placed at its cell; the
    top-left corner of the mosaic lies at ``origin`` in ``crs``, with square
    pixels of ``pixel_size`` CRS units.
    One chip row is written at a time, so memory stays at one row of chips.
    The chip of each cell goes into the ``GEORET_CELLS`` tag (JSON, row-major).
    """
    rows = len(grid)
    cols = len(grid[0]) if rows else 0
    if not cols or any(len(r) != cols for r in grid):
        raise GeoretError("a mosaic needs a full rectangular grid of chips")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": cols * chip_size, "height": rows * chip_size, "count": 3, "dtype": "uint8",
        "crs": crs, "transform": Affine(pixel_size, 0, origin[0], 0, -pixel_size, origin[1]),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": compress,
    }
    if compress == "jpeg":
        profile.update(photometric="YCBCR", jpeg_quality=88)
    with rasterio.open(out, "w", **profile) as dst:
        for r, row in enumerate(grid):
            band = np.zeros((3, chip_size, cols * chip_size), dtype=np.uint8)
            for c, chip in enumerate(row):
                with Image.open(chip) as image:
                    pixels = np.asarray(image.convert("RGB").resize((chip_size, chip_size), Image.BICUBIC))
                band[:, :, c * chip_size:(c + 1) * chip_size] = pixels.transpose(2, 0, 1)
            dst.write(band, window=Window(0, r * chip_size, cols * chip_size, chip_size))
        dst.update_tags(GEORET_NOTE=SYNTHETIC_NOTE, GEORET_DESCRIPTION=description,
                        GEORET_CELLS=json.dumps([[Path(c).name for c in row] for row in grid]))
    return out


def mosaic_cells(path: str | Path) -> list[list[str]]:
    """The chip names of a mosaic written by :func:`write_mosaic`, row-major."""
    with rasterio.open(path) as src:
        cells = src.tags().get("GEORET_CELLS")
    if cells is None:
        raise GeoretError(f"{path} is not a georet mosaic (no GEORET_CELLS tag)")
    return json.loads(cells)


def random_grid(images: Sequence[str | Path], side: int, seed: int = 0) -> list[list[str | Path]]:
    """``side`` × ``side`` of ``images`` in a seeded random order: a mosaic layout with no structure to exploit."""
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    if len(order) < side * side:
        raise GeoretError(f"a {side}x{side} mosaic needs {side * side} images, got {len(order)}")
    return [[images[order[r * side + c]] for c in range(side)] for r in range(side)]


def chips_by_scene(dataset: str | Path, split: str, rng: random.Random) -> dict[str, list[Path]]:
    """The chip files of one ``split`` of a Karpathy-style scene dataset (``images[].filename/split/scene``,
    chips in ``images/`` beside the JSON), by scene, each list shuffled by ``rng``: the pools a benchmark
    layout draws its cells from (with the same ``rng`` afterwards, so a seed gives one layout)."""
    dataset = Path(dataset)
    pools: dict[str, list[Path]] = {}
    for image in sorted(json.loads(dataset.read_text())["images"], key=lambda i: i["filename"]):
        if image["split"] == split:
            pools.setdefault(image["scene"], []).append(dataset.parent / "images" / image["filename"])
    for chips in pools.values():
        rng.shuffle(chips)
    return pools


def cut_origin(mosaic: str | Path, out: str | Path, offset_px: int) -> Path:
    """``mosaic`` without its first ``offset_px`` columns and rows, written to ``out`` (which may be ``mosaic``).

    Chip edges then fall inside tiles, as real scene edges do; the cells tag is
    kept, so cell ``(r, c)`` starts at pixel ``r * chip - offset_px``.
    """
    with rasterio.open(mosaic) as src:
        window = Window(offset_px, offset_px, src.width - offset_px, src.height - offset_px)
        profile = {**src.profile, "width": window.width, "height": window.height,
                   "transform": src.window_transform(window)}
        data, tags = src.read(window=window), src.tags()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
    return Path(out)
