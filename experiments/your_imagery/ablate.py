"""Each training source's share: single-head models trained with and without it (``recipes/``), scored on the
rsicd_aid test split (mR, in domain) and on the held-out real sets of ``run.py`` (zero-shot main class with the
tile legend, propagated per raster on the real tiles).

    for r in aid-only all-sources all-sources-one-caption without-ucmerced without-dubai without-real-tiles; do
        georet train --config experiments/your_imagery/recipes/$r.yaml
    done
    python experiments/your_imagery/ablate.py --data ../shared/data

Other seeds: ``georet train --config … --set train.seed=1 --set train.out_dir=runs/your-imagery/seed1/<recipe>``,
then ``ablate.py --runs runs/your-imagery/seed1 --out results/ablation-seed1.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from run import OUT, embed, main_class_accuracy, per_place, read_sets

from georet.geo import TILE_LABEL_TEMPLATES, SceneVocabulary, ZeroShotScenes, tile_legend
from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.training.evaluate import evaluate

RUNS = ("aid-only", "all-sources", "all-sources-one-caption", "without-ucmerced", "without-dubai",
        "without-real-tiles")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/your-imagery"))
    parser.add_argument("--out", type=Path, default=OUT / "ablation.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="your-imagery-ablate-"))
    sets = read_sets(args.data, work)
    from georet.training import load_retrieval_data

    test = load_retrieval_data(args.data / "rsicd_aid" / "dataset_rsicd_aid.json", "test")
    result = {}
    for run in RUNS:
        checkpoint = args.runs / run / "best.pt"
        if not checkpoint.is_file():
            continue
        model = load_model(ModelSpec.from_options("georet-base", str(checkpoint)))
        labeller = ZeroShotScenes(model, tile_legend(), TILE_LABEL_TEMPLATES, SceneVocabulary.of(model))
        summary = json.loads((args.runs / run / "summary.json").read_text())
        entry = {"validation_mR": round(summary["best_val"]["mR"], 2),
                 "rsicd_aid_test_mR": round(evaluate(model, test)["mR"], 2)}
        for name, s in sets.items():
            vectors = embed(model, s["paths"])
            p = labeller.probabilities(vectors)
            if name in ("sentinel2", "naip_landsat"):
                p = per_place(vectors, p, s["place"])
            entry[f"{name} main class"] = main_class_accuracy(labeller.labels, p.argmax(1), s["truth"])
        result[run] = entry
        print(run, entry, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
