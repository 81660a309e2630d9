"""Which CMER components help? A transfer protocol on real data that fits 2 CPU cores.

No pretrained image encoder can be had offline, so the "pretrained CLIP" is
made here: a small CLIP (``georet-bench.json`` beside this script: ViT 64 px/patch 8,
6 layers, width 192; text 4 layers) is trained from scratch on the *train*
images of the first 15 scene classes of ``rsicd_aid`` (stage 1). Stage 2
adapts it to the other 15 classes (their train images) with each method and
evaluates on their *test* images (i2t/t2i R@1/5/10, mR), for 3 seeds:

zero-shot (frozen) · full fine-tuning (also with the query scene prior) · MRS-Adapter + HMMC · CMER (Focus-Adapter
+ queue + scene augmentation + query scene prior) · CMER without the focus
layer (keep all patches) · without the queue · without training-time scene
augmentation · without the query-time scene prior.

    python experiments/cmer_transfer/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        [--seeds 0,1,2] [--batch-size 64] [--json] [--out experiments/cmer_transfer/results/train_quality.json]

Sweeps reuse a kept ``--workdir`` (the pretrained stage is trained once), e.g.
``--workdir W --seeds 0 --variants CMER --set train.lr=3e-3``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from georet.models import ModelSpec, load_model, open_clip_module
from georet.provenance import write_results
from georet.training import load_config, train
from georet.training.data import load_retrieval_data
from georet.training.evaluate import evaluate

ARCH = "georet-bench"
PRIOR = 0.1

VARIANTS = {  # name: (config overrides, query-time scene prior)
    "zero-shot": (["method.name=frozen"], 0.0),
    "full FT": (["method.name=full"], 0.0),
    "MRS-Adapter (HMMC)": (["method.name=mrs", "loss.name=hmmc", "train.lr=1e-3"], 0.0),
    "CMER": (["method.name=focus", "loss.queue_size=1024", "loss.queue_warmup_steps=20", "scene_aug.train_p=0.3",
              "train.lr=1e-3"], PRIOR),
    "CMER - focus layer": (["method.name=focus", "method.focus_keep=1.0", "loss.queue_size=1024",
                            "loss.queue_warmup_steps=20", "scene_aug.train_p=0.3", "train.lr=1e-3"], PRIOR),
    "CMER - queue": (["method.name=focus", "scene_aug.train_p=0.3", "train.lr=1e-3"], PRIOR),
    "CMER - scene aug": (["method.name=focus", "loss.queue_size=1024", "loss.queue_warmup_steps=20",
                          "train.lr=1e-3"], PRIOR),
}

# the query-time scene prior needs no training: these checkpoints are evaluated with it toggled as well
ALSO_EVALUATED = {"CMER": {"CMER - scene prior": 0.0}, "full FT": {"full FT + scene prior": PRIOR}}


def classes(path: Path) -> tuple[list[str], list[str]]:
    scenes = sorted({s for s in load_retrieval_data(path, "test").scenes if s})
    return scenes[: len(scenes) // 2], scenes[len(scenes) // 2:]


def run(args) -> dict:
    open_clip_module().add_model_config(Path(__file__).with_name("georet-bench.json"))
    source, target = classes(args.data)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="georet-quality-"))  # a kept workdir resumes
    common = [f"data.path={args.data}", f"model.arch={ARCH}", "train.device=cpu", "train.progress=false",
              f"train.batch_size={args.batch_size}", "train.warmup_steps=20"]
    started = time.perf_counter()

    pre = train(load_config(None, common + [
        f"data.scenes={json.dumps(source)}", "method.name=full", f"train.max_steps={args.pretrain_steps}",
        f"train.eval_every_steps={args.pretrain_steps}", "train.lr=5e-4", "data.val_fraction=0.02",
        "model.pretrained=null", f"train.out_dir={work / 'pretrain'}", "train.seed=1234"]))
    state = torch.load(pre["best_checkpoint"], weights_only=True)["state_dict"]
    base_model = load_model(ModelSpec(ARCH, None), device="cpu").model
    weights = {**base_model.state_dict(), **{k.removeprefix("clip."): v for k, v in state.items()}}
    base = work / "bench-pretrained.pt"
    torch.save(weights, base)

    test = load_retrieval_data(args.data, "test").where_scene(set(target))
    results: dict[str, dict] = {}
    for seed in args.seeds:
        for name in args.variants:
            overrides, prior = VARIANTS[name]
            out = work / "-".join([name.replace(" ", "_"), *(s.replace("=", "_") for s in args.set), str(seed)])
            summary = train(load_config(None, common + overrides + [
                f"data.scenes={json.dumps(target)}", f"model.pretrained={base}", f"train.max_steps={args.steps}",
                f"train.eval_every_steps={args.steps}", "data.val_fraction=0.05", f"train.seed={seed}",
                f"scene_aug.query_prior={prior}", f"train.out_dir={out}", *args.set]))
            model = load_model(ModelSpec(ARCH, str(base), summary["best_checkpoint"]), device="cpu")
            runs = {name: prior, **ALSO_EVALUATED.get(name, {})}
            for label, beta in runs.items():
                metrics = evaluate(model, test, scene_prior=beta)
                results.setdefault(label, {"runs": []})["runs"].append({"seed": seed, **metrics})
            print(f"[{time.perf_counter() - started:6.0f}s] seed {seed} {name}: mR {results[name]['runs'][-1]['mR']:.2f}",
                  file=sys.stderr)
    for entry in results.values():
        for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mR"):
            values = [r[key] for r in entry["runs"]]
            entry[key] = {"mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values)), 2)}
    return {"protocol": {"data": str(args.data), "arch": ARCH, "source_classes": source, "target_classes": target,
                         "pretrain_steps": args.pretrain_steps, "pretrain_val_mR": round(pre["best_val"]["mR"], 2),
                         "adapt_steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds, "scene_prior": PRIOR,
                         "test_images": len(test), "test_captions": len(test.captions),
                         "extra_overrides": args.set},
            "results": results,
            # a resumed invocation skips finished runs, so this is not the cost of the whole benchmark
            "wall_minutes_this_invocation": round((time.perf_counter() - started) / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON with scene labels (rsicd_aid)")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                        help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra trainer override for every adaptation run (sweeps), e.g. train.lr=3e-3")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep runs here; an interrupted benchmark resumes from it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    report = run(args)
    if args.out:
        write_results(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'method':22s} {'mR (mean ± std)':>16s}   i2t R@1/5/10 · t2i R@1/5/10 (means)")
    for name, entry in report["results"].items():
        recalls = " ".join(f"{entry[k]['mean']:5.1f}" for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
        print(f"{name:22s} {entry['mR']['mean']:7.2f} ± {entry['mR']['std']:5.2f}   {recalls}")


if __name__ == "__main__":
    main()
