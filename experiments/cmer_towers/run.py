"""CMER against its baselines on georet-base's pretrained towers, every run through ``georet train``.

Each variant is the georet-base recipe (``training/configs/georet-base.yaml``:
EfficientNet-Lite0 and MiniLM-L6, one head per tower) with the overrides
below, trained with ``georet.training.train`` and scored once on the test
split, without and with the query-time scene prior (selection on the recipe's
validation split only). Seeds give mean ± std.

    python experiments/cmer_towers/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        --seeds 0,1,2 --steps 1500 --out experiments/cmer_towers/results/cmer_towers.json

``--batch-size`` and ``--device cuda`` run the study at the paper's batch size
where a GPU is at hand; full fine-tuning gets as many samples as CMER
(``--full-ft-budget samples``) or its wall-clock (``wall-clock``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.training import evaluate, load_config, load_retrieval_data, train

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "training" / "configs" / "georet-base.yaml"
PRIOR = 0.1
CMER = ["method.name=focus", "loss.queue_size=4096", "loss.queue_warmup_steps=200", "scene_aug.train_p=0.3"]
VARIANTS = {  # name: trainer overrides over the recipe (one head per tower)
    "LiT heads": ["method.name=frozen"],
    "CMER": CMER,
    "CMER - focus layer": [*CMER, "method.focus_keep=null"],
    "CMER - queue": [o for o in CMER if not o.startswith("loss.queue")],
    "CMER - scene aug": [o for o in CMER if not o.startswith("scene_aug")],
    # the adapter dropout these runs were measured with (the trainer's default then; now the model config's 0.1)
    "MRS-Adapter": ["method.name=mrs", "method.adapter_dropout=0.5", "scene_aug.train_p=0.0"],
    "MRS-Adapter + HMMC": ["method.name=mrs", "method.adapter_dropout=0.5", "loss.name=hmmc", "scene_aug.train_p=0.0"],
    "full FT": ["method.name=full", "scene_aug.train_p=0.0", "train.lr=3e-5"],
}


def summarise(runs: list[dict]) -> dict:
    return {key: {"mean": round(float(np.mean([r[key] for r in runs])), 2),
                  "std": round(float(np.std([r[key] for r in runs])), 2)}
            for key in ("val_mR", "mR", "mR_prior", "seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON of rsicd_aid (or another dataset)")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", type=lambda s: s.split(";"), default=list(VARIANTS),
                        help=f"semicolon-separated subset of: {'; '.join(VARIANTS)}")
    parser.add_argument("--full-ft-budget", choices=["samples", "wall-clock"], default="samples")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "cmer_towers",
                        help="runs go here; a finished run is skipped when the study is run again")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "feature_cache",
                        help="frozen-tower features, computed once and shared by every run over the same data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {'; '.join(VARIANTS)}")
    test = load_retrieval_data(args.data, "test")
    common = [f"data.path={args.data}", "model.head_members=1", f"train.max_steps={args.steps}",
              f"train.batch_size={args.batch_size}", f"train.device={args.device}", "train.progress=false",
              f"train.eval_every_steps={max(1, args.steps // 12)}", f"train.cache_dir={args.cache_dir}"]
    results, cmer_seconds = {}, None
    for name in args.variants:
        runs = []
        for seed in args.seeds:
            out = args.workdir / f"{name.replace(' ', '_')}-{seed}"
            overrides = [*common, *VARIANTS[name], f"train.seed={seed}", f"train.out_dir={out}"]
            if name == "full FT":  # live towers: a smaller batch, as many samples (or seconds) as CMER
                batch = min(64, args.batch_size)
                budget = [f"train.max_steps={args.steps * args.batch_size // batch}"] \
                    if args.full_ft_budget == "samples" else [f"train.time_budget_s={cmer_seconds or 900}"]
                overrides += [f"train.batch_size={batch}", *budget]
            summary_file = out / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() \
                else train(load_config(RECIPE, overrides))
            if name == "CMER" and cmer_seconds is None:
                cmer_seconds = summary["seconds"]
            model = load_model(ModelSpec("georet-base", summary["best_checkpoint"]), device=args.device)
            run = {"seed": seed, "val_mR": summary["best_val"]["mR"], "seconds": summary["seconds"],
                   "mR": evaluate(model, test)["mR"], "mR_prior": evaluate(model, test, scene_prior=PRIOR)["mR"]}
            runs.append(run)
            print(f"{name} seed {seed}: val {run['val_mR']:.2f} test {run['mR']:.2f} (+prior {run['mR_prior']:.2f}) "
                  f"{run['seconds']:.0f} s", file=sys.stderr, flush=True)
        results[name] = {**summarise(runs), "runs": runs}
    print(f"{'variant':22s} {'test mR':>14s} {'+ scene prior':>14s} {'val mR':>14s}")
    for name, r in results.items():
        print(f"{name:22s} " + " ".join(f"{r[k]['mean']:7.2f} ± {r[k]['std']:4.2f}" for k in ("mR", "mR_prior", "val_mR")))
    if args.out:
        write_results(args.out, {"protocol": {"recipe": str(RECIPE.relative_to(ROOT)), "steps": args.steps,
                                              "batch_size": args.batch_size, "seeds": args.seeds,
                                              "scene_prior": PRIOR, "full_ft_budget": args.full_ft_budget,
                                              "finished": time.strftime("%Y-%m-%d")},
                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
