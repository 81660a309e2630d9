"""Does an index at two scales find scenes of two sizes better than either scale alone?

Real scenes come in many sizes: a farm field and a whole farming district, a
pond and a lake. Here rsicd_aid **validation** chips (georet-base's held-out
split, never the test split) are laid on a georeferenced grid of ``--cell-m``
cells; eight classes drawn per layout each have five "large" scenes (2×2
blocks of four of their chips) and single-cell scenes fill the rest. The
mosaic is indexed once at the default scale (300 m tiles every 200 m) and at
``--other`` (``--tile-size auto,OTHER``), and each tiling is scored from that
one index: the default tiles alone, the other tiles alone, both (georet's
search: cosine, each place's best tile kept), and both with each scale's
cosines standardised over its own tiles. A tile is right for a class when
that class covers at least half of it; text search precision@5 for every
class with 5 such tiles at each scale ("an aerial image of …"), and the share
of hits that are right *and* as large as their scene (a 2-cell tile on a
large scene, a 1-cell tile on a small one); mean ± std over layout seeds.

    python experiments/multi_scale/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json                # 300 m cells, + 600 m
    python experiments/multi_scale/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json --cell-m 150 --other 150m
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np

from georet.geo import TilingParams, default_prompt_words
from georet.geo.mosaic import write_mosaic
from georet.index import index_raster
from georet.models import load_model
from georet.provenance import write_results
from georet.search import open_index
from georet.search.results import SAME_PLACE_OVERLAP
from georet.training import load_config, load_splits

CELL_PX, SIDE, K = 150, 16, 5
#: classes per layout and large (2×2) scenes of each: 160 of the 256 cells lie in large scenes
CLASSES, BLOCKS = 8, 5
RECIPE = Path(__file__).resolve().parents[2] / "training" / "configs" / "georet-base.yaml"
RESULTS = Path(__file__).with_name("results")


def layout(images: list[Path], scenes: list[str], seed: int
           ) -> tuple[list[list[Path]], list[list[str]], list[list[bool]]]:
    """A SIDE × SIDE grid of chips and their classes: CLASSES classes drawn by ``seed``, each with BLOCKS large
    scenes (2×2 blocks of four of its chips, on even cells) and single chips of them everywhere else; no chip is
    used twice. ``in_block``: whether a cell lies in a large scene."""
    rng = random.Random(seed)
    pools: dict[str, list[Path]] = {}
    for image, scene in zip(images, scenes):
        pools.setdefault(scene, []).append(image)
    singles = (SIDE * SIDE - 4 * BLOCKS * CLASSES) // CLASSES
    chosen = rng.sample(sorted(s for s, pool in pools.items() if len(pool) >= 4 * BLOCKS + singles), CLASSES)
    for scene in chosen:
        rng.shuffle(pools[scene])
    slots = rng.sample([(r, c) for r in range(0, SIDE, 2) for c in range(0, SIDE, 2)], BLOCKS * CLASSES)
    chips: list[list[Path | None]] = [[None] * SIDE for _ in range(SIDE)]
    classes: list[list[str | None]] = [[None] * SIDE for _ in range(SIDE)]
    for n, (r, c) in enumerate(slots):
        scene = chosen[n % CLASSES]
        for dr in (0, 1):
            for dc in (0, 1):
                chips[r + dr][c + dc], classes[r + dr][c + dc] = pools[scene].pop(), scene
    in_block = [[chips[r][c] is not None for c in range(SIDE)] for r in range(SIDE)]
    free = [(r, c) for r in range(SIDE) for c in range(SIDE) if chips[r][c] is None]
    for n, (r, c) in enumerate(free):
        scene = chosen[n % CLASSES]
        chips[r][c], classes[r][c] = pools[scene].pop(), scene
    return chips, classes, in_block  # type: ignore[return-value]


def tile_class(classes: list[list[str]], col: int, row: int, width: int, height: int) -> str | None:
    """The class covering at least half of a tile's pixels, or None."""
    cover: dict[str, float] = {}
    for r in range(row // CELL_PX, min(SIDE, -(-(row + height) // CELL_PX))):
        for c in range(col // CELL_PX, min(SIDE, -(-(col + width) // CELL_PX))):
            dy = min(row + height, (r + 1) * CELL_PX) - max(row, r * CELL_PX)
            dx = min(col + width, (c + 1) * CELL_PX) - max(col, c * CELL_PX)
            cover[classes[r][c]] = cover.get(classes[r][c], 0.0) + dx * dy / (width * height)
    best = max(cover, key=cover.get)
    return best if cover[best] >= 0.5 else None


def best_per_place(order: np.ndarray, boxes: np.ndarray, k: int) -> list[int]:
    """The first ``k`` tiles of ``order`` after dropping any that shares SAME_PLACE_OVERLAP of the smaller
    footprint with a better kept one (georet's collapse, on pixel boxes)."""
    kept: list[int] = []
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        same = False
        for j in kept:
            a0, b0, a1, b1 = boxes[j]
            shared = max(0, min(x1, a1) - max(x0, a0)) * max(0, min(y1, b1) - max(y0, b0))
            if shared >= SAME_PLACE_OVERLAP * min((x1 - x0) * (y1 - y0), (a1 - a0) * (b1 - b0)):
                same = True
                break
        if not same:
            kept.append(int(i))
            if len(kept) == k:
                break
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON with scene labels (rsicd_aid)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cell-m", type=float, default=300.0, help="ground size of one chip (a small scene)")
    parser.add_argument("--other", default="600m", help="the tile size indexed beside the default one")
    parser.add_argument("--out", type=Path, help="[default: results/multi_scale_cell{CELL}m.json]")
    args = parser.parse_args()
    out = args.out or RESULTS / f"multi_scale_cell{args.cell_m:g}m.json"
    other = f"{args.other} tiles"
    _, val = load_splits(load_config(RECIPE, [f"data.path={args.data}"]), Path(tempfile.gettempdir()))
    model = load_model(device="cpu")
    words = default_prompt_words()
    runs: dict[str, list[float]] = {}
    own: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            chips, classes, in_block = layout(val.images, val.scenes, seed)
            mosaic = write_mosaic(chips, Path(tmp) / f"layout{seed}.tif", chip_size=CELL_PX, pixel_size=args.cell_m / CELL_PX,
                                  compress="deflate", description="rsicd_aid validation chips, two scene sizes")
            db = Path(tmp) / f"layout{seed}.db"
            index_raster([mosaic], db, tiling=TilingParams(tile_size=("auto", args.other)), model=model, progress=False)
            index = open_index(db, model=model)
            catalog = index.catalog()
            rows = catalog.rows(range(len(catalog)))
            rows = [rows[i] for i in range(len(catalog))]
            boxes = np.array([[r["col_off"], r["row_off"], r["col_off"] + r["width"], r["row_off"] + r["height"]]
                              for r in rows])
            truth = [tile_class(classes, *(int(v) for v in (r["col_off"], r["row_off"], r["width"], r["height"])))
                     for r in rows]
            default_px = next(iter(index.store.manifest["sources"].values()))["scales"][0]["tile_px"]
            large = np.array([r["width"] != default_px for r in rows])  # the other scale's tiles
            tiles = {"default tiles": int((~large).sum()), other: int(large.sum())}
            # a hit is as large as its scene when a 2-cell tile lies on a large scene, a 1-cell one on a small one
            own_size = np.array([(r["width"] >= 1.5 * CELL_PX) == in_block[
                min(SIDE - 1, (r["row_off"] + r["height"] // 2) // CELL_PX)][
                min(SIDE - 1, (r["col_off"] + r["width"] // 2) // CELL_PX)] for r in rows])
            searched = [s for s in sorted(words) if sum(t == s for t, big in zip(truth, large) if big) >= K
                        and sum(t == s for t, big in zip(truth, large) if not big) >= K]
            texts = model.encode_text([f"an aerial image of {words[s]}" for s in searched])
            precision: dict[str, list[float]] = {name: [] for name in
                                                 ("default tiles", other, "both", "both, standardised")}
            sized: dict[str, list[float]] = {name: [] for name in precision}
            for scene, text in zip(searched, texts):
                cosines = catalog.vectors @ text
                standard = cosines.copy()
                for group in (large, ~large):
                    standard[group] = (cosines[group] - cosines[group].mean()) / cosines[group].std()
                for name, scores, allowed in (("default tiles", cosines, ~large), (other, cosines, large),
                                              ("both", cosines, large | ~large),
                                              ("both, standardised", standard, large | ~large)):
                    order = np.flatnonzero(allowed)[np.argsort(-scores[allowed], kind="stable")]
                    hits = best_per_place(order, boxes, K)
                    precision[name].append(float(np.mean([truth[i] == scene for i in hits])))
                    sized[name].append(float(np.mean([truth[i] == scene and own_size[i] for i in hits])))
                engine = index.search(f"an aerial image of {words[scene]}", k=K, relational=False, scene_prior=0)
                assert list(engine.tile_id) == [rows[i]["tile_id"] for i in best_per_place(
                    np.argsort(-cosines, kind="stable"), boxes, K)], "the engine's search is the 'both' ranking"
            for name, values in precision.items():
                runs.setdefault(name, []).append(float(np.mean(values)))
                own.setdefault(name, []).append(float(np.mean(sized[name])))
            print(f"seed {seed}: {len(searched)} classes, " + ", ".join(
                f"{name} {np.mean(values):.3f}" for name, values in precision.items()), flush=True)
    summary = {name: {"mean": round(float(np.mean(v)), 3), "std": round(float(np.std(v)), 3), "per_seed": v,
                      "right_at_own_size_mean": round(float(np.mean(own[name])), 3),
                      "right_at_own_size_std": round(float(np.std(own[name])), 3)} for name, v in runs.items()}
    write_results(out, {"protocol": {"cells": SIDE * SIDE, "cell_m": args.cell_m, "classes": CLASSES, "large_scenes_per_class": BLOCKS,
                                          "tiling": f"auto (300 m every 200 m) and {args.other}", "k": K,
                                          "split": "rsicd_aid train -> recipe validation", "seeds": args.seeds,
                                     "tiles_per_layout": tiles},
                             "text_p@5": summary})
    for name, s in summary.items():
        print(f"{name:20s} p@5 {s['mean']:.3f} ± {s['std']:.3f}; right and at the place's own size "
              f"{s['right_at_own_size_mean']:.3f} ± {s['right_at_own_size_std']:.3f}")


if __name__ == "__main__":
    main()
