"""Relational queries vs the plain whole-sentence embedding, and their latency at 100k tiles.

Quality: a 20×20 mosaic of rsicd_aid *test* chips (never seen in training) with
a synthetic georeference and a known layout: 10 airports with a river chip
beside them, 10 airports with no river within 2 chips, 10 rivers with no
airport within 2 chips (the default "near" is one tile side, so 2 chips away
is no longer near), and distractors of the other classes
(bridges left out: they show rivers too). Indexed with 150 px tiles, one per
chip, with the default model. For each query, precision@5 and @10 of the
relational search and of the same sentence embedded as one query
(``relational=False``), against the layout's ground truth.

Latency: relational queries over synthetic indexes (random vectors and
footprints; the real store and search code) of 100k tiles: first query (reads
the vectors into memory) and warm p50/p95.

    python benchmarks/relational.py [--data ../shared/data/rsicd_aid/dataset_rsicd_aid.json] [--sizes 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from georet.geo import TilingParams
from georet.geo.mosaic import chips_by_scene, mosaic_cells, write_mosaic
from georet.index import TileStore, index_raster
from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.search import GeoIndex, open_index
from georet.testing.tables import percentiles, synthetic_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rsicd_aid" / "dataset_rsicd_aid.json"
SIZE, PAIRS, CHIP, PIXEL_M = 20, 10, 150, 2.0
MODES = {  # how each query is run: the default, two ablations, and the plain sentence embedding
    "relational": {},
    "no scene prior": {"scene_prior": 0.0},
    "near = 1 tile": {"near": CHIP * PIXEL_M},
    "plain": {"relational": False},
}
QUERIES = {  # query → the cells that are right answers (see truth())
    "airport near river": "airport_by_river",
    "airport next to a river": "airport_by_river",
    "river near airport": "river_by_airport",
    "airport not near river": "airport_alone",
    "airport far from river": "airport_alone",
}


def layout(dataset: Path, seed: int = 0) -> tuple[list[list[Path]], list[list[str]]]:
    """The chip grid and the class of each cell."""
    rng = random.Random(seed)
    by_class = chips_by_scene(dataset, "test", rng)
    classes = [[""] * SIZE for _ in range(SIZE)]

    def free(r: int, c: int, avoid: set[str], radius: int) -> bool:
        return all(classes[rr][cc] not in avoid for rr in range(max(0, r - radius), min(SIZE, r + radius + 1))
                   for cc in range(max(0, c - radius), min(SIZE, c + radius + 1)))

    def place(items: list[tuple[tuple[int, int], str]], avoid: set[str], radius: int) -> bool:
        if all(classes[r][c] == "" and 0 <= c < SIZE and free(r, c, avoid, radius) for (r, c), _ in items):
            for (r, c), name in items:
                classes[r][c] = name
            return True
        return False

    placed = {"pair": 0, "airport": 0, "river": 0}
    attempts = iter(range(100_000))
    while placed["pair"] < PAIRS and next(attempts) is not None:  # airport with a river to its east; nothing else of the two around
        r, c = rng.randrange(SIZE), rng.randrange(SIZE - 1)
        placed["pair"] += place([((r, c), "airport"), ((r, c + 1), "river")], {"airport", "river"}, 2)
    while placed["airport"] < PAIRS and next(attempts) is not None:
        r, c = rng.randrange(SIZE), rng.randrange(SIZE)
        placed["airport"] += place([((r, c), "airport")], {"river", "airport"}, 2)
    while placed["river"] < PAIRS and next(attempts) is not None:
        r, c = rng.randrange(SIZE), rng.randrange(SIZE)
        placed["river"] += place([((r, c), "river")], {"airport", "river"}, 2)
    distractors = [name for name in sorted(by_class) if name not in {"airport", "river", "bridge"}]
    used = {name: 0 for name in by_class}
    grid = []
    for r in range(SIZE):
        grid.append([])
        for c in range(SIZE):
            name = classes[r][c] or distractors[(r * SIZE + c) % len(distractors)]
            classes[r][c] = name
            grid[-1].append(by_class[name][used[name]])
            used[name] += 1
    return grid, classes


def truth(classes: list[list[str]]) -> dict[str, set[tuple[int, int]]]:
    def beside(r, c, name):
        return any(classes[rr][cc] == name for rr in range(max(0, r - 1), min(SIZE, r + 2))
                   for cc in range(max(0, c - 1), min(SIZE, c + 2)) if (rr, cc) != (r, c))

    cells = [(r, c) for r in range(SIZE) for c in range(SIZE)]
    return {
        "airport_by_river": {(r, c) for r, c in cells if classes[r][c] == "airport" and beside(r, c, "river")},
        "river_by_airport": {(r, c) for r, c in cells if classes[r][c] == "river" and beside(r, c, "airport")},
        "airport_alone": {(r, c) for r, c in cells if classes[r][c] == "airport" and not beside(r, c, "river")},
    }


def precision(hits, relevant: set[tuple[int, int]], k: int) -> float:
    cells = [(int(r) // CHIP, int(c) // CHIP) for r, c in zip(hits["row_off"][:k], hits["col_off"][:k])]
    return sum(cell in relevant for cell in cells) / k


def quality(data: Path, work: Path, model) -> dict:
    grid, classes = layout(data)
    raster = write_mosaic(grid, work / "relational_mosaic.tif", chip_size=CHIP, pixel_size=PIXEL_M,
                          description="georet relational benchmark: rsicd_aid test chips on a known layout")
    assert [[Path(p).name for p in row] for row in grid] == mosaic_cells(raster)
    index_raster([raster], work / "index", tiling=TilingParams(tile_size=CHIP), model=model, progress=False)
    index = open_index(work / "index", model=model)
    relevant = truth(classes)
    results = {}
    for query, key in QUERIES.items():
        entry = {"relevant": len(relevant[key])}
        for mode, options in MODES.items():
            hits = index.search(query, k=10, **options)
            entry[mode] = {"p@5": precision(hits, relevant[key], 5), "p@10": precision(hits, relevant[key], 10)}
        results[query] = entry
    mean = {mode: {m: round(float(np.mean([r[mode][m] for r in results.values()])), 3) for m in ("p@5", "p@10")}
            for mode in MODES}
    return {"grid": f"{SIZE}x{SIZE} chips of {CHIP} px", "queries": results, "mean": mean}


def latency(sizes: list[int], model, work: Path, repeats: int = 20) -> dict:
    queries = ["airport near river", "school within 2 km of stadium", "houses not near river",
               "forest north of lake", "port and industrial area"]
    out = {}
    for n in sizes:
        with TileStore.open_for_writing(work / f"lat-{n}", model.identity, dict(model.spec.__dict__)) as store:
            store.table.add(synthetic_rows(n, model.dim, ["airport", "river", "forest"]))
            store.optimize()
        index = GeoIndex(store, model=model)
        started = time.perf_counter()
        index.search(queries[0], k=10)
        first = time.perf_counter() - started
        samples = []
        for i in range(repeats):
            started = time.perf_counter()
            index.search(queries[i % len(queries)], k=10)
            samples.append(time.perf_counter() - started)
        out[str(n)] = {"first_query_ms": round(first * 1000, 1), **percentiles(samples)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = load_model(ModelSpec(), device="cpu")
    with tempfile.TemporaryDirectory(prefix="georet-relational-") as tmp:
        report = {"model": model.identity["arch"], "quality": quality(args.data, Path(tmp), model),
                  "latency": latency([int(s) for s in args.sizes.split(",")], model, Path(tmp))}
    if args.out:
        write_results(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("precision@5 / @10" + "".join(f"{mode:>17s}" for mode in MODES))
    rows = {**{q: e for q, e in report["quality"]["queries"].items()}, "mean": report["quality"]["mean"]}
    for query, entry in rows.items():
        print(f"{query:24s}" + "".join(f"{entry[m]['p@5']:10.2f} / {entry[m]['p@10']:.2f}" for m in MODES))
    for n, figures in report["latency"].items():
        print(f"{int(n):,} tiles: first query {figures['first_query_ms']} ms, then p50 {figures['p50_ms']} ms, "
              f"p95 {figures['p95_ms']} ms")


if __name__ == "__main__":
    main()
