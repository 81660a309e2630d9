"""``georet train``: one loop for every model family and method.

:func:`train` reads a :class:`~georet.training.config.TrainConfig`, builds the
model it names (an open_clip CLIP under its method, or a tower model such as
georet-base), and runs :func:`fit`: AdamW over the trainable parameters only,
linear warm-up then cosine decay, InfoNCE or PE-RSITR's HMMC, CMER's
negative-sample queues and scene label augmentation, bf16 autocast on CUDA, a
checkpoint every N steps plus the best one by validation mR, and resume after
interruption from ``OUT/resume.pt``. The loop sees the model only through a
batch encoder (:mod:`georet.training.encoders`), so frozen-tower features can
come from a cache (``train.cache_features``) without another loop.

A tower model whose config asks for several heads (``head_members``; georet-base
has 4) trains one head per seed on the frozen towers and assembles them into
one ensemble (:func:`~georet.training.ensemble.assemble_heads`).

Outputs in ``train.out_dir``: ``best.pt``/``last.pt`` (open_clip: checkpoints for
``--checkpoint``; tower models: weights files for ``--pretrained FILE``),
``config.yaml`` and ``summary.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from georet.errors import GeoretError
from georet.models import AdaptedCLIP, AdapterConfig, ModelSpec, load_model, resolve_device, save_checkpoint
from georet.models.identity import tower_config
from georet.models.preprocess import tower_preprocess
from georet.models.tower_clip import TowerCLIP, TowerCLIPConfig, save_tower_weights
from georet.training.config import LossConfig, TrainConfig
from georet.training.data import RetrievalSplit, load_retrieval_data, tiled_scenes
from georet.training.encoders import (
    CachedImages,
    CachedTexts,
    ClipEncoder,
    Encoder,
    LiveImages,
    LiveTexts,
    TowerEncoder,
    embed_rows,
)
from georet.training.ensemble import assemble_heads
from georet.training.evaluate import retrieval_scores
from georet.training.feature_cache import FeatureCache, cache_images, cache_texts
from georet.training.losses import FeatureQueues, hmmc_loss, info_nce
from georet.training.pairs import EvalSet, Pairs, PairTable
from georet.training.sources import read_source

#: Upper bound of the learned logit scale (1/temperature), as in CLIP, so training cannot diverge through it.
MAX_LOGIT_SCALE = 100.0


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW | None:
    """AdamW over the trainable parameters only (None when nothing trains); no decay on gains and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, image_ids: torch.Tensor,
                     loss: LossConfig, queues: FeatureQueues | None, step: int,
                     second_view: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """The configured loss of one batch of unit-length embeddings; the queue joins after its warm-up.

    ``second_view`` gives HMMC's second (augmented) embeddings of the same batch.
    """
    if loss.name == "hmmc":
        if second_view is None:
            raise GeoretError("loss hmmc needs a second view of the batch")
        image_aug, text_aug = second_view()
        value = hmmc_loss(image, text, image_aug, text_aug, scale, image_ids, loss.hmmc_weight_image,
                          loss.hmmc_weight_text)
    else:
        value = info_nce(image, text, scale, image_ids)
    if queues is not None and step >= loss.queue_warmup_steps:
        value = value + loss.queue_weight * queues.loss(image, text, scale, image_ids)
    return value


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def validation_scores(encoder: Encoder, rows: EvalSet, split: RetrievalSplit, scene_prior: float) -> dict[str, float]:
    """R@1/5/10 both ways and mR of ``encoder`` on a validation set, as ``georet eval`` scores them."""
    image_feats, text_feats = embed_rows(encoder, rows)
    return retrieval_scores(image_feats, text_feats, split, scene_prior, encoder)


@dataclass
class FitResult:
    steps: int
    best: dict[str, Any]
    history: list[dict[str, Any]]
    samples_per_s: float
    seconds: float
    best_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.endswith("logit_scale"))


