"""``georet train``: fit a method (:mod:`georet.models.adapters`) on image–caption data.

AdamW over the trainable parameters only, linear warm-up then cosine decay,
AMP (bf16) on CUDA, optional gradient checkpointing, a checkpoint every N
steps plus the best one by validation mR, and resume after interruption from
``OUT/resume.pt``. Checkpoints (``best.pt``, ``last.pt``) hold only the
trainable parameters, the full config and the preprocessing, and plug into
``georet index --checkpoint``.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from georet.errors import GeoretError
from georet.geo import default_prompt_words
from georet.models import AdaptedCLIP, EmbeddingModel, ModelSpec, load_model, save_checkpoint
from georet.training.config import TrainConfig
from georet.training.data import CaptionPairs, load_retrieval_data, tiled_scenes
from georet.training.evaluate import evaluate
from georet.training.step import TrainingStep, make_optimizer


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_adapted(config: TrainConfig, device: str = "auto") -> tuple[AdaptedCLIP, EmbeddingModel]:
    """The base model named in ``config`` wrapped with its training method, plus an evaluator over it."""
    spec = ModelSpec(config.model.arch, config.model.pretrained)
    base = load_model(spec, device=device)
    adapted = AdaptedCLIP(base.model, config.method).to(base.device)
    adapted.grad_checkpointing = config.train.grad_checkpointing
    evaluator = EmbeddingModel(adapted, base.tokenizer, spec, base.preprocess, base.weights_id, None, base.device)
    return adapted, evaluator


def _save(path: Path, adapted: AdaptedCLIP, config: TrainConfig, evaluator: EmbeddingModel, **extra) -> None:
    save_checkpoint(path, adapted, config.model.arch, config.model.pretrained, evaluator.preprocess.to_dict(),
                    {"config": config.to_dict(), **extra})


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _save_resume(path: Path, adapted: AdaptedCLIP, optimizer, queues, step: int, best: dict) -> None:
    """Everything a killed run needs to go on exactly where it stopped (or, finished, to be skipped)."""
    torch.save({"trainable": adapted.trainable_state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "queues": queues.state_dict() if queues is not None else None, "step": step,
                "best": best, "torch_rng": torch.get_rng_state()}, path)


def _load_data(config: TrainConfig, out_dir: Path):
    data_cfg = config.data
    if data_cfg.raster:
        if not data_cfg.landcover:
            raise GeoretError("data.raster needs data.landcover (vector polygons or a classified raster)")
        data = tiled_scenes(data_cfg.raster, data_cfg.landcover, out_dir / "tiles", data_cfg.tile_size,
                            data_cfg.landcover_field)
    elif data_cfg.path:
        data = load_retrieval_data(data_cfg.path, data_cfg.train_split, data_cfg.image_root)
    else:
        raise GeoretError("set data.path (a Karpathy .json file or a precomp folder) or data.raster + data.landcover")
    if data_cfg.scenes:
        data = data.where_scene(set(data_cfg.scenes))
    return data.split_validation(data_cfg.val_fraction, config.train.seed, data_cfg.val_min_distinct_captions)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run training; returns a summary with the best validation metrics and checkpoint paths."""
    loop = config.train
    out_dir = Path(loop.out_dir)
    _seed_everything(loop.seed)
    train_split, val_split = _load_data(config, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    adapted, evaluator = build_adapted(config, loop.device)
    device = evaluator.device
    dataset = CaptionPairs(train_split, evaluator.preprocess, evaluator.tokenizer, train=True,
                           scene_aug_p=config.scene_aug.train_p, scene_words=default_prompt_words(), seed=loop.seed)
    steps_per_epoch = len(dataset) // loop.batch_size
    if steps_per_epoch == 0:
        raise GeoretError(f"batch size {loop.batch_size} is larger than the {len(dataset)} training captions")
    total = loop.max_steps or steps_per_epoch * loop.epochs
    eval_every = loop.eval_every_steps or steps_per_epoch
    prior = config.scene_aug.query_prior

    optimizer = make_optimizer(adapted, loop.lr, loop.weight_decay)
    training_step = TrainingStep(adapted, config.loss, evaluator.dim, device, loop.amp)
    queues = training_step.queues

    step, best = 0, {"mR": -1.0}
    resume = out_dir / "resume.pt"
    if resume.is_file():
        state = torch.load(resume, map_location=device, weights_only=False)
        adapted.load_state_dict(state["trainable"], strict=False)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if queues is not None and state.get("queues"):
            queues.load_state_dict(state["queues"])
        step, best = state["step"], state["best"]
        torch.set_rng_state(state["torch_rng"])

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc=f"train {adapted.method}", unit="step",
               disable=(not loop.progress) if loop.progress is not None else None, leave=False)
    history: list[dict] = []
    started = time.perf_counter()
    adapted.train()
    while step < total and optimizer is not None:
        epoch, offset = divmod(step, steps_per_epoch)
        for indices in _batches(len(dataset), loop.batch_size, loop.seed, epoch)[offset:]:
            if step >= total:
                break
            images, tokens, ids = zip(*(dataset[j] for j in indices))
            images, tokens = torch.stack(images).to(device), torch.stack(tokens).to(device)
            for group in optimizer.param_groups:
                group["lr"] = loop.lr * _lr_factor(step, loop.warmup_steps, total)
            loss = training_step(optimizer, images, tokens, torch.tensor(ids, device=device), step)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if step % eval_every == 0 or step == total:
                adapted.eval()  # no adapter dropout while validating
                metrics = evaluate(evaluator, val_split, prior)
                adapted.train()
                history.append({"step": step, "loss": loss, **metrics})
                if metrics["mR"] > best["mR"]:
                    best = {"step": step, **metrics}
                    _save(out_dir / "best.pt", adapted, config, evaluator, step=step, val=metrics)
            if step % loop.checkpoint_every_steps == 0 or step == total:
                _save(out_dir / "last.pt", adapted, config, evaluator, step=step)
                _save_resume(resume, adapted, optimizer, queues, step, best)
    bar.close()
    if optimizer is None and best["mR"] < 0:  # frozen: nothing trains; evaluate once, keep a checkpoint
        best = {"step": 0, **evaluate(evaluator, val_split, prior)}
        _save(out_dir / "best.pt", adapted, config, evaluator, step=0, val=best)
        _save_resume(resume, adapted, optimizer, queues, step, best)
    summary = {"method": adapted.method, "steps": step, "seconds": round(time.perf_counter() - started, 1),
               "trainable_params": adapted.count_trainable(), "best_val": best, "history": history,
               "best_checkpoint": str(out_dir / "best.pt")}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
