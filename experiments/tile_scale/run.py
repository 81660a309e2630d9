"""Which ground size should a tile have? Text search and zero-shot labels on layouts of real scenes.

Users tile their own rasters, where a "scene" (a field, a harbour, a housing
estate) is a patch of ground of some size, and a tile cut at the wrong size
shows a roof, or four scenes at once. Here rsicd_aid **validation** chips (the
georet-base recipe's held-out split, never the test split) are laid on a
georeferenced grid, each chip standing for ``--scene-m`` metres of ground, and
the mosaic is tiled at several ground sizes, without overlap and with a stride
of ⅔ of the tile. Scored like the issue's measurement: text search precision@5
for every scene class with at least 5 cells ("an aerial image of …"), and the
zero-shot land-cover accuracy of every tile; a tile's truth is the chip under
its centre. Tile size and scene size only matter through their ratio here (a
chip is resampled to any pixel size), so each layout has 400 px per scene.
``--offset`` cuts that share of a scene off the mosaic's origin, so scene
edges no longer fall on the tile grid (real scenes never line up with it).
``--queries names`` searches the class words alone ("forest", "dense residential
area"), as users type them: ``georet query`` reads those as names (eight
wordings, then pseudo-relevance feedback), and each is also searched with the
feedback switched off.

    python experiments/tile_scale/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        --scene-m 200 400 800 --out experiments/tile_scale/results/tile_scale.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from georet.geo import TilingParams, default_prompt_words
from georet.geo.mosaic import cut_origin, mosaic_cells, random_grid, write_mosaic
from georet.index import index_raster
from georet.models import load_model
from georet.provenance import write_results
from georet.search import open_index
from georet.training import load_config, load_splits

SCENE_PX, SIDE, K = 400, 16, 5
TILE_M = (100, 150, 200, 300, 400, 600)
#: the recipe whose validation split the study reads (georet-base's; never its test split)
RECIPE = Path(__file__).resolve().parents[2] / "training" / "configs" / "georet-base.yaml"


def score(db: Path, cells: list[list[str]], scene_of: dict[str, str], model, offset_px: int,
          queries: str = "prompts") -> dict[str, float]:
    index = open_index(db, model=model)
    side = len(cells)
    rows = index.fetch_rows(index.catalog().tile_ids)
    truth = {}
    for row in rows:
        r = min((offset_px + row["row_off"] + row["height"] // 2) // SCENE_PX, side - 1)
        c = min((offset_px + row["col_off"] + row["width"] // 2) // SCENE_PX, side - 1)
        truth[row["tile_id"]] = scene_of[cells[r][c]]
    counts: dict[str, int] = {}
    for row in cells:
        for name in row:
            counts[scene_of[name]] = counts.get(scene_of[name], 0) + 1
    words = default_prompt_words()
    searched = sorted(s for s, n in counts.items() if n >= K)
    template = "an aerial image of {}" if queries == "prompts" else "{}"

    def precision() -> float:
        return round(float(np.mean([np.mean([truth[t] == scene for t in index.search(
            template.format(words.get(scene, scene)), k=K, relational=False).tile_id]) for scene in searched])), 4)

    entry = {"tiles": len(rows), "classes_searched": len(searched), "text_p@5": precision()}
    if queries == "names":
        with mock.patch("georet.search.geoindex.pseudo_feedback_query", lambda query, best: query):
            entry["text_p@5_without_pseudo_feedback"] = precision()
    return {**entry,
            "zero_shot_accuracy": round(float(np.mean([r["scene"] == truth[r["tile_id"]] for r in rows])), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON with scene labels (rsicd_aid)")
    parser.add_argument("--scene-m", type=float, nargs="+", default=[400.0], help="ground size of one chip")
    parser.add_argument("--tile-m", type=float, nargs="+", default=list(TILE_M), help="tile ground sizes to try")
    parser.add_argument("--min-ratio", type=float, default=0.2, help="skip tiles smaller than this share of a scene")
    parser.add_argument("--side", type=int, default=SIDE, help="chips per mosaic side")
    parser.add_argument("--seed", type=int, default=0, help="layout seed")
    parser.add_argument("--offset", type=float, default=0.0, help="share of a scene cut off the mosaic's origin")
    parser.add_argument("--queries", choices=["prompts", "names"], default="prompts",
                        help='"an aerial image of {class words}", or the class words alone')
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    _, val = load_splits(load_config(RECIPE, [f"data.path={args.data}"]), Path(tempfile.gettempdir()))
    grid = random_grid(val.images, args.side, seed=args.seed)
    scene_of = {path.name: scene for path, scene in zip(val.images, val.scenes)}
    model = load_model(device="cpu")
    work = Path(tempfile.mkdtemp(prefix="georet-scale-"))
    results: dict[str, dict] = {}
    try:
        for scene_m in args.scene_m:
            gsd = scene_m / SCENE_PX
            mosaic = write_mosaic(grid, work / f"scene{scene_m:g}.tif", chip_size=SCENE_PX, pixel_size=gsd,
                                  compress="deflate", description="rsicd_aid validation chips, random layout")
            cells = mosaic_cells(mosaic)
            offset_px = round(args.offset * SCENE_PX)
            if offset_px:
                cut_origin(mosaic, mosaic, offset_px)
            for tile_m in args.tile_m:
                if tile_m < args.min_ratio * scene_m:
                    continue
                tile_px = round(tile_m / gsd)
                for stride_name, stride in (("none", None), ("2/3", max(1, round(tile_px * 2 / 3)))):
                    db = work / f"{scene_m:g}-{tile_m:g}-{stride or 0}.db"
                    started = time.perf_counter()
                    index_raster([mosaic], db, tiling=TilingParams(tile_size=f"{tile_m:g}m", stride=stride),
                                 model=model, progress=False)
                    seconds = round(time.perf_counter() - started, 1)
                    entry = {**score(db, cells, scene_of, model, offset_px, args.queries), "index_seconds": seconds}
                    results[f"scene {scene_m:g} m / tile {tile_m:g} m / stride {stride_name}"] = entry
                    print(f"scene {scene_m:g} m tile {tile_m:g} m stride {stride_name}: {entry}", file=sys.stderr,
                          flush=True)
                    shutil.rmtree(db, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        write_results(args.out, {"protocol": {"chips": args.side ** 2, "split": "rsicd_aid train → recipe validation",
                                              "scene_px": SCENE_PX, "k": K, "layout_seed": args.seed,
                                              "offset_scene_share": args.offset, "queries": args.queries,
                                              "model": "georet-base"},
                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
