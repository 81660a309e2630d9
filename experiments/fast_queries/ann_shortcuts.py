"""Two shortcuts of warm vector-index search at a million tiles, against what they replace.

1. **Re-rank in memory.** Lance's ``refine_factor`` re-ranks the index's ``10·k`` candidates exactly by
   reading their vectors from disk; the warm catalog holds every vector already
   (:meth:`georet.search.catalog.TileCatalog.nearest`). Same candidates, so the same tiles are expected:
   measured on real captions, with the time of each.
2. **One index search for pseudo-feedback.** A short query ranks its best places, moves towards them and
   searches again; the moved query's nearest tiles are expected among the first search's candidates
   (:meth:`georet.search.geoindex.GeoIndex._feedback_pool`). Measured on names a user types, against a
   second index search.

Needs ``benchmarks/ann.py embed`` and ``serve`` first (the real vectors' 1M table, ``runs/ann/grid-1000000``).

    python experiments/fast_queries/ann_shortcuts.py --out experiments/fast_queries/results/ann_shortcuts.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
NAMES_BEYOND = ["a tennis court", "a golf course", "a school", "a mountain", "dense residential area",
                "sparse residential area", "a bridge", "a square", "a resort", "commercial area"]


def main() -> None:
    from ann import SHORT, WORK

    from georet.index import ANN_NPROBES, ANN_REFINE_FACTOR
    from georet.provenance import write_results
    from georet.search import open_index
    from georet.search.feedback import pseudo_feedback_query

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=WORK / "grid-1000000")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    index = open_index(args.db)
    catalog = index.catalog()
    captions = np.load(WORK / "queries.npy")[:50]

    def lance_refined(query: np.ndarray, k: int = 10) -> list[int]:
        found = catalog.dataset.to_table(columns=["tile_id"], nearest={
            "column": "vector", "q": query, "k": k, "nprobes": ANN_NPROBES, "refine_factor": ANN_REFINE_FACTOR,
            "metric": "cosine"})
        return catalog.positions(found["tile_id"].to_pylist()).tolist()

    def timed(search, queries) -> tuple[list[list[int]], float]:
        for query in queries[:3]:
            search(query)
        started = time.perf_counter()
        out = [search(query) for query in queries]
        return out, round((time.perf_counter() - started) / len(queries) * 1000, 2)

    def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
        return {"top10_overlap": round(float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])), 3),
                "same_order": round(float(np.mean([list(x) == list(y) for x, y in zip(a, b)])), 3)}

    lance, lance_ms = timed(lance_refined, captions)
    memory, memory_ms = timed(lambda q: catalog.nearest(q, 10)[0].tolist(), captions)
    report = {"rows": len(catalog), "rerank_in_memory": {"queries": len(captions), "lance_refine_ms": lance_ms,
                                                        "in_memory_ms": memory_ms, **agreement(lance, memory)}}

    names = SHORT + NAMES_BEYOND
    vectors = index.queries.embed(names)

    def two_searches(query: np.ndarray) -> list[int]:
        best, _ = catalog.nearest(query, 10)
        return catalog.nearest(pseudo_feedback_query(query, catalog.vectors[best]), 10)[0].tolist()

    def one_search(query: np.ndarray) -> list[int]:
        pool = catalog.candidates(query, 10 * ANN_REFINE_FACTOR)
        best, _ = catalog.rerank(pool, query, 10)
        return catalog.rerank(pool, pseudo_feedback_query(query, catalog.vectors[best]), 10)[0].tolist()

    two, two_ms = timed(two_searches, vectors)
    one, one_ms = timed(one_search, vectors)
    report["feedback_one_search"] = {"queries": len(names), "two_searches_ms": two_ms, "one_search_ms": one_ms,
                                     **agreement(two, one)}
    if args.out:
        write_results(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
