"""Should uint8 rasters be band-stretched? Retrieval on hazy, colour-cast and flat mosaics of real chips.

The rsicd_aid *test* chips are laid on a 32×32 georeferenced mosaic; copies of
it are given the colour shifts of real products (a bluish haze that lifts the
blacks as Sentinel-2 and Landsat "visual" files have, a colour cast, a flat
low-contrast look). Each is indexed with the default model twice — uint8 left
as it is (``--stretch never``) and stretched per raster (``always``) — and
scored: text search precision@10 for each of the 30 scene classes, and the
zero-shot land-cover accuracy of the tiles. ``auto`` (:func:`needs_stretch`)
is reported for each mosaic: the rule should stretch the shifted ones and
leave the clean one alone.

    python experiments/colour_stretch/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        --out experiments/colour_stretch/results/colour_stretch.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from georet.geo import TilingParams, default_prompt_words
from georet.geo.mosaic import mosaic_cells, random_grid, write_mosaic
from georet.geo.raster import RasterSource, needs_stretch
from georet.index import index_raster
from georet.models import load_model
from georet.provenance import write_results
from georet.search import open_index
from georet.training import load_retrieval_data

CHIP, SIDE, K = 150, 32, 10
#: colour shifts of real products, applied to the whole mosaic (uint8 RGB)
SHIFTS = {
    "clean": lambda x: x,
    "bluish haze (lifted blacks)": lambda x: x * 0.6 + np.array([95.0, 105.0, 125.0]),
    "colour cast": lambda x: x * np.array([0.85, 1.0, 1.15]) + np.array([0.0, 10.0, 35.0]),
    "flat (low contrast)": lambda x: x * 0.5 + 64.0,
}


def shifted_copy(clean: Path, out: Path, shift) -> Path:
    with rasterio.open(clean) as src:
        profile, tags = src.profile, src.tags()
        pixels = src.read().transpose(1, 2, 0).astype(np.float32)
    pixels = np.clip(shift(pixels), 0, 255).round().astype(np.uint8).transpose(2, 0, 1)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pixels)
        dst.update_tags(**tags)
    return out


def score(db: Path, mosaic: Path, scene_of: dict[str, str], model) -> dict[str, float]:
    index = open_index(db, model=model)
    cells = mosaic_cells(mosaic)
    truth = {row["tile_id"]: scene_of[cells[row["row_off"] // CHIP][row["col_off"] // CHIP]]
             for row in index.fetch_rows(index.catalog().tile_ids)}
    rows = index.fetch_rows(list(truth))
    words = default_prompt_words()
    precisions = []
    for scene in sorted(set(truth.values())):
        hits = index.search(f"an aerial image of {words.get(scene, scene)}", k=K, relational=False)
        precisions.append(float(np.mean([truth[t] == scene for t in hits.tile_id])))
    return {"text_p@10": round(float(np.mean(precisions)), 4),
            "zero_shot_scene_accuracy": round(float(np.mean([r["scene"] == truth[r["tile_id"]] for r in rows])), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON with scene labels (rsicd_aid)")
    parser.add_argument("--side", type=int, default=SIDE, help="chips per mosaic side")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    test = load_retrieval_data(args.data, "test")
    grid = random_grid(test.images, args.side)
    scene_of = {path.name: scene for path, scene in zip(test.images, test.scenes)}
    model = load_model(device="cpu")
    work = Path(tempfile.mkdtemp(prefix="georet-colour-"))
    results = {}
    try:
        clean = write_mosaic(grid, work / "clean.tif", chip_size=CHIP, compress="deflate",
                             description="rsicd_aid test chips, random layout")
        for name, shift in SHIFTS.items():
            mosaic = clean if name == "clean" else shifted_copy(clean, work / f"{len(results)}.tif", shift)
            with RasterSource(mosaic, TilingParams(tile_size=CHIP, stretch="always")) as source:
                lows, highs = source._stretch
            entry = {"percentiles_2_98": [[round(v) for v in lows], [round(v) for v in highs]],
                     "auto_stretches": needs_stretch(lows, highs)}
            for mode in ("never", "always"):
                db = work / f"{len(results)}-{mode}.db"
                index_raster([mosaic], db, tiling=TilingParams(tile_size=CHIP, stretch=mode), model=model,
                             progress=False)
                entry[mode] = score(db, mosaic, scene_of, model)
            entry["auto"] = entry["always" if entry["auto_stretches"] else "never"]
            results[name] = entry
            print(f"{name:28s} never {entry['never']}  always {entry['always']}  auto stretches: "
                  f"{entry['auto_stretches']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_results(args.out, {"protocol": {"chips": args.side * args.side, "chip_px": CHIP, "k": K, "model": "georet-base"},
                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
