"""Query latency (text encoding + LanceDB search + exact geometry check) at 10k and 100k tiles.

Builds synthetic indexes with random unit vectors and random footprints (the
store and search code are the real ones), then times ``GeoIndex.search`` for
plain, bbox-filtered and scene-filtered queries. No vector index is built:
search is exact brute force, which LanceDB keeps fast at this scale.

    python benchmarks/query_latency.py [--arch ViT-B-32] [--sizes 10000,100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely

from georet.geo import read_classes
from georet.models import ModelSpec, load_model
from georet.search import GeoIndex
from georet.index import TileStore, tile_schema

QUERIES = ["airport", "river with a bridge", "dense residential area", "farmland", "harbour with boats",
           "storage tanks", "forest", "beach and sea", "stadium", "parking lot next to a mall"]


def synthetic_rows(n: int, dim: int, scenes: list[str], seed: int = 0, vectors: np.ndarray | None = None,
                   first_id: int = 0, grid_side: int | None = None) -> pa.Table:
    """n tiles on a 1°×1° area, random scenes; random unit vectors unless ``vectors`` are given.

    Tiles are ~0.01° at random places (overlapping at random), or, with ``grid_side``, the cells
    ``first_id…`` of a ``grid_side``² mosaic of 1/grid_side° tiles, as a tiled raster gives
    (each tile has eight neighbours).
    """
    rng = np.random.default_rng(seed)
    if vectors is None:
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if grid_side:
        cell = np.arange(first_id, first_id + n)
        side = 1.0 / grid_side
        minx, miny = 4.0 + (cell % grid_side) * side, 51.0 + (cell // grid_side) * side
    else:
        side = 0.01
        minx, miny = rng.uniform(4.0, 5.0, n), rng.uniform(51.0, 52.0, n)
    boxes = shapely.box(minx, miny, minx + side, miny + side)
    return pa.table({
        "tile_id": [f"tile-{i:07d}" for i in range(first_id, first_id + n)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "geometry": shapely.to_wkb(boxes).tolist(),
        "minx": minx, "miny": miny, "maxx": minx + side, "maxy": miny + side,
        "source": ["synthetic.tif"] * n, "source_crs": ["EPSG:4326"] * n,
        "col_off": np.zeros(n, np.int32), "row_off": np.zeros(n, np.int32),
        "width": np.full(n, 256, np.int32), "height": np.full(n, 256, np.int32),
        "scene": rng.choice(scenes, n), "scene_score": rng.uniform(0, 1, n).astype(np.float32),
        "landcover_fractions": [""] * n, "valid_fraction": np.ones(n, np.float32), "thumbnail": [b""] * n,
    }, schema=tile_schema(dim))


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the 10 queries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = load_model(ModelSpec(args.arch, None), device="auto")
    scenes = [c.label for c in read_classes()]
    spec = {"arch": args.arch, "pretrained": None, "checkpoint": None}
    results = {"arch": args.arch, "device": str(model.device), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            with TileStore.open_for_writing(Path(tmp) / f"q{n}.db", model.identity, spec) as store:
                store.table.add(synthetic_rows(n, model.dim, scenes))
                store.optimize()
            index = GeoIndex(store, model=model)
            modes = {"plain": {}, "bbox": {"bbox": "4.2,51.2,4.5,51.5"}, "scene": {"scene": "airport"}}
            index.search("warm up", k=10)
            timing = {}
            for mode, kwargs in modes.items():
                samples = []
                for _ in range(args.repeats):
                    for text in QUERIES:
                        started = time.perf_counter()
                        hits = index.search(text, k=10, **kwargs)
                        samples.append(time.perf_counter() - started)
                        assert len(hits) == 10
                timing[mode] = percentiles(samples)
            results["sizes"][str(n)] = timing
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.arch} text tower on {results['device']}; k=10; exact search")
        print(f"{'tiles':>8s}  {'mode':6s}  {'p50 ms':>7s}  {'p95 ms':>7s}")
        for n, timing in results["sizes"].items():
            for mode, t in timing.items():
                print(f"{n:>8s}  {mode:6s}  {t['p50_ms']:7.1f}  {t['p95_ms']:7.1f}")


if __name__ == "__main__":
    main()
