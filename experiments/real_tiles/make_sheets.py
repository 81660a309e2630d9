"""Cut the shared real rasters into the tiles that ``labels.csv`` labels, and draw numbered contact sheets to label.

The tiles are georet's own grid (``TilingParams(tile_size=150, stride=150)``: 150 px, no overlap, the
model's input size, so at 10 m a tile is the 1.5 km the default tiling gives), read with the raster's band
stretch as the index reads them, then shown with a display stretch per sheet so that a person sees the
ground clearly. ``labels.csv`` (one row per tile: raster, col_off, row_off, label, also) was written by
looking at these sheets; re-run this script to check a label against its picture.

    python experiments/real_tiles/make_sheets.py --data ../shared/data --out /tmp/sheets
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from georet.geo import RasterSource, TilingParams

#: the shared rasters with true-colour bands at 0.5-300 m, and the bands to read (NAIP: R, G, B of four)
RASTERS = {
    "rasters/sentinel2_virginia_rgb_10m.tif": None,
    "rasters/naip_north_dakota_4band_5m.tif": "1,2,3",
    "timeseries/naip_north_dakota_20090818.tif": "1,2,3",
    "rasters/landsat_bahamas_rgb_300m.tif": None,
}
TILE_PX = 150
PER_ROW = 6


def tiles(data: Path):
    """(raster, col_off, row_off, pixels) of every full tile of every raster, in grid order."""
    from georet.geo.grid import parse_bands

    for name, bands in RASTERS.items():
        params = TilingParams(tile_size=TILE_PX, stride=TILE_PX, bands=parse_bands(bands))
        with RasterSource(data / name, params) as src:
            for window in src.grid.windows():
                tile = src.read(window)
                if tile.valid_fraction >= 0.5:
                    yield name, int(window.col_off), int(window.row_off), tile.pixels


def display(pixels: np.ndarray) -> np.ndarray:
    """A 2-98 % stretch per band for the eye (the model sees the raster's own stretch)."""
    low, high = np.percentile(pixels, (2, 98), axis=(0, 1))
    return (np.clip((pixels - low) / np.maximum(high - low, 1), 0, 1) * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-sheet", type=int, default=36)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    listing = list(tiles(args.data))
    index = []
    for start in range(0, len(listing), args.per_sheet):
        batch = listing[start:start + args.per_sheet]
        rows = -(-len(batch) // PER_ROW)
        sheet = Image.new("RGB", (PER_ROW * (TILE_PX + 4), rows * (TILE_PX + 4)), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (name, col, row, pixels) in enumerate(batch):
            x, y = (i % PER_ROW) * (TILE_PX + 4), (i // PER_ROW) * (TILE_PX + 4)
            sheet.paste(Image.fromarray(display(pixels)).resize((TILE_PX, TILE_PX)), (x, y))
            draw.rectangle((x, y, x + 26, y + 14), fill="black")
            draw.text((x + 2, y + 1), str(start + i), fill="yellow")
            index.append({"n": start + i, "raster": name, "col_off": col, "row_off": row})
        sheet.save(args.out / f"sheet_{start // args.per_sheet:02d}.png")
    (args.out / "tiles.json").write_text(json.dumps(index, indent=1))
    print(f"{len(listing)} tiles on {-(-len(listing) // args.per_sheet)} sheets in {args.out}")


if __name__ == "__main__":
    main()
