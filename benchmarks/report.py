"""Make ``docs/benchmarks.md`` from ``benchmarks/results/*.json`` (``--check``: fail when it is stale).

Each results file becomes a section: what it measures, the command that made it, its provenance
(commit, versions, date) when the file records one, and every figure in it as a flat table of key
paths. The page is never edited by hand; ``tests/test_docs.py`` runs ``--check``.

    python benchmarks/report.py            # rewrite docs/benchmarks.md
    python benchmarks/report.py --check    # exit 1 when docs/benchmarks.md differs from the results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
DATA = "../shared/data/rsicd_aid/dataset_rsicd_aid.json"

#: results file stem → (what it measures, the command that writes it)
SOURCES = {
    "ann": ("Approximate vector search (IVF) against exact search: recall@10 and latency at scale",
            "python benchmarks/ann.py bench"),
    "base_efficiency": ("georet-base training memory and throughput per method, towers run live",
                        f"python benchmarks/base_efficiency.py --data {DATA} --batch-size 64 --steps 2 --json"),
    "feedback": ("Search by example and simulated feedback: precision@10 per scene class",
                 "python benchmarks/feedback.py"),
    "ground_cost": ("Indexing cost per km² with the default tiling at 0.25 m, 1 m and 10 m pixels (georet-base)",
                    "python benchmarks/ground_cost.py --out benchmarks/results/ground_cost.json"),
    "index_throughput": ("End-to-end indexing against model-forward-only throughput (ViT-B-32)",
                         "python benchmarks/index_throughput.py --json"),
    "index_throughput_georet-base": ("End-to-end indexing throughput of the default model",
                                     "python benchmarks/index_throughput.py --arch georet-base --tile-px 150 "
                                     "--image-runtime torch auto openvino onnxruntime "
                                     "--out benchmarks/results/index_throughput_georet-base.json"),
    "peak_rss": ("Peak memory of georet index on a small and a huge raster", "python benchmarks/peak_rss.py --json"),
    "query_latency": ("Query latency at 10k and 100k tiles", "python benchmarks/query_latency.py --json"),
    "query_latency_georet-base": ("Query latency of the default model as the server opens an index, with the "
                                  "query encoding alone (as written and as search embeds it)",
                                  "python benchmarks/query_latency.py --arch georet-base --pretrained bundled "
                                  "--sizes 100000 --out benchmarks/results/query_latency_georet-base.json"),
    "relational": ("Relational queries against the plain sentence: precision@5/@10 on a mosaic of real chips",
                   f"python benchmarks/relational.py --data {DATA} --out benchmarks/results/relational.json"),
    "remote_bytes": ("Bytes fetched for a --bbox window of a large remote COG", "python benchmarks/remote.py bytes"),
    "remote_engines": ("Local engine against the Ray engine (local mode), tiles/s", "python benchmarks/remote.py engines"),
    "serve_latency": ("Warm search latency as the server runs it, up to a million tiles",
                      "python benchmarks/ann.py serve"),
    "serve_load": ("A shared server at a million tiles under 16 and 64 clients: throughput, latency per request "
                   "kind, load shed, errors, RSS", "python benchmarks/serve_load.py --clients 16 64 --seconds 300"),
    "serve_writes": ("The same server while rasters are indexed and removed: consistency, visibility, throughput",
                     "python benchmarks/serve_load.py --writes --clients 16 --seconds 180"),
    "serve_writes_writer1": ("The same, with the writer's model on one core (georet index --threads 1)",
                             "python benchmarks/serve_load.py --writes --clients 16 --seconds 180 --writer-threads 1 "
                             "--out benchmarks/results/serve_writes_writer1.json"),
    "catalog_refresh": ("What a writer's commit costs a warm server at a million tiles: the catalog read by fragment "
                        "against whole, and the first search at the new version", "python benchmarks/catalog_refresh.py"),
    "fuzz": ("Generated input for every parser and the whole HTTP API: cases tried and how they ended",
             "python benchmarks/fuzz.py"),
    "hostile_rasters": ("Rasters made to break the indexer, each through a whole georet index process",
                        "python benchmarks/hostile_rasters.py"),
    "soak_writers": ("Concurrent writers soak: processes × rasters × rounds into one index",
                     "python benchmarks/soak_writers.py --json"),
    "train_efficiency": ("Training memory and throughput of full FT, MRS-Adapter and Focus-Adapter (ViT-B-32)",
                         "python benchmarks/train_efficiency.py --json"),
}
#: at most this many figures a section; the JSON file holds the rest
MAX_ROWS = 60


def _flatten(value, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for key, item in value.items() for row in _flatten(item, f"{path} › {key}" if path else str(key))]
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value) and len(value) <= 8:
            return [(path, ", ".join(_scalar(v) for v in value))]
        return [(path, f"{len(value)} entries (see the JSON file)")]
    return [(path, _scalar(value))]


def _scalar(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def render() -> str:
    lines = ["# Benchmarks", "",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; do not edit by hand.",
             "Each section gives what was measured, the command, and where the file records it the commit and",
             "package versions that produced it. Research studies live in `experiments/` instead.", ""]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        what, command = SOURCES.get(path.stem, ("(no description: add it to benchmarks/report.py)", "?"))
        provenance = data.pop("provenance", None) if isinstance(data, dict) else None
        lines += [f"## {path.stem}", "", what + ".", "", f"Command: `{provenance['command'] if provenance else command}`"]
        if provenance:
            versions = ", ".join(f"{k} {v}" for k, v in provenance.get("versions", {}).items())
            lines += [f"Recorded: commit `{(provenance.get('git_sha') or '?')[:10]}`"
                      f"{' (uncommitted changes)' if provenance.get('git_dirty') else ''}, {provenance.get('date')}, "
                      f"{provenance.get('machine')}; {versions}"]
        else:
            lines += ["Recorded before results files carried their provenance (commit and versions unknown)."]
        rows = _flatten(data)
        lines += ["", "| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows[:MAX_ROWS])]
        if len(rows) > MAX_ROWS:
            lines += [f"| … | {len(rows) - MAX_ROWS} more in `benchmarks/results/{path.name}` |"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/benchmarks.md is stale")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page to check (default: docs/benchmarks.md)")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not args.page.is_file() or args.page.read_text(encoding="utf-8") != page:
            print(f"{args.page.name} is stale: run python benchmarks/report.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
