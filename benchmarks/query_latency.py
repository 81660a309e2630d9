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

from georet.geo import read_classes
from georet.index import TileStore
from georet.models import ModelSpec, load_model
from georet.search import GeoIndex
from georet.testing.tables import percentiles, synthetic_rows

QUERIES = ["airport", "river with a bridge", "dense residential area", "farmland", "harbour with boats",
           "storage tanks", "forest", "beach and sea", "stadium", "parking lot next to a mall"]


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
