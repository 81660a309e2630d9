"""Change search ("farmland that became housing") against the sentence embedded as one query, and its latency.

Quality: a 16×16 layout of rsicd_aid *test* chips (never seen in training) at two
dates, written as two GeoTIFFs whose file names carry the dates and whose grids
are shifted by 2 pixels (as two years of NAIP are). Most cells show another chip
of the same class at the later date (the place looks different, nothing
changed); 10 cells each changed: farmland → residential, bare land → industrial,
forest → bare land (:func:`layout`). Indexed with one tile per chip and the
default model. For each query, precision@5 and @10 of the change search, of the
same search without each scoring term (the "nothing changed" term, the whole
sentence, the scene prior), and of the sentence embedded as one plain query over
both dates (a hit counts when its place changed that way, at either date).

Pairing: how the footprints of the shared NAIP quarter-quad's three years (2009, 2015, 2020; grids that
shift by a pixel or two) pair at several overlap thresholds, tiled by default (overlapping tiles): a
later tile should find exactly its one earlier tile, not its overlapping neighbours.

Latency: a warm change query over synthetic indexes of two dates of one grid
(random vectors; the real store and search code), against a warm relational
query on the same index.

    python benchmarks/change.py [--data ../shared/data/rsicd_aid/dataset_rsicd_aid.json] [--sizes 1000000] [--out F]
    python benchmarks/change.py --latency-only [--sizes 1000000] [--out F]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from georet.geo import RasterSource, TilingParams, as_ref
from georet.geo.mosaic import chips_by_scene, write_mosaic
from georet.index import TileStore, index_raster
from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.search import GeoIndex, open_index, parse_query
from georet.search.catalog import TileGeometry
from georet.search.change import rank_change
from georet.testing.tables import percentiles, synthetic_rows

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rsicd_aid" / "dataset_rsicd_aid.json"
SIZE, CHIP, PIXEL_M, SHIFT_PX, CHANGED = 16, 150, 2.0, 2, 10
DATES = ("2016-05-01", "2021-06-15")
RESIDENTIAL = ("denseresidential", "mediumresidential", "sparseresidential")
CHANGES = {  # name → (class at the earlier date, classes at the later one)
    "farmland_to_residential": ("farmland", RESIDENTIAL),
    "bareland_to_industrial": ("bareland", ("industrial",)),
    "forest_to_bareland": ("forest", ("bareland",)),
}
QUERIES = {  # query → the change whose cells are right answers
    "farmland that became residential area": "farmland_to_residential",
    "farmland turned into houses": "farmland_to_residential",
    "houses where farmland used to be": "farmland_to_residential",
    "new residential buildings": "farmland_to_residential",
    "bare land that became industrial area": "bareland_to_industrial",
    "new industrial area": "bareland_to_industrial",
    "bare land where forest used to be": "forest_to_bareland",
    "forest that was cleared": "forest_to_bareland",
    "forest that disappeared": "forest_to_bareland",
}
MODES = ("change", "no stay term", "no whole sentence", "no scene prior", "plain sentence")


def layout(dataset: Path, seed: int = 0) -> tuple[list[list[Path]], list[list[Path]], dict[str, set]]:
    """The chip grids of the two dates and the cells of each change."""
    rng = random.Random(seed)
    pools = chips_by_scene(dataset, "test", rng)
    cells = [(r, c) for r in range(SIZE) for c in range(SIZE)]
    rng.shuffle(cells)
    before: dict[tuple[int, int], Path] = {}
    after: dict[tuple[int, int], Path] = {}
    changed: dict[str, set] = {}
    for name, (old, new) in CHANGES.items():
        changed[name] = set()
        for i in range(CHANGED):
            cell = cells.pop()
            before[cell], after[cell] = pools[old].pop(), pools[new[i % len(new)]].pop()
            changed[name].add(cell)
    classes = sorted(pools)
    for i, cell in enumerate(cells):  # the rest: another chip of the same class at the later date
        candidates = [c for c in classes[i % len(classes):] + classes[:i % len(classes)] if len(pools[c]) >= 2]
        before[cell], after[cell] = pools[candidates[0]].pop(), pools[candidates[0]].pop()
    grid = [[(before[(r, c)], after[(r, c)]) for c in range(SIZE)] for r in range(SIZE)]
    return ([[b for b, _ in row] for row in grid], [[a for _, a in row] for row in grid], changed)


def precision(cells: list[tuple[int, int]], relevant: set, k: int) -> float:
    return sum(cell in relevant for cell in cells[:k]) / k


def hit_cells(hits) -> list[tuple[int, int]]:
    return [(int(r) // CHIP, int(c) // CHIP) for r, c in zip(hits["row_off"], hits["col_off"])]


def ablated_cells(index: GeoIndex, query: str, stay_weight: float, whole_weight: float) -> list[tuple[int, int]]:
    """The change search with other term weights: the library's ranking, called directly."""
    change = parse_query(query)
    catalog = index.catalog()
    phrases = index.text_model.encode_text([change.before or change.after, change.after or change.before, query])
    dated = np.ones(len(catalog), dtype=bool)
    ranking = rank_change(change, catalog, phrases, 10, dated, dated, index.queries.scene_prior(phrases[:2], catalog),
                          stay_weight=stay_weight, whole_weight=whole_weight)
    rows = catalog.rows(ranking.after)
    return [(rows[int(p)]["row_off"] // CHIP, rows[int(p)]["col_off"] // CHIP) for p in ranking.after]


def quality(data: Path, work: Path, model, seed: int) -> dict:
    """Precision of every query and mode on the layout of ``seed``."""
    early, late, changed = layout(data, seed)
    work = work / f"seed-{seed}"
    rasters = [write_mosaic(grid, work / f"change_{date}.tif", chip_size=CHIP, pixel_size=PIXEL_M,
                            origin=(500_000.0 + shift * PIXEL_M, 5_800_000.0 - shift * PIXEL_M),
                            description="georet change benchmark: rsicd_aid test chips at two dates")
               for grid, date, shift in ((early, DATES[0], 0), (late, DATES[1], SHIFT_PX))]
    index_raster(rasters, work / "index", tiling=TilingParams(tile_size=CHIP), model=model, progress=False)
    index = open_index(work / "index", model=model)
    results = {}
    for query, key in QUERIES.items():
        relevant = changed[key]
        ranked = {
            "change": hit_cells(index.search(query, k=10)),
            "no stay term": ablated_cells(index, query, 0.0, 0.25),
            "no whole sentence": ablated_cells(index, query, 1.0, 0.0),
            "no scene prior": hit_cells(index.search(query, k=10, scene_prior=0.0)),
            "plain sentence": hit_cells(index.search(query, k=10, relational=False)),
        }
        results[query] = {mode: {"p@5": precision(cells, relevant, 5), "p@10": precision(cells, relevant, 10)}
                          for mode, cells in ranked.items()}
    return results


def summarise(per_seed: list[dict]) -> dict:
    """Each query's precision averaged over the layouts, and the mean over queries as mean ± std over layouts."""
    queries = {q: {mode: {m: round(float(np.mean([r[q][mode][m] for r in per_seed])), 3) for m in ("p@5", "p@10")}
                   for mode in MODES} for q in QUERIES}
    layout_means = [{mode: {m: float(np.mean([r[q][mode][m] for q in QUERIES])) for m in ("p@5", "p@10")}
                     for mode in MODES} for r in per_seed]
    mean = {mode: {m: round(float(np.mean([x[mode][m] for x in layout_means])), 3) for m in ("p@5", "p@10")}
            for mode in MODES}
    std = {mode: {m: round(float(np.std([x[mode][m] for x in layout_means])), 3) for m in ("p@5", "p@10")}
           for mode in MODES}
    return {"layout": f"{SIZE}x{SIZE} cells of {CHIP} px at {PIXEL_M} m, dates {DATES}, later grid shifted "
                      f"{SHIFT_PX} px; {CHANGED} changed cells of each of {', '.join(CHANGES)}",
            "layouts": len(per_seed), "queries": queries, "mean": mean, "std": std}


NAIP_YEARS = ("timeseries/naip_north_dakota_20090818.tif", "timeseries/naip_north_dakota_20150926.tif",
              "rasters/naip_north_dakota_4band_5m.tif")
SHARES = (0.25, 0.5, 0.75, 0.9)


def pairing(shared: Path) -> dict:
    """For each later NAIP year's default tiles: how many tiles of the year before share at least each
    share of the footprint (one is the same place; a second is a neighbour, which the best-overlap rule
    of :func:`~georet.search.change.pair_places` then passes over), and the best share found."""
    geometries = []
    for name in NAIP_YEARS:
        with RasterSource(as_ref(shared / name), TilingParams()) as source:
            geometries.append([source.grid.footprint(w)[1] for w in source.windows()])
    out = {"tiling": "default (300 m tiles every 200 m; 150 px at 5 m)"}
    for (earlier, later), label in zip(((0, 1), (1, 2)), ("2009 -> 2015", "2015 -> 2020")):
        polygons = [*geometries[earlier], *geometries[later]]
        bounds = np.array([p.bounds for p in polygons])
        geometry = TileGeometry(*bounds.T)
        first = len(geometries[earlier])
        late = np.arange(first, len(polygons))
        shares = {}
        for share in SHARES:
            subject, other, _ = geometry.overlapping(late, share)
            partners = np.bincount(subject[other < first] - first, minlength=len(late))
            shares[str(share)] = {"exactly_one": round(float(np.mean(partners == 1)), 3),
                                  "none": round(float(np.mean(partners == 0)), 3),
                                  "several": round(float(np.mean(partners > 1)), 3)}
        subject, other, shared = geometry.overlapping(late, 0.0)
        best = np.zeros(len(late))
        np.maximum.at(best, subject[other < first] - first, shared[other < first])
        out[label] = {"later_tiles": len(late), "by_share": shares,
                      "best_share": {"min": round(float(best.min()), 3), "median": round(float(np.median(best)), 3)}}
    return out


def latency(sizes: list[int], model, work: Path, repeats: int = 20) -> dict:
    """Warm change and relational queries over two dates of one synthetic grid of ``n / 2`` cells."""
    scenes = ["farmland", "denseresidential", "forest", "bareland", "industrial", "river"]
    changes = ["farmland that became residential area", "new industrial area", "forest that was cleared"]
    relations = ["farmland near river", "industrial area not near forest", "forest north of river"]
    out = {}
    for n in sizes:
        side = int(np.ceil(np.sqrt(n / 2)))
        with TileStore.open_for_writing(work / f"lat-{n}", model.identity, dict(model.spec.__dict__)) as store:
            for seed, date in enumerate(DATES):
                store.table.add(synthetic_rows(n // 2, model.dim, scenes, seed=seed, grid_side=side, acquired=date,
                                               id_prefix=date))
            store.optimize()
        index = GeoIndex(store, model=model)
        started = time.perf_counter()
        index.search(changes[0], k=10)
        first = time.perf_counter() - started
        timings = {}
        for name, queries in (("change", changes), ("relational", relations)):
            index.search(queries[0], k=10)
            samples = []
            for i in range(repeats):
                started = time.perf_counter()
                # another k each time: a request asked before would come from the result cache
                index.search(queries[i % len(queries)], k=10 + i)
                samples.append(time.perf_counter() - started)
            timings[name] = percentiles(samples)
        out[str(n)] = {"first_change_query_ms": round(first * 1000, 1), **timings}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", default="0,1,2", help="layout seeds (each a different placement of chips)")
    parser.add_argument("--sizes", default="1000000", help="comma-separated tile counts (two dates together)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--latency-only", action="store_true",
                        help="time the queries only; the other figures of --out are kept as they are")
    args = parser.parse_args()
    model = load_model(ModelSpec(), device="cpu")
    if args.latency_only:
        with tempfile.TemporaryDirectory(prefix="georet-change-") as tmp:
            timings = latency([int(s) for s in args.sizes.split(",") if s], model, Path(tmp))
        if args.out:
            kept = json.loads(args.out.read_text()) if args.out.exists() else {}
            kept.pop("provenance", None)
            write_results(args.out, {**kept, "latency": timings})
        print(json.dumps(timings, indent=1))
        return
    with tempfile.TemporaryDirectory(prefix="georet-change-") as tmp:
        per_seed = [quality(args.data, Path(tmp), model, int(seed)) for seed in args.seeds.split(",")]
        report = {"model": model.identity["arch"], "quality": summarise(per_seed),
                  "pairing_naip": pairing(args.data.parents[1]),
                  "latency": latency([int(s) for s in args.sizes.split(",") if s], model, Path(tmp))}
    if args.out:
        write_results(args.out, report)
    print("precision@5 / @10".ljust(40) + "".join(f"{mode:>20s}" for mode in MODES))
    quality_ = report["quality"]
    for query, entry in quality_["queries"].items():
        print(f"{query:40s}" + "".join(f"{entry[m]['p@5']:13.2f} / {entry[m]['p@10']:.2f}" for m in MODES))
    mean, std = quality_["mean"], quality_["std"]
    print(f"{'mean (± std over layouts), p@5':40s}" + "".join(f"{mean[m]['p@5']:13.2f} ± {std[m]['p@5']:.2f}"
                                                              for m in MODES))
    for label, figures in report["pairing_naip"].items():
        if isinstance(figures, dict):
            print(f"NAIP {label}, {figures['later_tiles']} tiles: exactly one earlier partner at share "
                  + ", ".join(f"{s}: {v['exactly_one']:.0%}" for s, v in figures["by_share"].items())
                  + f"; best share min {figures['best_share']['min']}, median {figures['best_share']['median']}")
    for n, figures in report["latency"].items():
        print(f"{int(n):,} tiles (two dates): first change query {figures['first_change_query_ms']} ms; warm "
              f"change p50 {figures['change']['p50_ms']} ms, p95 {figures['change']['p95_ms']} ms; relational "
              f"p50 {figures['relational']['p50_ms']} ms, p95 {figures['relational']['p95_ms']} ms")


if __name__ == "__main__":
    main()
