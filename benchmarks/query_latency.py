"""Query latency (text encoding + LanceDB search + exact geometry check) at 10k and 100k tiles.

Builds synthetic indexes with random unit vectors and random footprints (the
store and search code are the real ones), opens them as the server does (query
text through the torch-free encoder where the model has one), then times
``GeoIndex.search`` for plain, bbox-filtered and scene-filtered queries. No
vector index is built: search is exact brute force, which LanceDB keeps fast at
this scale. ``text`` times the query encoding alone: each query as written and
as search embeds it (queries of at most three words in eight wordings,
:func:`georet.search.embed_queries`).

    python benchmarks/query_latency.py [--arch ViT-B-32] [--pretrained TAG] [--sizes 10000,100000] [--json] [--out FILE]
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
from georet.provenance import write_results
from georet.search import GeoIndex, embed_queries
from georet.testing.tables import percentiles, synthetic_rows

QUERIES = ["airport", "river with a bridge", "dense residential area", "farmland", "harbour with boats",
           "storage tanks", "forest", "beach and sea", "stadium", "parking lot next to a mall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--pretrained", help="weights tag (e.g. bundled); random weights without it")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the 10 queries")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the figures here, with their provenance")
    args = parser.parse_args()

    model = load_model(ModelSpec(args.arch, args.pretrained), device="auto")
    scenes = [c.label for c in read_classes()]
    spec = {"arch": args.arch, "pretrained": args.pretrained, "checkpoint": None}
    results = {"arch": args.arch, "pretrained": args.pretrained, "device": str(model.device), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            with TileStore.open_for_writing(Path(tmp) / f"q{n}.db", model.identity, spec) as store:
                store.table.add(synthetic_rows(n, model.dim, scenes))
                store.optimize()
            index = GeoIndex(TileStore.open(store.path))  # as the server opens it
            modes = {"plain": {}, "bbox": {"bbox": "4.2,51.2,4.5,51.5"}, "scene": {"scene": "airport"}}
            index.search("warm up", k=10)
            timing = {"text": text_timing(index.text_model, args.repeats)}
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
    if args.out:
        write_results(args.out, results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.arch} text tower on {results['device']}; k=10; exact search")
        print(f"{'tiles':>8s}  {'mode':6s}  {'p50 ms':>7s}  {'p95 ms':>7s}")
        for n, timing in results["sizes"].items():
            for mode, t in timing.items():
                if mode == "text":
                    for way, w in t.items():
                        print(f"{n:>8s}  text, {way}: p50 {w['p50_ms']:.1f} ms, p95 {w['p95_ms']:.1f} ms")
                else:
                    print(f"{n:>8s}  {mode:6s}  {t['p50_ms']:7.1f}  {t['p95_ms']:7.1f}")


def text_timing(text_model, repeats: int) -> dict[str, dict[str, float]]:
    """Encoding each query as written and as search embeds it (:func:`georet.search.embed_queries`)."""
    ways = {"as written": lambda text: text_model.encode_text([text]),
            "as searched": lambda text: embed_queries(text_model, [text])}
    timing = {}
    for way, encode in ways.items():
        samples = []
        for _ in range(repeats):
            for text in QUERIES:
                started = time.perf_counter()
                encode(text)
                samples.append(time.perf_counter() - started)
        timing[way] = percentiles(samples)
    return timing


if __name__ == "__main__":
    main()
