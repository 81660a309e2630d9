"""Do faster queries still return the same tiles? Every query of the relational, change and wording benchmarks,
on the benchmarks' own layouts of real chips, answered by the code of one commit, written out for comparison.

The layouts (``benchmarks/relational.py``'s mosaic, ``benchmarks/change.py``'s two dates of seed 0) are
indexed once with the default model into ``runs/fast_queries/`` by the first run; every later run (any
commit: put its tree first on ``PYTHONPATH``) only queries them, so two commits answer from the same tables.
Each query runs twice: with the torch model passed in (as the benchmarks run) and with the index opened
alone (as ``georet serve`` and ``georet query`` run: query text through the torch-free encoder). The
wording benchmark's queries also give their vectors.

    python experiments/fast_queries/same_results.py --out runs/fast_queries/new.json
    PYTHONPATH=/tmp/old-tree python experiments/fast_queries/same_results.py --out runs/fast_queries/old.json
    python experiments/fast_queries/same_results.py --compare runs/fast_queries/old.json runs/fast_queries/new.json \
        --out experiments/fast_queries/results/same_results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "experiments" / "wording")]
WORK = ROOT / "runs" / "fast_queries"


def build(model) -> dict[str, Path]:
    """The two benchmark layouts as indexes (made once)."""
    import change
    import relational

    from georet.geo import TilingParams
    from georet.geo.mosaic import write_mosaic
    from georet.index import index_raster

    dbs = {"relational": WORK / "relational.db", "change": WORK / "change.db"}
    if not dbs["relational"].is_dir():
        grid, _ = relational.layout(relational.DATA)
        raster = write_mosaic(grid, WORK / "relational.tif", chip_size=relational.CHIP,
                              pixel_size=relational.PIXEL_M)
        index_raster([raster], dbs["relational"], tiling=TilingParams(tile_size=relational.CHIP), model=model,
                     progress=False)
    if not dbs["change"].is_dir():
        early, late, _ = change.layout(change.DATA, 0)
        rasters = [write_mosaic(grid, WORK / f"change_{date}.tif", chip_size=change.CHIP, pixel_size=change.PIXEL_M,
                                origin=(500_000.0 + shift * change.PIXEL_M, 5_800_000.0 - shift * change.PIXEL_M))
                   for grid, date, shift in ((early, change.DATES[0], 0), (late, change.DATES[1], change.SHIFT_PX))]
        index_raster(rasters, dbs["change"], tiling=TilingParams(tile_size=change.CHIP), model=model,
                     progress=False)
    return dbs


def answers(model) -> dict:
    import change
    import relational
    import run as wording

    from georet.geo import SceneVocabulary
    from georet.search import embed_queries, open_index

    dbs = build(model)
    short = [*wording.QUERIES, *wording.MORE_QUERIES]
    searches = {
        "relational": [(q, options) for q in relational.QUERIES for options in relational.MODES.values()]
        + [(q, {}) for q in short],
        "change": [(q, options) for q in change.QUERIES
                   for options in ({}, {"scene_prior": 0.0}, {"relational": False})],
    }
    out: dict = {"ids": {}}
    for how, opened in (("torch", lambda db: open_index(db, model=model)), ("served", open_index)):
        for layout, queries in searches.items():
            index = opened(dbs[layout])
            for query, options in queries:
                hits = index.search(query, k=10, **options)
                key = f"{how} | {layout} | {query} | {json.dumps(options, sort_keys=True)}"
                out["ids"][key] = hits.tile_id.tolist()
    vocabulary = SceneVocabulary.of(model)
    out["wording_vectors"] = embed_queries(model, short, vocabulary).tolist()
    return out


def compare(old: dict, new: dict) -> dict:
    same_order = [key for key in old["ids"] if old["ids"][key] == new["ids"].get(key)]
    differ = {key: {"old": old["ids"][key], "new": new["ids"].get(key)} for key in old["ids"]
              if key not in same_order}
    by_way = {how: f"{sum(k.startswith(how) for k in same_order)}/{sum(k.startswith(how) for k in old['ids'])}"
              for how in ("torch", "served")}
    vectors = np.abs(np.array(old["wording_vectors"]) - np.array(new["wording_vectors"])).max()
    return {"same ids in the same order": by_way, "wording vectors, max abs difference": float(vectors),
            "differ": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = parser.parse_args()
    from georet.provenance import write_results

    if args.compare:
        old, new = (json.loads(path.read_text()) for path in args.compare)
        report = {"old": old["provenance"], "new": new["provenance"], **compare(old, new)}
        if args.out:
            write_results(args.out, report)
        print(json.dumps({k: v for k, v in report.items() if k != "differ"}, indent=1))
        return
    from georet.models import load_model

    WORK.mkdir(parents=True, exist_ok=True)
    result = answers(load_model(device="cpu"))
    write_results(args.out, result)  # with the commit and versions that answered
    print(f"{len(result['ids'])} searches -> {args.out}")


if __name__ == "__main__":
    main()
