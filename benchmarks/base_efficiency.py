"""georet-base training memory and throughput per method, towers run live (no feature cache).

Each method trains a few steps of the real training loop (``georet.training.fit``)
on the same batch size and real rsicd_aid images, in a fresh process; the peak
RSS above the loaded model (sampled every 5 ms; on CUDA, peak allocated memory)
is training memory, optimiser state included. Frozen towers keep no
activations for backward: nothing before the side branches needs gradients.

    python benchmarks/base_efficiency.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        [--batch-size 64] [--steps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

METHODS = ("frozen", "focus", "mrs", "full")


def worker(method: str, batch_size: int, steps: int, data: Path) -> dict:
    import dataclasses

    import psutil
    import torch

    from georet.models.identity import tower_config
    from georet.models.preprocess import tower_preprocess
    from georet.models.tower_clip import TowerCLIP, TowerCLIPConfig
    from georet.training import fit, load_config
    from georet.training.data import load_karpathy
    from georet.training.encoders import LiveImages, LiveTexts, TowerEncoder
    from georet.training.pairs import PairTable

    cfg = dataclasses.replace(TowerCLIPConfig.from_dict(tower_config("georet-base")), method=method, head_members=1)
    model = TowerCLIP(cfg)
    model.load_backbones()
    for name, param in model.named_parameters():
        param.requires_grad_(model.is_trainable(name))
    split = load_karpathy(data, "train").subset(range(batch_size * (steps + 1)))
    table = PairTable.build(split, load_karpathy(data, "train").subset(range(batch_size * (steps + 1),
                                                                               batch_size * (steps + 1) + 4)))
    cpu = torch.device("cpu")
    encoder = TowerEncoder(model, LiveImages(table.paths, tower_preprocess(cfg.image_size), cpu),
                           LiveTexts(model.text.tokenizer()(list(table.texts)), cpu), cpu)
    config = load_config(None, [f"train.max_steps={steps + 1}", f"train.batch_size={batch_size}",
                                "train.eval_every_steps=1000000", "train.progress=false", "loss.queue_warmup_steps=0",
                                f"loss.queue_size={4096 if method == 'focus' else 0}", f"method.name={method}"])
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak, stop = [baseline], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    # one extra step: the first allocates optimiser state and is not timed apart (samples/s over all steps)
    result = fit(encoder, table.pairs(), table.rows(table.val), table.val, config, seed=0)
    stop.set()
    trainable = sum(p.numel() for n, p in model.named_parameters() if model.is_trainable(n))
    return {"peak_mem_mb": round((peak[0] - baseline) / 2**20, 1), "samples_per_s": round(result.samples_per_s, 2),
            "trainable_params": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON of real image-caption pairs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch_size, args.steps, args.data)))
        return
    results = {}
    for method in METHODS:
        proc = subprocess.run([sys.executable, __file__, "--worker", method, "--batch-size", str(args.batch_size),
                               "--steps", str(args.steps), "--data", str(args.data)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed:\n{proc.stderr[-2000:]}")
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    full = results["full"]
    ratios = {f"{m}_mem_vs_full": round(results[m]["peak_mem_mb"] / full["peak_mem_mb"], 3) for m in METHODS[:-1]}
    ratios.update({f"{m}_throughput_vs_full": round(results[m]["samples_per_s"] / full["samples_per_s"], 2)
                   for m in METHODS[:-1]})
    summary = {"batch_size": args.batch_size, "steps": args.steps, "methods": results, "ratios": ratios}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"georet-base towers, batch {args.batch_size}, {args.steps} timed steps, CPU/GPU as torch picks")
    print(f"{'method':8s} {'trainable':>11s} {'peak MB':>9s} {'samples/s':>10s}")
    for name, r in results.items():
        print(f"{name:8s} {r['trainable_params']:>11,d} {r['peak_mem_mb']:>9.1f} {r['samples_per_s']:>10.2f}")
    print(", ".join(f"{k} {v}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
