"""Training memory and throughput: full fine-tuning vs MRS-Adapter vs Focus-Adapter.

Same architecture, batch and input size; each method in a fresh process; a
few steps on synthetic batches (the numbers do not depend on the pixels).
Memory: on CUDA the peak allocated during training steps above what the loaded
model holds; on CPU the peak RSS above the loaded-model baseline (sampled
every 5 ms). Optimizer state counts: it is training memory.

    python benchmarks/train_efficiency.py [--arch ViT-B-32] [--batch-size 32] [--steps 3] [--json]

Each method trains with its own recipe: full and focus with InfoNCE (focus
adds its 4096-entry feature queue), mrs with PE-RSITR's HMMC (two extra
dropout-augmented passes); ``mrs_infonce`` shows the MRS-Adapter with plain
InfoNCE for an adapter-only comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

METHODS = {"full": ("full", "infonce", 0), "mrs": ("mrs", "hmmc", 0), "mrs_infonce": ("mrs", "infonce", 0),
           "focus": ("focus", "infonce", 4096)}


def worker(name: str, arch: str, batch_size: int, steps: int, device_name: str) -> dict:
    import psutil
    import torch

    from georet.models import AdaptedCLIP, AdapterConfig, open_clip_module, resolve_device
    from georet.training import contrastive_loss, make_optimizer
    from georet.training.config import LossConfig
    from georet.training.losses import FeatureQueues
    from georet.training.trainer import MAX_LOGIT_SCALE

    method, loss_name, queue_size = METHODS[name]
    device = resolve_device(device_name)
    torch.manual_seed(0)
    model = AdaptedCLIP(open_clip_module().create_model(arch), AdapterConfig(method)).to(device).train()
    size = model.visual.preprocess_cfg["size"]
    size = size if isinstance(size, int) else size[0]
    context = model.clip.positional_embedding.shape[0]
    images = torch.randn(batch_size, 3, size, size, device=device)
    tokens = torch.randint(1, 1000, (batch_size, context), device=device)
    tokens[:, -1] = 49407  # EOT
    ids = torch.arange(batch_size, device=device)
    optimizer = make_optimizer(model, lr=1e-5, weight_decay=0.0)
    # the trainer's own loss; the queue joins from the first step so that its cost is measured
    loss_config = LossConfig(name=loss_name, queue_size=queue_size, queue_warmup_steps=0)
    queues = FeatureQueues(queue_size, model.clip.text_projection.shape[1]).to(device) if queue_size else None
    counter = iter(range(10**9))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            image, text = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
            loss = contrastive_loss(image, text, model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE), ids, loss_config,
                                    queues, next(counter), lambda: (model.encode_image(images, True, 0.2),
                                                                    model.encode_text(tokens, True, 0.2)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if queues is not None:
            queues.push(image.detach().float(), text.detach().float(), ids)

    process = psutil.Process()
    if device.type == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        baseline = process.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    if device.type != "cuda":
        sampler.start()
    step()  # warm-up (allocates optimizer state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    stop.set()
    peak_bytes = (torch.cuda.max_memory_allocated() if device.type == "cuda" else peak[0]) - baseline
    return {"peak_mem_mb": round(peak_bytes / 2**20, 1), "samples_per_s": round(steps * batch_size / seconds, 2),
            "trainable_params": model.count_trainable(), "loss": loss_name, "queue": queue_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.arch, args.batch_size, args.steps, args.device)))
        return

    results = {}
    for name in METHODS:
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--arch", args.arch, "--batch-size",
                               str(args.batch_size), "--steps", str(args.steps), "--device", args.device],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    full, mrs, focus = results["full"], results["mrs"], results["focus"]
    ratios = {"focus_mem_vs_full": round(focus["peak_mem_mb"] / full["peak_mem_mb"], 3),
              "focus_mem_vs_mrs": round(focus["peak_mem_mb"] / mrs["peak_mem_mb"], 3),
              "focus_throughput_vs_full": round(focus["samples_per_s"] / full["samples_per_s"], 2),
              "focus_throughput_vs_mrs": round(focus["samples_per_s"] / mrs["samples_per_s"], 2)}
    summary = {"arch": args.arch, "batch_size": args.batch_size, "steps": args.steps, "device": args.device,
               "methods": results, "ratios": ratios}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.arch}, batch {args.batch_size}, {args.steps} timed steps, device {args.device}")
    print(f"{'method':12s} {'loss':8s} {'trainable':>11s} {'peak MB':>9s} {'samples/s':>10s}")
    for name, r in results.items():
        print(f"{name:12s} {r['loss']:8s} {r['trainable_params']:>11,d} {r['peak_mem_mb']:>9.1f} {r['samples_per_s']:>10.2f}")
    print(", ".join(f"{k} {v}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
