"""Overlapping tiles: does a stride below the tile size pay, once overlapping hits of one place are collapsed?

Real scenes do not line up with a tile grid: a tile straddles two scenes, or
four. The rsicd_aid *test* chips are laid on a 32×32 mosaic (150 px each) and
cut again ``--offset`` px off the origin: at 75 (half a chip) every 150-px tile
without overlap shows four quarter chips, the worst case; at 0 chips and tiles
line up, the best. Indexed with the default model at stride 150
(none), 100 (⅔) and 75 (½); text search for each of the 30 scene classes; a hit
is right when the chip under its centre is of that class (hits of one place are
collapsed to the best, :func:`georet.search.results.collapse_overlaps`).
Reported with the cost: tiles, index seconds, bytes on disk.

    python experiments/overlap/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        --offset 75 --out experiments/overlap/results/overlap_offset75.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from georet.geo import TilingParams, default_prompt_words
from georet.geo.mosaic import cut_origin, mosaic_cells, random_grid, write_mosaic
from georet.index import index_raster
from georet.models import load_model
from georet.provenance import write_results
from georet.search import open_index
from georet.training import load_retrieval_data

CHIP, SIDE = 150, 32
STRIDES = {"none (150)": None, "2/3 (100)": 100, "1/2 (75)": 75}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON with scene labels (rsicd_aid)")
    parser.add_argument("--side", type=int, default=SIDE, help="chips per mosaic side")
    parser.add_argument("--offset", type=int, default=CHIP // 2,
                        help="px cut off the mosaic's origin: 0 lines chips up with the tiles, 75 is the worst case")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    test = load_retrieval_data(args.data, "test")
    grid = random_grid(test.images, args.side)
    scene_of = {path.name: scene for path, scene in zip(test.images, test.scenes)}
    model = load_model(device="cpu")
    words = default_prompt_words()
    work = Path(tempfile.mkdtemp(prefix="georet-overlap-"))
    results = {}
    try:
        aligned = write_mosaic(grid, work / "aligned.tif", chip_size=CHIP, compress="deflate")
        cells = mosaic_cells(aligned)
        mosaic = cut_origin(aligned, work / "shifted.tif", args.offset) if args.offset else aligned
        for name, stride in STRIDES.items():
            db = work / f"{stride or CHIP}.db"
            started = time.perf_counter()
            index_raster([mosaic], db, tiling=TilingParams(tile_size=CHIP, stride=stride), model=model,
                         progress=False)
            seconds = time.perf_counter() - started
            index = open_index(db, model=model)
            precision = {5: [], 10: []}
            for scene in sorted(set(scene_of.values())):
                for k in precision:
                    hits = index.search(f"an aerial image of {words.get(scene, scene)}", k=k, relational=False)
                    centre = [(int(r) + CHIP // 2 + args.offset, int(c) + CHIP // 2 + args.offset)
                              for r, c in zip(hits["row_off"], hits["col_off"])]
                    precision[k].append(np.mean([scene_of[cells[min(r // CHIP, args.side - 1)]
                                                          [min(c // CHIP, args.side - 1)]] == scene
                                                 for r, c in centre]))
            results[name] = {"tiles": len(index), "index_seconds": round(seconds, 1),
                             "index_bytes": sum(f.stat().st_size for f in db.rglob("*") if f.is_file()),
                             "p@5": round(float(np.mean(precision[5])), 4),
                             "p@10": round(float(np.mean(precision[10])), 4)}
            print(name, results[name], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_results(args.out, {"protocol": {"chips": args.side * args.side, "chip_px": CHIP, "tile_px": CHIP,
                                              "grid_offset_px": args.offset, "model": "georet-base"},
                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
