"""Peak memory of ``georet index`` on a small and a huge raster.

Writes a 2000×2000 and a 20000×20000 (1.2 GB) RGB GeoTIFF block by block, then
indexes each in a fresh ``georet index`` process and reports that process's
peak RSS. Windowed reading means the two figures should be about equal.

    python benchmarks/peak_rss.py [--huge 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

BLOCK = 512


def write_blockwise(path: Path, side: int) -> None:
    """A tiled GeoTIFF written one 512-row strip at a time (never the whole raster in memory)."""
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32631", "transform": from_origin(500_000, 5_800_000, 1.0, 1.0),
               "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "BIGTIFF": "IF_SAFER"}
    cols = np.arange(side, dtype=np.uint16)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, BLOCK):
            height = min(BLOCK, side - row)
            strip = ((cols[None, :] // 7 + row // 3) % 256).astype(np.uint8)
            strip = np.broadcast_to(strip, (3, height, side)).copy()
            strip[1] ^= rng.integers(0, 64, size=(height, side), dtype=np.uint8)
            dst.write(strip, window=Window(0, row, side, height))


def index_peak_rss(raster: Path, db: Path) -> tuple[float, float, int]:
    """Run ``georet index`` in a child process; return (peak RSS MiB, seconds, tiles)."""
    georet = Path(sys.executable).parent / "georet"
    started = time.perf_counter()
    proc = subprocess.Popen([str(georet), "index", str(raster), "--db", str(db), "--model", "georet-tiny",
                             "--device", "cpu", "--tile-size", "256", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(err)
    tiles = int(err.split("indexed ")[1].split(" tiles")[0])
    return usage.ru_maxrss / 1024.0, time.perf_counter() - started, tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--huge", type=int, default=20000)
    parser.add_argument("--workdir", type=Path, help="where to write the rasters (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="georet-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for name, side in (("small", args.small), ("huge", args.huge)):
            raster = work / f"{name}.tif"
            write_blockwise(raster, side)
            rss, seconds, tiles = index_peak_rss(raster, work / f"{name}.db")
            results[name] = {"pixels": f"{side}x{side}", "raster_mb": round(raster.stat().st_size / 2**20),
                             "tiles": tiles, "peak_rss_mb": round(rss), "seconds": round(seconds, 1)}
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    results["huge_over_small_rss"] = round(results["huge"]["peak_rss_mb"] / results["small"]["peak_rss_mb"], 3)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name in ("small", "huge"):
            r = results[name]
            print(f"{name:5s} {r['pixels']:>11s} ({r['raster_mb']:5d} MB, {r['tiles']:5d} tiles): "
                  f"peak RSS {r['peak_rss_mb']:5d} MB in {r['seconds']:6.1f} s")
        print(f"huge/small peak RSS: {results['huge_over_small_rss']:.2f}")


if __name__ == "__main__":
    main()
