"""``georet train``: fit a method (:mod:`georet.adapters`) on image–caption data.

AdamW over the trainable parameters only, linear warm-up then cosine decay,
AMP (bf16) on CUDA, optional gradient checkpointing, a checkpoint every N
steps plus the best one by validation mR, and resume after interruption from
``OUT/resume.pt``. Checkpoints (``best.pt``, ``last.pt``) hold only the
trainable parameters, the full config and the preprocessing, and plug into
``georet index --checkpoint``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from georet.adapters import AdaptedCLIP
from georet.datasets import CaptionPairs, load_retrieval_data, tiled_scenes
from georet.errors import GeoretError
from georet.evaluate import evaluate
from georet.landcover import read_classes
from georet.losses import FeatureQueues, hmmc_loss, info_nce
from georet.model import EmbeddingModel, ModelSpec, load_model

CHECKPOINT_FORMAT = "georet-checkpoint/1"

DEFAULTS: dict[str, Any] = {
    "model": {"arch": "ViT-B-32", "pretrained": "openai"},
    "method": {"name": "focus", "tap_every": 2, "side_ratio": 0.125, "focus_keep": 0.5},
    "loss": {"name": "infonce", "queue_size": 0, "queue_weight": 1.0, "queue_warmup_steps": 0,
             "hmmc_weight_image": 1.0, "hmmc_weight_text": 1.0, "hmmc_token_dropout": 0.2},
    "scene_aug": {"train_p": 0.0, "query_prior": 0.0},
    "data": {"path": None, "image_root": None, "train_split": "train", "val_fraction": 0.1, "scenes": None,
             # or tiled scenes of your own region: a raster plus a land-cover layer
             "raster": None, "landcover": None, "landcover_field": None, "tile_size": 128},
    "train": {"epochs": 10, "max_steps": None, "batch_size": 64, "lr": 3e-4, "weight_decay": 0.02,
              "warmup_steps": 100, "seed": 0, "amp": True, "grad_checkpointing": False,
              "eval_every_steps": None, "checkpoint_every_steps": 500, "out_dir": "runs/georet",
              "device": "auto", "progress": None},
}


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """YAML config over :data:`DEFAULTS`, then ``key.sub=value`` overrides (values parsed as YAML)."""
    config = copy.deepcopy(DEFAULTS)
    if path:
        path = Path(path)
        if not path.is_file():
            raise GeoretError(f"config not found: {path}")
        try:
            config = _merge(config, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        except yaml.YAMLError as exc:
            raise GeoretError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise GeoretError(f"--set takes key=value, got {item!r}")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise GeoretError(f"--set {key}: unknown section {part!r}")
            node = node[part]
        if leaf not in node:
            raise GeoretError(f"--set {key}: unknown key (known: {', '.join(node)})")
        node[leaf] = yaml.safe_load(raw)
    return config


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _method_config(config: dict) -> dict:
    return {k: v for k, v in config["method"].items() if k != "name"}


def build_adapted(config: dict, device: str = "auto") -> tuple[AdaptedCLIP, EmbeddingModel]:
    """The base model named in ``config`` wrapped with its training method."""
    spec = ModelSpec(config["model"]["arch"], config["model"].get("pretrained"))
    base = load_model(spec, device=device)
    adapted = AdaptedCLIP(base.model, config["method"]["name"], **_method_config(config)).to(base.device)
    if config["train"].get("grad_checkpointing"):
        adapted.grad_checkpointing = True
    evaluator = EmbeddingModel(adapted, base.tokenizer, spec, base.preprocess, base.weights_id, None, base.device)
    return adapted, evaluator


def save_checkpoint(path: Path, adapted: AdaptedCLIP, config: dict, preprocess, extra: dict | None = None) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "arch": config["model"]["arch"],
               "pretrained": config["model"].get("pretrained"), "method": adapted.method,
               "method_config": _method_config(config), "state_dict": adapted.trainable_state_dict(),
               "config": config, "preprocess": json.loads(json.dumps(preprocess.to_dict())), **(extra or {})}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _save_resume(path: Path, adapted: AdaptedCLIP, optimizer, queues: FeatureQueues | None, step: int,
                 best: dict) -> None:
    """Everything a killed run needs to go on exactly where it stopped (or, finished, to be skipped)."""
    torch.save({"trainable": adapted.trainable_state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "queues": queues.state_dict() if queues is not None else None, "step": step,
                "best": best, "torch_rng": torch.get_rng_state()}, path)


def train(config: dict[str, Any]) -> dict[str, Any]:
    """Run training; returns a summary with the best validation metrics and checkpoint paths."""
    cfg_train, cfg_loss = config["train"], config["loss"]
    cfg_data = config["data"]
    if not cfg_data.get("path") and not cfg_data.get("raster"):
        raise GeoretError("set data.path (a Karpathy .json file or a precomp folder) or data.raster + data.landcover")
    _seed_everything(int(cfg_train["seed"]))
    out_dir = Path(cfg_train["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    if cfg_data.get("raster"):
        if not cfg_data.get("landcover"):
            raise GeoretError("data.raster needs data.landcover (vector polygons or a classified raster)")
        data = tiled_scenes(cfg_data["raster"], cfg_data["landcover"], out_dir / "tiles", cfg_data["tile_size"],
                            cfg_data.get("landcover_field"))
    else:
        data = load_retrieval_data(cfg_data["path"], cfg_data["train_split"], cfg_data.get("image_root"))
    if cfg_data.get("scenes"):
        data = data.where_scene(set(cfg_data["scenes"]))
    train_split, val_split = data.split_validation(float(cfg_data["val_fraction"]), int(cfg_train["seed"]))

    adapted, evaluator = build_adapted(config, cfg_train["device"])
    device = evaluator.device
    words = {c.label: c.prompt_words for c in read_classes()}
    dataset = CaptionPairs(train_split, evaluator.preprocess, evaluator.tokenizer, train=True,
                           scene_aug_p=float(config["scene_aug"]["train_p"]), scene_words=words,
                           seed=int(cfg_train["seed"]))
    batch_size = int(cfg_train["batch_size"])
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch == 0:
        raise GeoretError(f"batch size {batch_size} is larger than the {len(dataset)} training captions")
    total = int(cfg_train["max_steps"] or steps_per_epoch * int(cfg_train["epochs"]))
    eval_every = int(cfg_train["eval_every_steps"] or steps_per_epoch)

    params = [p for p in adapted.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": float(cfg_train["weight_decay"])},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=float(cfg_train["lr"])) \
        if params else None
    queues = FeatureQueues(int(cfg_loss["queue_size"]), evaluator.dim).to(device) if cfg_loss["queue_size"] else None
    use_amp = bool(cfg_train["amp"]) and device.type == "cuda"

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

    show = cfg_train.get("progress")
    bar = tqdm(total=total, initial=step, desc=f"train {adapted.method}", unit="step",
               disable=(not show) if show is not None else None, leave=False)
    history: list[dict] = []
    started = time.perf_counter()
    adapted.train()
    while step < total and optimizer is not None:
        epoch, offset = divmod(step, steps_per_epoch)
        for indices in _batches(len(dataset), batch_size, int(cfg_train["seed"]), epoch)[offset:]:
            if step >= total:
                break
            images, tokens, ids = zip(*(dataset[j] for j in indices))
            images, tokens = torch.stack(images).to(device), torch.stack(tokens).to(device)
            ids = torch.tensor(ids, device=device)
            for group in optimizer.param_groups:
                group["lr"] = float(cfg_train["lr"]) * _lr_factor(step, int(cfg_train["warmup_steps"]), total)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                img = adapted.encode_image(images, normalize=True)
                txt = adapted.encode_text(tokens, normalize=True)
                scale = adapted.logit_scale.exp().clamp(max=100.0)
                if cfg_loss["name"] == "hmmc":
                    p = float(cfg_loss["hmmc_token_dropout"])
                    loss = hmmc_loss(img, txt, adapted.encode_image(images, True, p), adapted.encode_text(tokens, True, p),
                                     scale, ids, float(cfg_loss["hmmc_weight_image"]), float(cfg_loss["hmmc_weight_text"]))
                else:
                    loss = info_nce(img, txt, scale, ids)
                if queues is not None and step >= int(cfg_loss["queue_warmup_steps"]):
                    loss = loss + float(cfg_loss["queue_weight"]) * queues.loss(img, txt, scale, ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if queues is not None:
                queues.push(img.float(), txt.float(), ids)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % eval_every == 0 or step == total:
                adapted.eval()  # no adapter dropout while validating
                metrics = evaluate(evaluator, val_split, float(config["scene_aug"]["query_prior"]))
                adapted.train()
                history.append({"step": step, "loss": float(loss.item()), **metrics})
                if metrics["mR"] > best["mR"]:
                    best = {"step": step, **metrics}
                    save_checkpoint(out_dir / "best.pt", adapted, config, evaluator.preprocess, {"step": step, "val": metrics})
            if step % int(cfg_train["checkpoint_every_steps"]) == 0 or step == total:
                save_checkpoint(out_dir / "last.pt", adapted, config, evaluator.preprocess, {"step": step})
                _save_resume(resume, adapted, optimizer, queues, step, best)
    bar.close()
    if optimizer is None and best["mR"] < 0:  # frozen: nothing trains; evaluate once, keep a checkpoint
        best = {"step": 0, **evaluate(evaluator, val_split, float(config["scene_aug"]["query_prior"]))}
        save_checkpoint(out_dir / "best.pt", adapted, config, evaluator.preprocess, {"step": 0, "val": best})
        _save_resume(resume, adapted, optimizer, queues, step, best)
    summary = {"method": adapted.method, "steps": step, "seconds": round(time.perf_counter() - started, 1),
               "trainable_params": adapted.count_trainable(), "best_val": best, "history": history,
               "best_checkpoint": str(out_dir / "best.pt")}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
