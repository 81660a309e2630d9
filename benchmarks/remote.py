"""Remote and distributed indexing: bytes fetched for a --bbox window of a large COG, and tiles/s of the
local engine against the Ray engine in local mode on the same raster.

Stage ``bytes``: the real Sentinel-2 scene of ../shared/data (1933×1947 px, 10 m), upsampled 4× to a
7732×7788 px COG (deflate, 512-px blocks, internal overviews: how providers publish), served by the
loopback range server of georet.testing.loopback, which counts every byte it sends. ``georet index URL
--bbox`` over a ~1.3 km box then reads what the window needs: header, one overview for the
contrast stretch (uint8 here, so not even that), and the tiles' blocks.

Stage ``engines``: ``georet index`` with the default model on that COG as a local file in 256-px tiles
(961 tiles), once with ``--engine local`` and once with ``--engine ray`` (Ray started on this machine),
each as a fresh process: the run's own seconds and tiles/s (Ray's start-up is part of its run), and
the table's bytes per tile.

    python benchmarks/remote.py bytes [--json]
    python benchmarks/remote.py engines [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from georet.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]
SENTINEL2 = ROOT.parent / "shared" / "data" / "rasters" / "sentinel2_virginia_rgb_10m.tif"
WORK = ROOT / "runs" / "remote"
GEORET = str(Path(sys.executable).parent / "georet")
#: ~1.3 km × 1.1 km on the Eastern Shore of Virginia, inside the scene.
BBOX = "-75.690,37.720,-75.675,37.730"


def large_cog(raster: Path) -> Path:
    """The Sentinel-2 scene upsampled 4× (nearest) into a COG: a large remote raster made of real pixels."""
    import rasterio
    from rasterio.enums import Resampling

    path = WORK / "sentinel2_x4_cog.tif"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    with rasterio.open(raster) as src:
        height, width = src.height * 4, src.width * 4
        data = src.read(out_shape=(src.count, height, width), resampling=Resampling.nearest)
        profile = {"driver": "COG", "width": width, "height": height, "count": src.count, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform * src.transform.scale(0.25, 0.25),
                   "blocksize": 512, "compress": "deflate", "overview_resampling": "average"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def georet(*args: str, env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([GEORET, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"georet {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - started, proc.stderr


def measure_bytes(raster: Path) -> dict:
    from georet.testing.loopback import range_server

    cog = large_cog(raster)
    with range_server(WORK) as server, tempfile.TemporaryDirectory() as tmp:
        seconds, log = georet("index", f"{server.url}/{cog.name}", "--bbox", BBOX, "--db", f"{tmp}/db", "-q")
        tiles = int(re.search(r"indexed (\d+) tiles", log).group(1))
        return {"cog": f"Sentinel-2 ×4, {cog.stat().st_size:,} bytes, 7732×7788 px, 512-px blocks",
                "bbox": BBOX, "tiles": tiles, "bytes_fetched": server.bytes_sent, "requests": server.requests,
                "fraction_of_file": round(server.bytes_sent / cog.stat().st_size, 4), "seconds": round(seconds, 1)}


def measure_engines(raster: Path) -> dict:
    import lance

    results = {}
    for engine in ("local", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, log = georet("index", str(large_cog(raster)), "--db", f"{tmp}/db", "--engine", engine, "-q")
            match = re.search(r"indexed (\d+) tiles .* in ([\d.]+) s \(([\d.]+) tiles/s\)", log)
            table = Path(tmp, "db", "tiles.lance")
            table_bytes = sum((table / "data" / data.path).stat().st_size  # the live version's files only
                              for fragment in lance.dataset(str(table)).get_fragments()
                              for data in fragment.data_files())
            results[engine] = {"tiles": int(match.group(1)), "run_s": float(match.group(2)),
                               "tiles_per_s": float(match.group(3)), "process_wall_s": round(seconds, 1),
                               "table_bytes_per_tile": round(table_bytes / int(match.group(1)))}
    results["ray_over_local"] = round(results["ray"]["tiles_per_s"] / results["local"]["tiles_per_s"], 2)
    probe = "import time; t = time.perf_counter(); from georet.index.ray_engine import connect; connect(None); " \
            "print(time.perf_counter() - t)"
    start = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    results["ray_start_s"] = round(float(start.stdout.split()[-1]), 1)
    results["machine"] = f"{os.cpu_count()} cores, no GPU"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["bytes", "engines"])
    parser.add_argument("--raster", type=Path, default=SENTINEL2, help="a real raster to upsample into the large COG")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    result = measure_bytes(args.raster) if args.stage == "bytes" else measure_engines(args.raster)
    out = ROOT / "benchmarks" / "results" / f"remote_{args.stage}.json"
    write_results(out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:18s} {value}")


if __name__ == "__main__":
    main()
