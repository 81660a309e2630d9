"""Approximate search at scale: recall@10 of LanceDB's IVF_PQ index against exact search, and latency.

Stage ``embed`` makes ≥ 100k *real* tile embeddings with the default model:
every rsicd_aid chip (10,000) in 10 views (4 rotations × 2 flips, 2 centre crops),
saved to ``runs/ann/vectors.npy``; queries are 500 real captions of test images.

Stage ``serve`` measures what a warm ``georet serve`` does per request, text
encoding included, on real georet indexes (the tile schema, :class:`GeoIndex`)
of 100k and 1M rows holding those vectors, laid out as a square mosaic of tiles
(each tile has eight neighbours, as in a tiled raster), with their vector index:
names (:data:`SHORT`) and sentences (:data:`WRITTEN`) never asked before, the
same requests again (the result cache), the same texts with another ``k`` (the
query-vector cache), and relational queries ("airport near river") with the
candidate stage and scoring every tile, with their top-9 agreement; p50/p95.

Stage ``bench`` writes the vectors into LanceDB tables (the index schema's
vector column) of 100k rows (real) and 1M rows (the real ones plus 9 copies
with small Gaussian noise, re-normalised: latency does not depend on where
vectors come from, recall does, so recall is measured on the real 100k),
builds IVF_PQ indexes, and measures recall@10 against exact search for
nprobes × refine_factor, and warm latency p50/p95 of exact and indexed search.

    python benchmarks/ann.py embed          # ~20 min on 2 cores
    python benchmarks/ann.py bench [--json]
    python benchmarks/ann.py serve [--json] [--cold-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from georet.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rsicd_aid" / "dataset_rsicd_aid.json"
WORK = ROOT / "runs" / "ann"
#: the identity of the model that embedded vectors.npy and queries.npy (written by ``embed``)
VECTORS_MODEL = WORK / "vectors.model.json"
VIEWS = 10
QUERIES = 500


def views(pixels: np.ndarray) -> list[np.ndarray]:
    """10 views of one chip: 4 rotations of it and of its mirror, and two centre crops."""
    out = []
    for image in (pixels, pixels[:, ::-1]):
        out += [np.ascontiguousarray(np.rot90(image, r)) for r in range(4)]
    h, w = pixels.shape[:2]
    for keep in (0.8, 0.6):
        dh, dw = int(h * (1 - keep) / 2), int(w * (1 - keep) / 2)
        out.append(np.ascontiguousarray(pixels[dh:h - dh, dw:w - dw]))
    return out


def embed(data: Path) -> None:
    from PIL import Image
    from tqdm import tqdm

    from georet.models import load_model

    model = load_model(device="cpu")
    images = json.loads(data.read_text())["images"]
    WORK.mkdir(parents=True, exist_ok=True)
    vectors, pending = [], []
    side = model.preprocess.size[0]
    for n, image in enumerate(tqdm(images, desc="chips"), start=1):
        with Image.open(data.parent / "images" / image["filename"]) as chip:
            pixels = np.asarray(chip.convert("RGB").resize((side, side), Image.BICUBIC))
        pending += [np.asarray(Image.fromarray(v).resize((side, side), Image.BILINEAR)) if v.shape[0] != side else v
                    for v in views(pixels)]
        if len(pending) >= 80 or n == len(images):  # batches of 8 chips' views
            vectors.append(model.encode_images(model.preprocess.apply(np.stack(pending))))
            pending = []
    np.save(WORK / "vectors.npy", np.concatenate(vectors).astype(np.float32))
    captions = [s["raw"] if isinstance(s, dict) else s for i in images if i["split"] == "test"
                for s in i["sentences"][:1]][:QUERIES]
    np.save(WORK / "queries.npy", model.encode_text(captions))
    VECTORS_MODEL.write_text(json.dumps(model.identity))
    print(f"{len(images) * VIEWS} vectors, {len(captions)} queries -> {WORK}")


def table(db, name: str, vectors: np.ndarray):
    import pyarrow as pa

    from georet.index import tile_schema

    schema = pa.schema([tile_schema(vectors.shape[1]).field("vector"), pa.field("row", pa.int64())])
    if name in db.table_names():
        return db.open_table(name)
    batches = (pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(vectors[i:i + 100_000].ravel()),
                                                                   vectors.shape[1]),
                                pa.array(np.arange(i, min(i + 100_000, len(vectors))))], schema=schema)
               for i in range(0, len(vectors), 100_000))
    return db.create_table(name, data=pa.RecordBatchReader.from_batches(schema, batches))


def timed(search, queries: np.ndarray, repeats: int = 1) -> tuple[list[list[int]], np.ndarray]:
    results, times = [], []
    for q in queries:
        start = time.perf_counter()
        rows = search(q)
        times.append(time.perf_counter() - start)
        results.append(rows)
    return results, np.array(times) * 1000


def bench(as_json: bool) -> None:
    import os

    os.environ.setdefault("LANCE_LOG", "error")
    import lancedb

    vectors = np.load(WORK / "vectors.npy")
    queries = np.load(WORK / "queries.npy")
    db = lancedb.connect(str(WORK / "lance"))
    rng = np.random.default_rng(0)
    report = {"dim": int(vectors.shape[1]), "queries": len(queries)}

    def exact(tbl):
        return lambda q: tbl.search(q).distance_type("cosine").limit(10).select(["row"]).to_arrow()["row"].to_pylist()

    def approx(tbl, nprobes, refine):
        def run(q):
            search = tbl.search(q).distance_type("cosine").limit(10).nprobes(nprobes).select(["row"])
            if refine:
                search = search.refine_factor(refine)
            return search.to_arrow()["row"].to_pylist()
        return run

    def in_memory(matrix):
        return lambda q: np.argpartition(-(matrix @ q), 10)[:10].tolist()

    for size in (100_000, 1_000_000):
        data = scaled(vectors, size, rng)
        tbl = table(db, f"t{size}", data)
        if tbl.list_indices():  # a rerun: the exact figures below must not come from an index
            raise SystemExit(f"delete {WORK / 'lance'} first: the tables carry indexes from an earlier run")
        truth, exact_ms = timed(exact(tbl), queries[:100])
        _, memory_ms = timed(in_memory(data), queries[:100])
        entry = {"rows": size, "exact_lance_ms": _pct(exact_ms), "exact_numpy_in_memory_ms": _pct(memory_ms)}
        partitions = int(np.sqrt(size))
        grid = {}
        for index_type, refines in (("IVF_PQ", (10, 50)), ("IVF_HNSW_SQ", (0, 10))):
            start = time.perf_counter()
            options = {"num_sub_vectors": data.shape[1] // 8} if index_type == "IVF_PQ" else {}
            tbl.create_index(metric="cosine", vector_column_name="vector", index_type=index_type,
                             num_partitions=partitions, replace=True, **options)
            entry[f"{index_type}_build_s"] = round(time.perf_counter() - start, 1)
            for nprobes in (20, 40):
                for refine in refines:
                    found, ms = timed(approx(tbl, nprobes, refine), queries[:100])
                    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
                    grid[f"{index_type} nprobes={nprobes} refine={refine}"] = {"recall@10": round(recall, 3), **_pct(ms)}
                    print(size, index_type, nprobes, refine, grid[f"{index_type} nprobes={nprobes} refine={refine}"],
                          file=sys.stderr)
        entry["ann"] = {"num_partitions": partitions, "grid": grid}
        entry.update(cold(db))
        report[str(size)] = entry
        print(json.dumps(entry), file=sys.stderr)
    write_results(ROOT / "benchmarks" / "results" / "ann.json", report)
    print(json.dumps(report, indent=1) if as_json else _table(report))


def _pct(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def _table(report: dict) -> str:
    lines = []
    for size in ("100000", "1000000"):
        entry = report[size]
        lines.append(f"{int(size):,} rows: exact LanceDB p50 {entry['exact_lance_ms']['p50_ms']} ms, "
                     f"exact in-memory numpy p50 {entry['exact_numpy_in_memory_ms']['p50_ms']} ms")
        for name, cell in entry["ann"]["grid"].items():
            lines.append(f"  {name:<36} recall@10 {cell['recall@10']:.3f}  p50 {cell['p50_ms']} ms  "
                         f"p95 {cell['p95_ms']} ms")
    return "\n".join(lines)


def scaled(vectors: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` unit vectors: the real ones, then noisy copies of them (re-normalised)."""
    if size <= len(vectors):
        return vectors[:size]
    copies = [vectors] + [vectors + rng.normal(0, 0.02, vectors.shape).astype(np.float32)
                          for _ in range(size // len(vectors) - 1)]
    data = np.concatenate(copies)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


#: names a user types (never asked before in a run: each is encoded once, in eight wordings, then anchored and
#: searched twice for its pseudo-feedback), sentences as written, relational queries (ten distinct requests;
#: their phrases repeat, as users' do)
SHORT = ["airport", "a marina", "cropland", "harbour", "storage tanks", "beach", "baseball field", "a stadium",
         "farmland", "forest", "a river", "bare land", "a parking lot", "a church", "railway station",
         "open sea", "a desert", "meadow", "a pond", "a viaduct"]
WRITTEN = ["many planes are parked next to a long runway", "a river with green banks runs through the city",
           "dense residential area with many houses", "several white storage tanks beside a road",
           "a sandy beach next to the blue sea", "a baseball field surrounded by trees",
           "a bridge over a wide river", "green farmland divided into rectangles",
           "many boats are moored in the harbour", "a dense forest with a small road",
           "a large stadium next to a parking lot", "an industrial area with big factories",
           "a church surrounded by houses and trees", "a railway station with many tracks",
           "a playground next to a school building", "a parking lot full of cars",
           "a square in the middle of old buildings", "a golf course with sand bunkers",
           "a pond surrounded by green trees", "a viaduct crossing a valley"]
RELATIONAL = ["airport near river", "river near airport", "bridge near river", "school near park",
              "port and industrial area", "farmland near river", "houses near forest", "stadium near parking",
              "beach near houses", "industrial area not near forest"]


def cold(db: Path, runs: int = 5) -> dict:
    """Wall time of a whole ``georet query --plain`` process (start-up, imports, opening the table, text,
    search, output), for names and sentences never asked before and for a name asked before (from the
    query-vector cache on disk); the compiled text graph and the vocabulary are in the cache already, as after
    a first run. (A relational query also encodes the scene classes' prompts for its prior.)"""
    import subprocess

    from georet.models import cache_dir

    def run(text: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "georet.cli", "query", text, "--db", str(db), "-k", "10", "--plain",
                        "--format", "json"], check=True, capture_output=True)
        return (time.perf_counter() - started) * 1000

    run("a warm up of the caches")
    shutil.rmtree(cache_dir("queries"), ignore_errors=True)  # texts of earlier runs would be asked before
    out = {name: _pct(np.array([run(text) for text in texts]))
           for name, texts in (("cold_short_new", SHORT[:runs]), ("cold_written_new", WRITTEN[:runs]))}
    out["cold_short_asked_before"] = _pct(np.array([run(SHORT[0]) for _ in range(runs)]))
    return out


def serve(as_json: bool, cold_only: bool = False) -> None:
    """Per request as a warm ``georet serve`` runs it (see the module docstring), each query form apart:
    names and sentences never asked before, the same request again, relational queries; ``cold_only``
    times the whole-process queries again and keeps the other figures."""
    import georet.search.geoindex as geoindex
    from georet.index import TileStore, describe_mismatch
    from georet.models import load_model
    from georet.search import GeoIndex
    from georet.testing.tables import synthetic_rows

    model = load_model(device="cpu")
    if not VECTORS_MODEL.is_file() or json.loads(VECTORS_MODEL.read_text()) != model.identity:
        # the tables carry this model's identity, and their vectors must be its own: otherwise the queries it
        # encodes search another space, and the candidate stage's agreement means nothing
        raise SystemExit(f"{WORK / 'vectors.npy'} was not embedded by the installed {model.spec.arch} "
                         "(other weights, or before this script recorded which): "
                         "re-run `python benchmarks/ann.py embed` first")
    vectors = np.load(WORK / "vectors.npy")
    rng = np.random.default_rng(0)
    report: dict = {}
    results = ROOT / "benchmarks" / "results" / "serve_latency.json"
    for size in (100_000, 1_000_000):
        db = WORK / f"grid-{size}"
        if TileStore.exists(db) and describe_mismatch(TileStore.open(db).model_identity, model.identity):
            shutil.rmtree(db)  # made for another model (earlier bundled weights): rebuilt for this one's identity
        if not (db / "tiles.lance").is_dir():
            data = scaled(vectors, size, rng)
            with TileStore.open_for_writing(db, model.identity, dict(model.spec.__dict__)) as store:
                for start in range(0, size, 100_000):
                    chunk = data[start:start + 100_000]
                    store.table.add(synthetic_rows(len(chunk), model.dim, ["airport", "river", "forest", "port"],
                                                   seed=start, vectors=chunk, first_id=start,
                                                   grid_side=int(np.ceil(np.sqrt(size)))))
                store.optimize()
        if cold_only:
            kept = json.loads(results.read_text())[str(size)] if results.exists() else {"rows": size}
            report[str(size)] = {**kept, **cold(db)}
            continue
        index = GeoIndex(TileStore.open(db))  # as the server opens it: query text through the text graph
        entry: dict = {"rows": size}
        if index.store.vector_index() is None:
            started = time.perf_counter()
            index.store.build_vector_index()
            entry["index_build_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        index.search(RELATIONAL[0], k=10)  # reads the catalog, loads the text graph, encodes the class prompts
        entry["first_query_s"] = round(time.perf_counter() - started, 2)
        index.search("warm up the feedback path", k=10, relational=False)
        for name, queries in (("short_new", SHORT), ("written_new", WRITTEN)):
            _, ms = timed(lambda q: index.search(q, k=10, relational=False), queries)
            entry[name] = _pct(ms)
        _, ms = timed(lambda q: index.search(q, k=10, relational=False), SHORT)
        entry["repeated"] = _pct(ms)  # the same requests again: the map re-asking as the user pans
        for name, k in (("short_vector_cached", 11), ("written_vector_cached", 11)):
            queries = SHORT if name.startswith("short") else WRITTEN
            _, ms = timed(lambda q: index.search(q, k=k, relational=False), queries)  # another k: searched again
            entry[name] = _pct(ms)
        pooled_hits, ms = timed(lambda q: list(index.search(q, k=10).tile_id), RELATIONAL)
        entry["relational"] = _pct(ms)
        if size >= geoindex.RELATIONAL_POOL_ROWS:  # the candidate stage is on: against scoring every tile
            pool_rows, geoindex.RELATIONAL_POOL_ROWS = geoindex.RELATIONAL_POOL_ROWS, size + 1
            exact_hits, ms = timed(lambda q: list(index.search(q, k=9).tile_id), RELATIONAL)
            geoindex.RELATIONAL_POOL_ROWS = pool_rows
            entry["relational_every_tile"] = _pct(ms)
            entry["relational_top9_agreement"] = round(float(np.mean(
                [len(set(a[:9]) & set(b)) / 9 for a, b in zip(pooled_hits, exact_hits)])), 3)
        entry.update(cold(db))
        report[str(size)] = entry
        print(json.dumps(entry), file=sys.stderr)
    write_results(results, report)
    print(json.dumps(report, indent=1) if as_json else "\n".join(
        f"{int(k):,} rows: short new p50 {v['short_new']['p50_ms']} ms, written new {v['written_new']['p50_ms']} ms, "
        f"repeated {v['repeated']['p50_ms']} ms, relational {v['relational']['p50_ms']} ms (p95 "
        f"{v['relational']['p95_ms']})" for k, v in report.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["embed", "bench", "serve"])
    parser.add_argument("--data", type=Path, default=DATA, help="Karpathy JSON of real chips (embed stage)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cold-only", action="store_true", help="serve: time whole georet query processes only")
    args = parser.parse_args()
    {"embed": lambda: embed(args.data), "bench": lambda: bench(args.json), "serve": lambda: serve(args.json, args.cold_only)}[args.stage]()
