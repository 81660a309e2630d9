"""Hostile input, generated: every parser a user reaches and the whole HTTP API, with many more cases than the
tests try (the same properties: ``georet.testing.fuzz``). Records, per parser and per API operation, how many
cases were tried and how they ended; any defect stops the run with hypothesis' shrunk case.

    python benchmarks/fuzz.py [--examples 20000] [--api-examples 1000] [--out benchmarks/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from georet.provenance import write_results
from georet.testing.fuzz import PROPERTIES, run, run_api


def api_answers(examples: int) -> dict[str, dict[str, int]]:
    """The API over a small real index (a generated GeoTIFF, the tiny model), behind a token."""
    from fastapi.testclient import TestClient

    from georet import TilingParams, index_raster
    from georet.models import ModelSpec, load_model
    from georet.search import open_index
    from georet.server import create_app
    from georet.testing.rasters import write_raster

    with tempfile.TemporaryDirectory(prefix="georet-fuzz-api-") as folder:
        db = Path(folder) / "idx.db"
        raster = write_raster(Path(folder) / "r.tif", size=(512, 512))
        index_raster([raster], db, tiling=TilingParams(tile_size=64), progress=False,
                     model=load_model(ModelSpec("georet-tiny", None), device="cpu"))
        app = create_app(db, token="t", index=open_index(db, device="cpu"))
        with TestClient(app):
            return run_api(app, examples, headers={"Authorization": "Bearer t"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="cases per parser")
    parser.add_argument("--api-examples", type=int, default=1_000, help="cases per API operation")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fuzz.json"))
    args = parser.parse_args()
    parsers = {}
    for name, prop in PROPERTIES.items():
        start = time.perf_counter()
        parsers[name] = {**run(prop, args.examples, seed=0), "seconds": round(time.perf_counter() - start, 1)}
        print(name, parsers[name], flush=True)
    start = time.perf_counter()
    api = api_answers(args.api_examples)
    print("api", api, flush=True)
    write_results(args.out, {
        "parsers": parsers, "api": api, "api_seconds": round(time.perf_counter() - start, 1),
        "cases": sum(p["tried"] for p in parsers.values()) + sum(sum(a.values()) for a in api.values()),
        "defects": 0})


if __name__ == "__main__":
    main()
