"""What indexing costs per km² with the default tiling, at 0.25 m, 1 m and 10 m pixels.

The default tiles cover the model's ground (300 m every 200 m, never under its
150-px input), so the tile count per km² depends on the pixel size: about 25
at 2 m and finer, one at 10 m. Each run indexes one GeoTIFF of synthetic
texture (content does not change the cost) with georet-base on this machine
and reports tiles, seconds, tiles/s and seconds per km², all from one run.

    python benchmarks/ground_cost.py --out benchmarks/results/ground_cost.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import rasterio
import rasterio.transform

from georet import index_raster
from georet.models import load_model
from georet.provenance import write_results
from georet.testing.rasters import write_raster

#: pixel size (m) → raster side (px): 3 km squares at fine pixels, 30 km at 10 m (a few tiles would say little)
LAYOUTS = {0.25: 12_000, 1.0: 3_000, 10.0: 3_000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    model = load_model(device="cpu")
    results = {}
    with tempfile.TemporaryDirectory(prefix="georet-cost-") as work:
        for pixel_m, side in LAYOUTS.items():
            raster = write_raster(Path(work) / f"{pixel_m:g}.tif", size=(side, side))
            with rasterio.open(raster, "r+") as dst:
                dst.transform = rasterio.transform.from_origin(500_000, 5_800_000, pixel_m, pixel_m)
            started = time.perf_counter()
            report = index_raster([raster], Path(work) / f"{pixel_m:g}.db", model=model, progress=False)
            seconds = time.perf_counter() - started
            km2 = (side * pixel_m / 1000) ** 2
            results[f"{pixel_m:g} m"] = {"km2": round(km2, 2), "tiles": report.indexed, "seconds": round(seconds, 1),
                                         "tiles_per_s": round(report.indexed / seconds, 1),
                                         "tiles_per_km2": round(report.indexed / km2, 2),
                                         "s_per_km2": round(seconds / km2, 3)}
            print(f"{pixel_m:g} m", results[f"{pixel_m:g} m"], file=sys.stderr, flush=True)
    if args.out:
        write_results(args.out, {"protocol": {"model": "georet-base", "device": "cpu", "tiling": "default (auto)"},
                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
