"""A shared ``georet serve`` under load: many clients at once, a mix of every request kind, for minutes.

The index: ``--size`` tiles (default 1M) in one georet index: synthetic rows at two dates of one grid (the
real store, vector index and search code; random vectors, since latency does not depend on where they come
from), plus a real raster indexed by the default model, so thumbnails and imagery map tiles are real reads.

Each level runs ``clients`` asyncio clients for ``--seconds``, each sending its next request as soon as the
last is answered, drawn from the mix :data:`MIX`: names and sentences (new, and asked again as a map does),
relational and change queries, searches by example, thumbnails, imagery map tiles and ``/info``. A 503
answer is load shed by the server (``--max-pending``): the client waits its ``Retry-After`` and moves on, and
it is counted apart from errors. The server's RSS is sampled every second.

Reported per level and per kind: throughput, p50/p95/p99 latency, errors (any other status, or no answer
within ``--timeout``), shed requests; the server's RSS after warm-up and at the end.

``--writes`` runs one level while a writer process indexes two real NAIP rasters into the same index at 32-px
tiles (690 tiles each: three commits) and removes them again, in turn, for the whole run, and an auditor
client asks for every tile over North Dakota again and again. Every answer must hold each raster whole: none
of its tiles, or as many as the same search finds when the raster is whole and alone (a search keeps the
best tile of each place, so that is fewer than its rows); reported: answers audited, partial answers (target 0), and how long after
each ``georet index`` or ``georet remove`` exits the first answer shows it.

    python benchmarks/serve_load.py [--size 1000000] [--clients 16 64] [--seconds 300] [--out F]
    python benchmarks/serve_load.py --writes [--clients 16] [--seconds 300] [--writer-threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from georet.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "load"
REAL_RASTER = ROOT.parent / "shared" / "data" / "rasters" / "naip_north_dakota_4band_5m.tif"
#: rasters the ``--writes`` writer adds and removes: the same quarter quad as REAL_RASTER, other years
WRITTEN_RASTERS = [ROOT.parent / "shared" / "data" / "timeseries" / f"naip_north_dakota_{day}.tif"
                   for day in ("20090818", "20150926")]
NAMES = ["airport", "a marina", "cropland", "harbour", "storage tanks", "beach", "baseball field", "a stadium",
         "farmland", "forest", "a river", "bare land", "a parking lot", "a church", "railway station", "open sea",
         "a desert", "meadow", "a pond", "a viaduct", "wetland", "a quarry", "solar panels", "an orchard"]
SENTENCES = ["many planes are parked next to a long runway", "a river with green banks runs through the city",
             "dense residential area with many houses", "several white storage tanks beside a road",
             "a sandy beach next to the blue sea", "a bridge over a wide river", "green farmland in rectangles",
             "many boats are moored in the harbour", "a dense forest with a small road",
             "a large stadium next to a parking lot", "an industrial area with big factories"]
RELATIONAL = ["airport near river", "bridge near river", "school near park", "farmland near river",
              "houses near forest", "industrial area not near forest"]
CHANGE = ["farmland that became houses", "forest that became bare land", "new houses", "lost forest"]
#: the texts of each query kind, and whether it is searched as written (not read as a relation or change)
TEXTS = {"short": (NAMES, True), "written": (SENTENCES, True), "relational": (RELATIONAL, False),
         "change": (CHANGE, False)}
#: request kinds and their shares of the traffic (a web map's session: searches, then many map tiles)
MIX = {"short": 0.15, "written": 0.1, "relational": 0.08, "change": 0.05, "example": 0.07, "thumbnail": 0.2,
       "imagery": 0.3, "info": 0.05}


def build(size: int) -> Path:
    """The index (kept in ``runs/load`` between runs of the same size and model)."""
    from georet import index_raster
    from georet.index import TileStore, describe_mismatch
    from georet.models import load_model
    from georet.testing.tables import synthetic_rows

    db = WORK / f"grid-{size}"
    model = load_model(device="cpu")
    if TileStore.exists(db) and describe_mismatch(TileStore.open(db).model_identity, model.identity):
        raise SystemExit(f"{db} was built for another model; delete it")
    if (db / "tiles.lance").is_dir():
        return db
    half, side = size // 2, int(np.ceil(np.sqrt(size // 2)))
    with TileStore.open_for_writing(db, model.identity, dict(model.spec.__dict__)) as store:
        for prefix, acquired in (("a", "2016-06-01"), ("b", "2020-06-01")):  # two dates of one grid
            for start in range(0, half, 100_000):
                n = min(100_000, half - start)
                store.table.add(synthetic_rows(n, model.dim, ["airport", "river", "forest", "farmland"],
                                               seed=start + (prefix == "b"), first_id=start, grid_side=side,
                                               acquired=acquired, id_prefix=prefix))
        store.optimize()
        store.build_vector_index()
    index_raster([REAL_RASTER], db, model=model, progress=False)
    return db


def start_server(db: Path, max_pending: int | None) -> tuple[subprocess.Popen, str]:
    extra = ["--max-pending", str(max_pending)] if max_pending else []
    proc = subprocess.Popen([sys.executable, "-m", "georet.cli", "serve", "--db", str(db), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return proc, proc.stdout.readline().strip()


class Requests:
    """The next request of each kind: queries drawn from the lists (so some are new and some asked before),
    tiles and map tiles of the index."""

    def __init__(self, info: dict, tile_ids: list[str], layer: dict, seed: int):
        self.rng = random.Random(seed)
        self.tile_ids, self.layer, self.info = tile_ids, layer, info

    def next(self) -> tuple[str, str]:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        pick, k = self.rng.choice, self.rng.choice([10, 10, 10, 25, 50])
        if kind in TEXTS:
            texts, plain = TEXTS[kind]
            return kind, f"/search?q={pick(texts)}&k={k}" + ("&plain=true" if plain else "")
        if kind == "example":
            return kind, f"/search?like={pick(self.tile_ids)}&k={k}"
        if kind == "thumbnail":
            return kind, f"/tiles/{pick(self.tile_ids)}/thumbnail.png"
        if kind == "imagery":
            return kind, self._map_tile()
        return kind, "/info"

    def _map_tile(self) -> str:
        import math

        west, south, east, north = self.layer["bounds"]
        z = self.rng.randint(*self.layer["zoom"])
        lon, lat = self.rng.uniform(west, east), self.rng.uniform(south, north)
        n = 2 ** z
        x = int((lon + 180) / 360 * n)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
        return f"/imagery/{self.layer['id']}/{z}/{x}/{y}.png"


async def level(url: str, clients: int, seconds: float, timeout: float, requests: list[Requests]) -> dict:
    import httpx

    samples: dict[str, list[float]] = {kind: [] for kind in MIX}
    errors: dict[str, int] = {}
    shed = {kind: 0 for kind in MIX}
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, source: Requests) -> None:
        while time.monotonic() < deadline:
            kind, path = source.next()
            started = time.perf_counter()
            try:
                response = await http.get(url + path, timeout=timeout)
            except httpx.HTTPError as exc:
                errors[f"{kind}: {type(exc).__name__}"] = errors.get(f"{kind}: {type(exc).__name__}", 0) + 1
                continue
            if response.status_code == 503:
                shed[kind] += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
            elif response.status_code != 200:
                errors[f"{kind}: {response.status_code}"] = errors.get(f"{kind}: {response.status_code}", 0) + 1
            else:
                samples[kind].append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(client(http, requests[i]) for i in range(clients)))
    per_kind = {}
    for kind, times in samples.items():
        ms = np.array(times) * 1000 if times else np.array([np.nan])
        per_kind[kind] = {"answered": len(times), "shed": shed[kind],
                          **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}}
    answered = sum(len(t) for t in samples.values())
    return {"clients": clients, "seconds": seconds, "answered": answered,
            "throughput_per_s": round(answered / seconds, 1), "shed": sum(shed.values()),
            "errors": sum(errors.values()), "error_kinds": errors, "per_kind": per_kind}


async def sample_rss(pid: int, stop: asyncio.Event, into: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        into.append(process.memory_info().rss)
        await asyncio.sleep(1.0)


async def run_levels(url: str, pid: int, args, requests: list[Requests], audited: list | None = None,
                     bbox: str = "") -> list[dict]:
    results = []
    for clients in args.clients:
        rss: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(pid, stop, rss))
        auditor = asyncio.create_task(audit(url, bbox, time.monotonic() + args.seconds, audited)) \
            if audited is not None else None
        result = await level(url, clients, args.seconds, args.timeout, requests)
        stop.set()
        await sampler
        if auditor:
            await auditor
        after_warmup = rss[min(len(rss) - 1, max(1, len(rss) // 10))]  # past the first tenth of the run
        result["rss_mb"] = {"after_warmup": round(after_warmup / 2**20), "end": round(rss[-1] / 2**20),
                            "max": round(max(rss) / 2**20),
                            "growth_pct": round(100 * (rss[-1] - after_warmup) / after_warmup, 1)}
        print(json.dumps({k: v for k, v in result.items() if k != "per_kind"}), file=sys.stderr, flush=True)
        results.append(result)
    return results


def writer(db: Path, stop_at: float, events: list[tuple[str, str, float]], threads: int | None = None) -> None:
    """Index each of :data:`WRITTEN_RASTERS` (with ``threads`` cores, None: all), then remove it, in turn until
    ``stop_at`` (a monotonic time); ``events`` gets ("indexed" | "removed", raster, time the command exited)."""
    run = [sys.executable, "-m", "georet.cli"]
    cores = ["--threads", str(threads)] if threads else []
    while time.monotonic() < stop_at:
        for raster in WRITTEN_RASTERS:
            subprocess.run([*run, "index", str(raster), "--db", str(db), "--tile-size", "32", "--quiet", *cores],
                           check=True, capture_output=True)
            events.append(("indexed", str(raster), time.monotonic()))
            subprocess.run([*run, "remove", "--db", str(db), raster.name], check=True, capture_output=True)
            events.append(("removed", str(raster), time.monotonic()))


async def audit(url: str, bbox: str, stop_at: float, seen: list[tuple[float, dict[str, int]]]) -> None:
    """Every tile over the written rasters' place, again and again: per answer, tiles per raster."""
    import httpx

    async with httpx.AsyncClient() as http:
        while time.monotonic() < stop_at:
            response = await http.get(url + "/search", params={"q": "fields", "k": 1000, "plain": "true",
                                                               "bbox": bbox}, timeout=60)
            if response.status_code == 200:
                counts: dict[str, int] = {}
                for feature in response.json()["features"]:
                    source = feature["properties"]["source"]
                    counts[source] = counts.get(source, 0) + 1
                seen.append((time.monotonic(), counts))
            elif response.status_code == 503:
                await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
            else:
                seen.append((time.monotonic(), {"error": response.status_code}))


