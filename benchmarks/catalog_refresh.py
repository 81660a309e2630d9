"""What a writer's commit costs a warm reader (a server) of a million-tile index.

A search reads the table's current version; the server keeps every tile's vector, footprint and attributes in
memory (the catalog) and must catch up whenever a writer commits. This measures, on ``serve_load.py``'s index
(``runs/load/grid-<size>``, built on first use), after ``georet index`` adds a real NAIP raster (690 tiles)
and after ``georet remove`` deletes it again, in turn:

* the catalog read whole (what the server did at every version) against read by fragment (only the fragments
  the commit added or changed; the rest taken from the previous catalog), and whether the two are identical;
* the footprints' spatial index that relational and change searches use: the read by fragment extends it with
  a tree over the new tiles (its time is part of that read's), the whole read must build it again;
* the first vector-index search at the new version, in a store that has searched before (pylance's session,
  and so the index's cached partitions, kept across versions) against a store opened afresh.

    python benchmarks/catalog_refresh.py [--size 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from georet.index import TileStore
from georet.provenance import write_results
from georet.search.catalog import TileCatalog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import REAL_RASTER, ROOT, WRITTEN_RASTERS, build  # noqa: E402

GEORET = [sys.executable, "-m", "georet.cli"]


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, 1000 * (time.perf_counter() - start)


def first_search_ms(store: TileStore, catalog: TileCatalog, query: np.ndarray) -> float:
    return timed(lambda: catalog.candidates(query, 80))[1]


def identical(a: TileCatalog, b: TileCatalog) -> bool:
    return (a.tile_ids == b.tile_ids and np.array_equal(a.vectors, b.vectors) and np.array_equal(a.bounds, b.bounds)
            and list(a.scenes) == list(b.scenes) and a.attributes.to_pylist() == b.attributes.to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "catalog_refresh.json")
    args = parser.parse_args()
    db = build(args.size)
    raster = WRITTEN_RASTERS[0]
    store = TileStore.open(db)
    catalog, whole_first_ms = timed(lambda: TileCatalog.read(store))
    query = catalog.vectors[0]
    catalog.candidates(query, 80)  # the vector index warm, as in a server that has answered before
    catalog.geometry  # and the spatial index built, as by a relational search
    rows: list[dict] = []
    for _ in range(args.rounds):
        for command in (["index", str(raster), "--db", str(db), "--tile-size", "32", "--quiet"],
                        ["remove", "--db", str(db), raster.name]):
            subprocess.run([*GEORET, *command], check=True, capture_output=True)
            store.refresh()
            by_fragment, fragment_ms = timed(lambda: TileCatalog.read(store, catalog))
            warm_search_ms = first_search_ms(store, by_fragment, query)
            whole, whole_ms = timed(lambda: TileCatalog.read(store))
            whole_geometry_ms = timed(lambda: whole.geometry)[1]
            cold = TileStore.open(db)
            cold_catalog = TileCatalog.read(cold, by_fragment)
            cold_search_ms = first_search_ms(cold, cold_catalog, query)
            rows.append({"write": command[0], "tiles": len(by_fragment), "whole_ms": round(whole_ms, 1),
                         "by_fragment_ms": round(fragment_ms, 1), "identical": identical(by_fragment, whole),
                         "geometry_whole_ms": round(whole_geometry_ms, 1),
                         "first_search_warm_session_ms": round(warm_search_ms, 1),
                         "first_search_new_session_ms": round(cold_search_ms, 1)})
            print(rows[-1], file=sys.stderr, flush=True)
            catalog = by_fragment
            whole = cold = cold_catalog = None  # noqa: F841 (a million vectors freed before the next write)

    def summary(write: str) -> dict:
        mine = [r for r in rows if r["write"] == write]
        median = {key: round(statistics.median(r[key] for r in mine), 1)
                  for key in ("whole_ms", "by_fragment_ms", "geometry_whole_ms", "first_search_warm_session_ms",
                              "first_search_new_session_ms")}
        whole_ms = [r["whole_ms"] + r["geometry_whole_ms"] for r in mine]
        return {**median, "speedup_with_geometry": round(statistics.median(whole_ms) / median["by_fragment_ms"], 1),
                "all_identical": all(r["identical"] for r in mine), "rounds": len(mine)}

    report = {"command": "python benchmarks/catalog_refresh.py " + " ".join(sys.argv[1:]), "size": args.size,
              "real_raster": REAL_RASTER.name, "written_raster": raster.name, "first_whole_read_ms": round(
                  whole_first_ms, 1), "after_index": summary("index"), "after_remove": summary("remove"),
              "rounds": rows}
    print(write_results(args.out, report))


if __name__ == "__main__":
    main()
