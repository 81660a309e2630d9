"""Search by example and simulated feedback: precision@10 per scene class on a mosaic of real chips.

Two mosaics of rsicd_aid chips the bundled model never trained on, laid out
in random order (one chip per 150 px tile, synthetic georeference):

* **validation**: the 10 % of train that the georet-base selection study held out (seed 1234);
  the probe's prior strength and the ``auto`` switch are chosen here;
* **test**: the test split (1,024 of its 1,027 chips), on which the table is reported.

For every class, with the class words as the text ("baseball field") and one
random chip of the class as the example (3 seeds of that choice):
text only, example only, text + example, then 1 and 3 rounds of a simulated
user who marks the top 10 right or wrong (already-marked tiles are never shown
again, so each round's precision@10 is over new tiles), re-ranked by Rocchio,
by the linear probe, and by ``auto``. Classes have ~34 chips, so after a
round or two few right tiles remain unseen: next to precision@10 the table
gives it relative to the best possible page (right tiles still unseen, at
most 10) and the share of the class found (marked right) so far.

    python benchmarks/feedback.py [--seeds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from georet.geo import TilingParams, classes_for_labels
from georet.geo.mosaic import mosaic_cells, write_mosaic
from georet.index import index_raster
from georet.models import load_model
from georet.provenance import write_results
from georet.search import feedback, open_index
from georet.training.data import load_retrieval_data

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rsicd_aid" / "dataset_rsicd_aid.json"
WORK = ROOT / "runs" / "feedback"
VAL_FRACTION, VAL_SEED = 0.1, 1234  # as the georet-base selection study: these train images were held out of training
CHIP, K, ROUNDS = 150, 10, 3
PRIOR_STRENGTHS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def build(name: str, images: list[Path], scenes: list[str], model, seed: int = 0):
    """Index a square-ish random mosaic of ``images`` once; return the index and each tile's class."""
    rng = random.Random(seed)
    order = list(range(len(images)))
    rng.shuffle(order)
    cols = int(np.floor(np.sqrt(len(order))))
    rows = len(order) // cols
    order = order[: rows * cols]
    grid = [[images[order[r * cols + c]] for c in range(cols)] for r in range(rows)]
    scene_of = {images[i].name: scenes[i] for i in order}
    db = WORK / f"{name}.db"
    mosaic = WORK / f"{name}.tif"
    if not db.exists():
        write_mosaic(grid, mosaic, chip_size=CHIP, description=f"rsicd_aid {name} chips, random layout")
        index_raster([mosaic], db, tiling=TilingParams(tile_size=CHIP), model=model, progress=False)
    index = open_index(db, model=model)
    cells = mosaic_cells(mosaic)
    truth = {}
    for row in index.fetch_rows(index.catalog().tile_ids):
        truth[row["tile_id"]] = scene_of[cells[row["row_off"] // CHIP][row["col_off"] // CHIP]]
    return index, truth


def precision(hits, truth, cls) -> float:
    return float(np.mean([truth[t] == cls for t in hits.tile_id])) if len(hits) else 0.0


def run_class(index, truth, cls, words, example, scorer) -> dict[str, float]:
    """One class, one example chip: the fixed modes, then the feedback rounds with ``scorer``.

    For the pages shown while giving feedback also: precision relative to the
    best possible page (``/best``) and the share of the class marked right so
    far (``found``, after that round's marking).
    """
    size = sum(1 for s in truth.values() if s == cls)
    out = {"text": precision(index.search(words, k=K, relational=False), truth, cls),
           "example": precision(index.search(like=[example], k=K), truth, cls)}
    like, unlike = [example], []
    hits = index.search(words, k=K, like=like, unlike=unlike, relational=False)
    out["text+example"] = precision(hits, truth, cls)
    for r in range(1, ROUNDS + 1):
        like += [t for t in hits.tile_id if truth[t] == cls]
        unlike += [t for t in hits.tile_id if truth[t] != cls]
        chosen = scorer if scorer != "probe" or (like and unlike) else "rocchio"
        hits = index.search(words, k=K, like=like, unlike=unlike, relational=False, scorer=chosen)
        best = min(K, size - len(like))
        out[f"round {r}"] = precision(hits, truth, cls)
        out[f"round {r} /best"] = precision(hits, truth, cls) * K / best if best else 1.0
        out[f"round {r} found"] = (len(like) + sum(truth[t] == cls for t in hits.tile_id)) / size
    return out


def evaluate(index, truth, seeds: int, scorers=("rocchio", "probe", "auto")) -> dict:
    """Mean precision@10 over classes, per mode and scorer, mean ± std over example seeds."""
    words = {c.label: c.prompt_words for c in classes_for_labels(truth.values())}
    by_class = {cls: [t for t, s in truth.items() if s == cls] for cls in words}
    results: dict = {}
    for scorer in scorers:
        per_seed, per_class = [], {cls: [] for cls in words}
        for seed in range(seeds):
            rng = random.Random(seed)
            rows = []
            for cls in sorted(words):
                row = run_class(index, truth, cls, words[cls], rng.choice(sorted(by_class[cls])), scorer)
                rows.append(row)
                per_class[cls].append(row)
            per_seed.append({m: float(np.mean([r[m] for r in rows])) for m in rows[0]})
        results[scorer] = {
            "mean": {m: float(np.mean([s[m] for s in per_seed])) for m in per_seed[0]},
            "std": {m: float(np.std([s[m] for s in per_seed])) for m in per_seed[0]},
            "per_class": {cls: {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
                          for cls, rows in per_class.items()},
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA, help="Karpathy JSON of real chips with scene labels")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = load_model(device="cpu")
    train = load_retrieval_data(args.data, "train")
    _, val = train.split_validation(VAL_FRACTION, VAL_SEED)
    test = load_retrieval_data(args.data, "test")
    val_index, val_truth = build("validation", val.images, val.scenes, model)
    test_index, test_truth = build("test", test.images, test.scenes, model)

    selection = {}
    for strength in PRIOR_STRENGTHS:  # the probe's pull towards the Rocchio query, chosen on validation
        feedback.PROBE_PRIOR = strength
        selection[strength] = evaluate(val_index, val_truth, args.seeds, scorers=("probe",))["probe"]["mean"]
    best = max(PRIOR_STRENGTHS, key=lambda s: selection[s][f"round {ROUNDS}"] + selection[s]["round 1"])
    feedback.PROBE_PRIOR = best
    val_rocchio = evaluate(val_index, val_truth, args.seeds, scorers=("rocchio",))["rocchio"]["mean"]
    test_results = evaluate(test_index, test_truth, args.seeds)
    report = {"model": model.identity["arch"], "tiles": {"validation": len(val_truth), "test": len(test_truth)},
              "seeds": args.seeds, "k": K, "probe_prior_selected": best,
              "validation": {"probe_by_prior": {str(k): v for k, v in selection.items()}, "rocchio": val_rocchio},
              "test": test_results, "seconds": round(time.perf_counter() - started, 1)}
    out = ROOT / "benchmarks" / "results" / "feedback.json"
    write_results(out, report)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"test mosaic: {len(test_truth)} tiles, 30 classes; precision@{K}, mean over classes, "
          f"mean ± std over {args.seeds} example seeds; probe prior {best} (chosen on validation)")
    modes = ["text", "example", "text+example", "round 1", "round 1 /best", "round 3", "round 3 /best",
             "round 3 found"]
    print(f"{'scorer':<9}" + "".join(f"{m:>16}" for m in modes))
    for scorer, res in test_results.items():
        print(f"{scorer:<9}" + "".join(f"{res['mean'][m]:>10.3f} ±{res['std'][m]:.3f}" for m in modes))
    print(f"({report['seconds']} s; results in {out.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main())