def writes_report(events: list[tuple[str, str, float]], seen: list[tuple[float, dict[str, int]]],
                  whole: dict[str, int]) -> dict:
    """Partial answers, errors, and how soon each write showed."""
    partial = [(when, counts) for when, counts in seen if any(
        source in whole and n != whole[source] for source, n in counts.items())]
    delays = {"indexed": [], "removed": []}
    for kind, raster, finished in events:
        for when, counts in seen:
            if when > finished and ((raster in counts) == (kind == "indexed")):
                delays[kind].append(1000 * (when - finished))
                break
    def last_write(when: float) -> dict:
        """The last write that ended before ``when``, and how long before."""
        before = [(kind, raster, ended) for kind, raster, ended in events if ended <= when]
        return {"write": before[-1][0], "raster": Path(before[-1][1]).name,
                "seconds_after": round(when - before[-1][2], 2)} if before else {}

    return {"writes": len(events), "answers_audited": len(seen), "partial_answers": len(partial),
            "partial": [{"tiles": {Path(source).name: n for source, n in counts.items()}, **last_write(when)}
                        for when, counts in partial],
            "audit_errors": sum("error" in counts for _, counts in seen), "tiles_per_raster": whole,
            **{f"{kind}_visible_after_ms": {"max": round(max(ms), 1) if ms else None,
                                            "median": round(float(np.median(ms)), 1) if ms else None}
               for kind, ms in delays.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=30, help="seconds a client waits for one answer")
    parser.add_argument("--max-pending", type=int, help="the server's --max-pending (default: its own)")
    parser.add_argument("--writes", action="store_true", help="one level while a writer adds and removes rasters")
    parser.add_argument("--writer-threads", type=int, help="cores the writer's model may use (georet index --threads)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.clients = args.clients[:1] if args.writes else args.clients
    out = args.out or ROOT / "benchmarks" / "results" / ("serve_writes.json" if args.writes else "serve_load.json")
    import threading

    import httpx

    db = build(args.size)
    server, url = start_server(db, args.max_pending)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        info = httpx.get(url + "/info", timeout=60).json()
        layer = httpx.get(url + "/imagery", timeout=60).json()[0]
        real = httpx.get(url + "/search", params={"q": "fields", "k": 200, "plain": "true",
                                                  "bbox": ",".join(map(str, layer["bounds"]))}, timeout=60).json()
        tile_ids = [f["properties"]["tile_id"] for f in real["features"]]
        requests = [Requests(info, tile_ids, layer, seed) for seed in range(max(args.clients))]
        events: list = []
        audited: list | None = [] if args.writes else None
        if args.writes:
            thread = threading.Thread(target=writer, args=(db, time.monotonic() + args.seconds, events,
                                                           args.writer_threads))
            thread.start()
        results = asyncio.run(run_levels(url, server.pid, args, requests, audited,
                                         ",".join(map(str, layer["bounds"]))))
        if args.writes:
            thread.join()
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = {"size": args.size, "tiles": info["tiles"], "mix": MIX, "timeout_s": args.timeout,
              "max_pending": args.max_pending, "levels": results}
    if args.writes:
        report["writer_threads"] = args.writer_threads
        report["writes"] = writes_report(events, audited, _whole_counts(db, layer["bounds"]))
        print(json.dumps(report["writes"]), file=sys.stderr)
    write_results(out, report)


def _whole_counts(db: Path, bounds: list[float]) -> dict[str, int]:
    """The auditor's answer at rest for each written raster: its tiles in the answer to the audit's search
    when the raster is whole and alone, as the writer leaves it. Not its row count: a search keeps the best
    tile of each place, and the written rasters show the place of the index's real raster, at other dates."""
    import georet
    from georet import TilingParams, index_raster
    from georet.index import remove_sources

    counts = {}
    for raster in WRITTEN_RASTERS:
        index_raster([raster], db, tiling=TilingParams(tile_size=32), progress=False)
        hits = georet.open_index(db).search("fields", k=1000, bbox=bounds, relational=False)
        counts[str(raster)] = int((hits.source == str(raster)).sum())
        remove_sources(db, [str(raster)])
    return counts


if __name__ == "__main__":
    main()
