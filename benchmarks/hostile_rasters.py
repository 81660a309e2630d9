"""Each raster of :mod:`georet.testing.hostile` through a whole ``georet index`` process, as a user runs it
(the default model): what it answered, its exit code, wall time and peak memory (RSS sampled every 20 ms).

    python benchmarks/hostile_rasters.py [--out benchmarks/results/hostile_rasters.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from georet.provenance import write_results
from georet.testing import hostile
from georet.testing.rasters import write_raster


def run(raster: Path, db: Path) -> dict:
    started = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-m", "georet.cli", "index", str(raster), "--db", str(db), "--quiet"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    out, err = proc.communicate()
    lines = [line for line in (err + out).strip().splitlines() if line]
    return {"exit_code": proc.returncode, "lines": len(lines), "answer": lines[-1] if lines else "",
            "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile_rasters.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="georet-hostile-") as folder:
        work = Path(folder)
        good = write_raster(work / "good.tif")
        results["an ordinary 256 px raster (for scale)"] = run(good, work / "good.db")
        for name, (file_name, write) in hostile.RASTERS.items():
            raster = write(work / file_name)
            results[name] = {"file_bytes": raster.stat().st_size, **run(raster, work / f"{file_name}.db")}
            print(name, results[name], flush=True)
    write_results(args.out, {"cases": results})


if __name__ == "__main__":
    main()
