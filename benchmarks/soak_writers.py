"""Soak test of concurrent writers: N ``georet index`` processes × M rasters into one index, R rounds.

Each round starts ``--writers`` processes at once; every writer indexes the
same ``--rasters`` rasters (in its own shuffled order, so runs collide on the
same source and on different ones), and in every other round the writer holding
the lock is killed with SIGKILL mid-run. After each round the table is checked against
the manifest: every tile_id stored once, every source complete with exactly
its planned tiles, ``info``'s counts equal to the rows. A final run resumes
what the kills left.

    python benchmarks/soak_writers.py [--writers 4] [--rasters 3] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import lancedb
import numpy as np
import rasterio
from rasterio.transform import from_origin

TILE_PX = 64
GEORET = str(Path(sys.executable).parent / "georet")


def write_raster(path: Path, side: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(500_000 + seed * 10_000, 5_800_000, 1.0, 1.0)) as dst:
        dst.write(rng.integers(0, 255, (3, side, side), dtype=np.uint8))
    return path


def index_command(rasters: list[Path], db: Path) -> list[str]:
    return [GEORET, "index", *map(str, rasters), "--db", str(db), "--model", "georet-tiny", "--device", "cpu",
            "--tile-size", str(TILE_PX), "--batch-size", "16", "--quiet"]


def holder_of_lock(db: Path, procs: list[subprocess.Popen]) -> int | None:
    """Which of ``procs`` is writing now (its pid is in the lock file), if any."""
    text = (db / ".georet.lock").read_text().strip() if (db / ".georet.lock").exists() else ""
    pids = [p.pid for p in procs]
    return pids.index(int(text)) if text.isdigit() and int(text) in pids else None


def check(db: Path, planned: dict[str, int], must_be_complete: bool) -> dict:
    """Uniqueness of tile_ids and agreement of `georet info` with the table."""
    table = lancedb.connect(str(db)).open_table("tiles").to_arrow()
    ids = table.column("tile_id").to_pylist()
    rows_per_source = Counter(table.column("source").to_pylist())
    info = json.loads(subprocess.run([GEORET, "info", "--db", str(db), "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    info_counts = {s: m["tiles"] for s, m in info["sources"].items()}
    states = Counter(m["state"] for m in info["sources"].values())
    return {
        "rows": len(ids), "duplicate_rows": len(ids) - len(set(ids)),
        "info_agrees_with_table": info_counts == {s: rows_per_source.get(s, 0) for s in info_counts}
        and set(rows_per_source) <= set(info_counts) and info["tiles"] == len(ids),
        "complete_sources": states["complete"], "incomplete_sources": states["incomplete"],
        "all_planned_tiles": (not must_be_complete) or dict(rows_per_source) == planned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rasters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=1024, help="raster side in pixels (tiles = (side/64)^2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = work / "soak.db"
        rounds, failures = [], 0
        started_all = time.perf_counter()
        for round_no in range(args.rounds):
            rasters = [write_raster(work / f"r{round_no}-{i}.tif", args.side, seed=100 * round_no + i)
                       for i in range(args.rasters)]
            started = time.perf_counter()
            procs = [subprocess.Popen(index_command(rng.sample(rasters, len(rasters)), db),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for _ in range(args.writers)]
            killed = None
            if round_no % 2 == 1:  # kill the first writer seen holding the lock, a moment into its run
                deadline = time.time() + 60
                while killed is None and time.time() < deadline and any(p.poll() is None for p in procs):
                    killed = holder_of_lock(db, procs)
                    time.sleep(0.05)
                if killed is not None:
                    time.sleep(rng.uniform(0.2, 1.0))
                    procs[killed].send_signal(signal.SIGKILL)
            exit_codes = [p.wait() for p in procs]
            errors = [p.stderr.read().strip() for p in procs]
            bad = [e for i, (c, e) in enumerate(zip(exit_codes, errors)) if c != 0 and i != killed]
            failures += len(bad)
            result = check(db, {}, must_be_complete=False)
            result.update(round=round_no, seconds=round(time.perf_counter() - started, 1),
                          killed_writer=killed is not None, failed_writers=len(bad), errors=bad[:2])
            rounds.append(result)
        all_rasters = sorted(work.glob("r*.tif"))
        resume = subprocess.run(index_command(all_rasters, db), capture_output=True, text=True)
        planned = {str(r.resolve()): (args.side // TILE_PX) ** 2 for r in all_rasters}
        final = check(db, planned, must_be_complete=True)
        final["resume_exit_code"] = resume.returncode
        report = {"writers": args.writers, "rasters_per_round": args.rasters, "rounds": args.rounds,
                  "tiles_per_raster": (args.side // TILE_PX) ** 2, "runs": args.writers * args.rounds,
                  "failed_runs": failures, "per_round": rounds, "final": final,
                  "seconds": round(time.perf_counter() - started_all, 1)}

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.writers} writers x {args.rasters} rasters x {args.rounds} rounds "
          f"({report['tiles_per_raster']} tiles per raster), {report['seconds']} s")
    print(f"{'round':>5s}  {'rows':>6s}  {'dup rows':>8s}  {'info = table':>12s}  {'complete':>8s}  "
          f"{'incomplete':>10s}  {'killed':>6s}  {'failed':>6s}")
    for r in rounds:
        print(f"{r['round']:5d}  {r['rows']:6d}  {r['duplicate_rows']:8d}  {str(r['info_agrees_with_table']):>12s}  "
              f"{r['complete_sources']:8d}  {r['incomplete_sources']:10d}  {str(r['killed_writer']):>6s}  "
              f"{r['failed_writers']:6d}")
    print(f"after a resume run: rows {final['rows']}, duplicate rows {final['duplicate_rows']}, "
          f"info = table {final['info_agrees_with_table']}, every planned tile stored {final['all_planned_tiles']}, "
          f"complete sources {final['complete_sources']}/{len(planned)}")
    if failures or final["duplicate_rows"] or not final["info_agrees_with_table"] or not final["all_planned_tiles"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