def fit(encoder: Encoder, pairs: Pairs, val: EvalSet, val_split: RetrievalSplit, config: TrainConfig, seed: int,
        out_dir: Path | None = None, save: Callable[[str, int, dict], None] | None = None) -> FitResult:
    """Train ``encoder.model``'s trainable parameters on ``pairs``; leaves it in its best-on-validation state.

    ``save(kind, step, metrics)`` is called with ``"best"`` on every new best
    validation mR and ``"last"`` every ``checkpoint_every_steps``; with
    ``out_dir``, ``resume.pt`` there lets a killed run go on where it stopped.
    """
    from tqdm.auto import tqdm

    loop, model = config.train, encoder.model
    device = model.logit_scale.device
    use_amp = loop.amp and device.type == "cuda"
    steps_per_epoch = len(pairs) // loop.batch_size
    if steps_per_epoch == 0:
        raise GeoretError(f"batch size {loop.batch_size} is larger than the {len(pairs)} training captions")
    total = loop.max_steps if loop.max_steps is not None else steps_per_epoch * loop.epochs
    eval_every = loop.eval_every_steps or steps_per_epoch
    optimizer = make_optimizer(model, loop.lr, loop.weight_decay)
    queues = FeatureQueues(config.loss.queue_size, encoder.texts(pairs.text[:1]).shape[-1]).to(device) \
        if config.loss.queue_size else None
    step, best, best_state, history = 0, {"mR": -1.0}, {}, []
    resume = out_dir / "resume.pt" if out_dir is not None else None
    if resume is not None and resume.is_file():
        state = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(state["trainable"], strict=False)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if queues is not None and state.get("queues"):
            queues.load_state_dict(state["queues"])
        step, best, best_state = state["step"], state["best"], state["best_state"]
        if state.get("torch_rng") is not None:  # dropout draws from torch's generators: go on where they stopped
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def checkpoint(kind: str, metrics: dict) -> None:
        if save is not None:
            save(kind, step, metrics)

    def keep_resume_state() -> None:
        if resume is not None:
            partial = resume.with_name(resume.name + ".partial")  # a kill mid-save leaves the last whole state
            torch.save({"trainable": trainable_state(model), "step": step, "best": best, "best_state": best_state,
                        "optimizer": optimizer.state_dict() if optimizer is not None else None,
                        "queues": queues.state_dict() if queues is not None else None,
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, partial)
            partial.replace(resume)

    def validate() -> dict[str, float]:
        model.eval()  # no dropout while validating
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            metrics = validation_scores(encoder, val, val_split, config.scene_aug.query_prior)
        model.train()
        return metrics

    bar = tqdm(total=total, initial=step, desc=f"train {config.method.name}", unit="step", leave=False,
               disable=(not loop.progress) if loop.progress is not None else None)
    started, train_seconds, seen = time.perf_counter(), 0.0, 0
    model.train()
    while step < total and optimizer is not None:
        epoch, offset = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(pairs))
        batches = order[:steps_per_epoch * loop.batch_size].reshape(steps_per_epoch, loop.batch_size)
        for batch in batches[offset:]:
            if step >= total:
                break
            rng = np.random.default_rng([seed, epoch, step])  # augmentations and views: reproducible on resume
            text_rows = np.where(rng.random(len(batch)) < config.scene_aug.train_p, pairs.scene_text[batch],
                                 pairs.text[batch])
            image_rows = pairs.image[batch]
            image_ids = torch.from_numpy(image_rows).to(device)
            for group in optimizer.param_groups:
                group["lr"] = loop.lr * lr_factor(step, loop.warmup_steps, total)
            begun = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                image = encoder.images(image_rows, rng)
                text = encoder.texts(text_rows, rng)
                scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
                loss = contrastive_loss(image, text, scale, image_ids, config.loss, queues, step,
                                        lambda: (encoder.images(image_rows, rng, view=1),
                                                 encoder.texts(text_rows, rng, view=1)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if queues is not None:
                queues.push(image.detach().float(), text.detach().float(), image_ids)
            train_seconds += time.perf_counter() - begun
            seen += len(batch)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            out_of_time = loop.time_budget_s is not None and train_seconds >= loop.time_budget_s
            if step % eval_every == 0 or step == total or out_of_time:
                metrics = validate()
                history.append({"step": step, "loss": float(loss.detach()), **metrics})
                if metrics["mR"] > best["mR"]:
                    best, best_state = {"step": step, **metrics}, trainable_state(model)
                    checkpoint("best", best)
            if step % loop.checkpoint_every_steps == 0 or step == total or out_of_time:
                checkpoint("last", {"step": step})
                keep_resume_state()
            if out_of_time:
                total = step
                break
    bar.close()
    if optimizer is None and best["mR"] < 0:  # nothing trains (a frozen CLIP): evaluate once, keep a checkpoint
        best = {"step": 0, **validate()}
        checkpoint("best", best)
        keep_resume_state()
    if best_state:
        model.load_state_dict(best_state, strict=False)
    return FitResult(step, best, history, seen / max(train_seconds, 1e-9), time.perf_counter() - started, best_state)


# -- building what config names ---------------------------------------------------------------
def load_splits(config: TrainConfig, out_dir: Path) -> tuple[RetrievalSplit, RetrievalSplit]:
    """The train and validation splits a recipe trains and selects on (``out_dir`` holds tiles cut from a
    ``data.raster``); studies that must stay off the test split read the validation split from here."""
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
    val_seed = data_cfg.val_seed if data_cfg.val_seed is not None else config.train.seed
    return data.split_validation(data_cfg.val_fraction, val_seed, data_cfg.val_min_distinct_captions)


def load_extra_sources(config: TrainConfig) -> list[RetrievalSplit]:
    """The training side of each ``data.extra`` source (crops and tiles written under ``train.cache_dir``)."""
    work_dir = Path(config.train.cache_dir) / "sources"
    return [read_source(spec, work_dir, "train") for spec in config.data.extra]


def tower_model_config(config: TrainConfig) -> TowerCLIPConfig | None:
    """The tower model ``model.arch`` names, under the configured method; None for open_clip architectures."""
    raw = tower_config(config.model.arch)
    if raw is None:
        return None
    method, arch = config.method, config.model.arch
    defaults = AdapterConfig(method.name)
    for key in ("tap_every", "side_ratio"):
        if getattr(method, key) != getattr(defaults, key):
            raise GeoretError(f"method.{key} applies to open_clip models; {arch} takes its side branches from "
                              f"its model config (georet/models/configs/{arch}.json)")
    if config.model.pretrained is not None:
        raise GeoretError(f"model.pretrained must be null for {arch}: its towers come from their packages and "
                          "its heads are trained here")
    cfg = TowerCLIPConfig.from_dict(raw)
    mrs = {f"mrs_{key}": value for key, value in method.mrs_options().items()}  # the rest: the model config's
    return dataclasses.replace(cfg, method=method.name, image_side=dataclasses.replace(
        cfg.image_side, focus_keep=method.focus_keep), head_members=config.model.head_members or cfg.head_members,
        **mrs)


def _cache_wanted(config: TrainConfig, cfg: TowerCLIPConfig) -> bool:
    cacheable = cfg.method in ("frozen", "focus")
    wanted = config.train.cache_features
    if wanted and not cacheable:
        raise GeoretError(f"train.cache_features needs frozen towers: method {cfg.method} trains them")
    return cacheable if wanted is None else wanted


def _cached(folder: Path, meta: dict, make: Callable[[], FeatureCache]) -> FeatureCache:
    if not (folder / "meta.json").is_file():
        make().save(folder, meta)
    return FeatureCache.load(folder, meta)


def tower_feature_caches(model: TowerCLIP, table: PairTable, config: TrainConfig) -> tuple[FeatureCache, FeatureCache]:
    """The frozen towers' outputs for every image (the model's views, then augmented ones) and text, computed
    on first use into ``train.cache_dir`` and reused by every run over the same data and towers."""
    import hashlib

    cfg, loop = model.cfg, config.train
    root = Path(loop.cache_dir)
    pooled_only = cfg.method == "frozen"  # heads only: no side branch reads the token maps
    image_metas = []
    for paths in table.part_paths():  # one cache per source: adding or dropping one computes only its images
        meta = {"tower": cfg.image_tower, "size": cfg.image_size, "taps": list(cfg.image_taps),
                "views": cfg.image_views, "crop": cfg.centre_crop_view, "augmented": loop.augmented_views,
                "pooled_only": pooled_only, "images": PairTable.fingerprint_of(paths), "n": len(paths)}
        if loop.sensor_views:  # caches made before sensor views existed keep their names
            meta["sensor"] = loop.sensor_views
        image_metas.append((paths, meta))
    text_meta = {"taps": list(cfg.text_taps), "context": cfg.text_context_length, "texts": table.fingerprint("texts"),
                 "n": len(table.texts)}

    def folder(kind: str, meta: dict) -> Path:
        return root / f"{kind}-{hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]}"

    model.eval()
    progress = loop.progress is not False
    images = FeatureCache.concat([_cached(folder("images", meta), meta, lambda: cache_images(
        model, paths, tower_preprocess(cfg.image_size), loop.augmented_views, seed=0, pooled_only=pooled_only,
        progress=progress, sensor=loop.sensor_views)) for paths, meta in image_metas])
    texts = _cached(folder("texts", text_meta), text_meta, lambda: cache_texts(model, table.texts, progress=progress))
    return images, texts


def _tower_encoder(cfg: TowerCLIPConfig, table: PairTable, caches, device: torch.device, seed: int) -> TowerEncoder:
    torch.manual_seed(seed)  # the heads' and side branches' initialisation belongs to the seed
    model = TowerCLIP(cfg)
    model.load_backbones()
    model.to(device)
    for name, param in model.named_parameters():
        param.requires_grad_(model.is_trainable(name))
    if caches is not None:
        images: CachedImages | LiveImages = CachedImages(caches[0], device, view_mean=cfg.method == "frozen")
    else:
        images = LiveImages(table.paths, tower_preprocess(cfg.image_size), device)
    if caches is not None and cfg.method in ("frozen", "focus"):
        texts: CachedTexts | LiveTexts = CachedTexts(caches[1], device)
    else:
        texts = LiveTexts(model.text.tokenizer()(list(table.texts)), device)
    return TowerEncoder(model, images, texts, device)


def _clip_encoder(config: TrainConfig, table: PairTable, device: torch.device, seed: int) -> ClipEncoder:
    torch.manual_seed(seed)
    base = load_model(ModelSpec(config.model.arch, config.model.pretrained), device=str(device))
    adapted = AdaptedCLIP(base.model, config.method).to(base.device)
    adapted.grad_checkpointing = config.train.grad_checkpointing
    return ClipEncoder(adapted, base.preprocess, base.tokenizer, table.paths, table.texts, base.device,
                       config.loss.hmmc_token_dropout)


def _saver(encoder: Encoder, config: TrainConfig, out_dir: Path) -> Callable[[str, int, dict], None]:
    def save(kind: str, step: int, metrics: dict) -> None:
        record = {"config": config.to_dict(), "step": step, **({"val": metrics} if kind == "best" else {})}
        path = out_dir / f"{kind}.pt"
        if isinstance(encoder, ClipEncoder):
            save_checkpoint(path, encoder.model, config.model.arch, config.model.pretrained,
                            encoder.preprocess.to_dict(), record)
        else:
            save_tower_weights(path, encoder.model, record)
    return save


def train(config: TrainConfig) -> dict[str, Any]:
    """Run training; returns a summary with the best validation metrics and checkpoint paths."""
    loop = config.train
    out_dir = Path(loop.out_dir)
    cfg = tower_model_config(config)
    if cfg is None and config.model.head_members is not None:
        raise GeoretError("model.head_members applies to tower models (georet-base); "
                          f"{config.model.arch} is an open_clip architecture")
    use_cache = cfg is not None and _cache_wanted(config, cfg)
    if cfg is not None and cfg.head_members > 1 and (cfg.method != "frozen" or not use_cache):
        raise GeoretError(f"a head ensemble (head_members {cfg.head_members}) trains heads on cached frozen "
                          f"features: use method frozen with train.cache_features, or set model.head_members=1")
    train_split, val_split = load_splits(config, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    table = PairTable.build(train_split, val_split, load_extra_sources(config))
    pairs, val = table.pairs(config.data.distinct_pairs), table.rows(val_split)
    device = resolve_device(loop.device)
    started = time.perf_counter()
    if cfg is None:
        encoder: Encoder = _clip_encoder(config, table, device, loop.seed)
        result = fit(encoder, pairs, val, val_split, config, loop.seed, out_dir, _saver(encoder, config, out_dir))
        summary = {"steps": result.steps, "best_val": result.best, "history": result.history}
    elif cfg.head_members == 1:
        caches = tower_feature_caches(_tower_encoder(cfg, table, None, device, 0).model, table, config) \
            if use_cache else None
        encoder = _tower_encoder(cfg, table, caches, device, loop.seed)
        result = fit(encoder, pairs, val, val_split, config, loop.seed, out_dir, _saver(encoder, config, out_dir))
        summary = {"steps": result.steps, "best_val": result.best, "history": result.history}
    else:
        encoder, summary = _train_head_ensemble(config, cfg, table, pairs, val, device, out_dir)
    summary = {"method": config.method.name, **summary, "seconds": round(time.perf_counter() - started, 1),
               "trainable_params": count_trainable(encoder.model), "best_checkpoint": str(out_dir / "best.pt")}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _train_head_ensemble(config: TrainConfig, cfg: TowerCLIPConfig, table: PairTable, pairs: Pairs, val: EvalSet,
                         device: torch.device, out_dir: Path) -> tuple[Encoder, dict[str, Any]]:
    """``head_members`` single heads from seeds ``seed, seed+1, ...``, Procrustes-assembled into one model."""
    single = dataclasses.replace(cfg, head_members=1)
    caches = tower_feature_caches(_tower_encoder(single, table, None, device, 0).model, table, config)
    members, member_summaries = [], []
    for k in range(cfg.head_members):
        member_dir = out_dir / f"member{k}"
        member_dir.mkdir(exist_ok=True)
        seed = config.train.seed + k
        encoder = _tower_encoder(single, table, caches, device, seed)
        result = fit(encoder, pairs, val, table.val, config, seed, member_dir, _saver(encoder, config, member_dir))
        members.append(encoder.model.eval())
        member_summaries.append({"seed": seed, "steps": result.steps, "best_val": result.best})
    train_rows = table.rows(table.train)
    image_rows, text_rows = np.unique(train_rows.image), np.unique(train_rows.text)
    fit_images = CachedImages(caches[0], device).model_view_mean(image_rows)
    fit_texts = caches[1].batch(text_rows, 0, device)[2]
    ensemble = assemble_heads(members, fit_images, fit_texts)
    encoder = TowerEncoder(ensemble, CachedImages(caches[0], device), CachedTexts(caches[1], device), device)
    best = {"step": None, **validation_scores(encoder, val, table.val, config.scene_aug.query_prior)}
    save_tower_weights(out_dir / "best.pt", ensemble, {"config": config.to_dict(), "val": best,
                                                       "members": copy.deepcopy(member_summaries)})
    return encoder, {"steps": sum(m["steps"] for m in member_summaries), "best_val": best, "history": [],
                     "members": member_summaries}
