"""Two attempts to lift the bundled georet-base past heads-only training, measured on real rsicd_aid.

All start from the bundled heads and the feature cache of ``base_study.py``
(built on first use); selection is on the validation split, test is scored once.

``views``
    Test-time views: each image embedded in several orientations (quarter
    turns, mirror images, a centre crop) and the embeddings averaged. The view
    set is chosen on validation among those that keep ``georet index`` at
    >= 25 tiles/s (at most 5 forward passes a tile on 2 cores); test mR and
    zero-shot scene accuracy are reported for every set.
``turn-heads``
    LiT heads retrained for the embedding georet-base makes (the head reads
    the mean of the views' pooled features): each training sample's image
    side is the view mean, one single view or one of the cache's 3
    augmented views; validation and test use the view mean. ``--head-hidden`` gives the heads
    a residual MLP of that width (the bundled 1024; 0 = linear heads),
    ``--scene-aug`` prefixes that share of captions with their scene (CMER's
    scene label augmentation), ``--crop-view yes`` adds the centre 75 % crop
    to the views averaged (as ``centre_crop_view`` in the config),
    ``--distinct-pairs`` trains on each (image, caption) pair once (half the
    rsicd_aid images repeat one caption 5 times), ``--ensemble`` also scores
    the first k seeds' heads assembled into one :class:`HeadEnsemble` (k = 2..
    seeds; :func:`georet.training.ensemble.assemble_heads`). ``--seeds``; the
    best single head or ensemble on validation is exported with ``--export``.

``--validation distinct-captions`` (any stage) draws the validation images only
from train images with >= 2 distinct captions, as the test split is
(:meth:`RetrievalSplit.split_validation`): on the default random validation,
lr 1e-3 heads win (val 31.3 against 29.9) yet lose on test (20.2 against
22.1).
``qbnorm``
    Query-bank normalisation (inverted softmax; Bogolin et al., CVPR 2022) at
    query time: each gallery item's score is lowered by its log-sum-exp
    similarity to a bank of *training* queries (train captions for text→image,
    train images for image→text), which demotes "hub" items that match
    everything. β is chosen on validation.
``caption-prior``
    The query-time scene prior from a caption→scene classifier trained on the
    train captions (logistic regression on the bundled text embeddings)
    against the zero-shot class prompts; weights and forms chosen on
    validation.
``top-stages``
    Fine-tune the image tower's last two stages and head conv (stages 5-6 of
    EfficientNet-Lite0, 3.4 M parameters) with both heads, over the cached
    stage-4 maps (the CMER tap, so no new cache), InfoNCE, batch 128, BN
    statistics kept from ImageNet: the part of full fine-tuning that 2 CPU
    cores can afford (0.6 s a step).

    python benchmarks/base_probes.py views --out benchmarks/results/base_views.json
    python benchmarks/base_probes.py turn-heads --seeds 0,1,2,3,4 --head-hidden 1024 --scene-aug 0.3 --crop-view yes \
        --validation distinct-captions --distinct-pairs --ensemble --export georet/models/weights/georet-base.pt
    python benchmarks/base_probes.py qbnorm
    python benchmarks/base_probes.py caption-prior --out benchmarks/results/base_caption_prior.json
    python benchmarks/base_probes.py top-stages --steps 1000 --lr 1e-4 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from base_study import BASE_CONFIG, ROOT, Data, _TextOnly, embedding_scores, feature_caches  # noqa: E402

from georet.geo import ZeroShotScenes, classes_for_labels  # noqa: E402
from georet.models import BUNDLED_WEIGHTS  # noqa: E402
from georet.models.preprocess import tower_preprocess  # noqa: E402
from georet.models.tower_clip import (TowerCLIP, TowerCLIPConfig, centre_crop_view, load_tower_weights,  # noqa: E402
                                      save_tower_weights)
from georet.training.data import load_image  # noqa: E402
from georet.training.ensemble import assemble_heads  # noqa: E402
from georet.training.metrics import retrieval_recalls  # noqa: E402
from georet.training.tower_trainer import CachedFeatures, EvalSet, Schedule, train  # noqa: E402

BATCH = 128


#: the ``crop`` view: the centre 75 % of the side
CROP_FRACTION = 0.75
#: view sets of the ``views`` stage: r<k> = k quarter turns, f<k> = the same mirrored, crop = the centre crop
VIEW_SETS = {"plain": ["r0"], "0° + 180°": ["r0", "r2"], "plain + mirror": ["r0", "f0"],
             "4 quarter turns": ["r0", "r1", "r2", "r3"], "0°, 180° and mirrors": ["r0", "f0", "r2", "f2"],
             "8 turns and mirrors": [f"{m}{k}" for m in "rf" for k in range(4)], "plain + crop": ["r0", "crop"],
             "4 turns + crop": ["r0", "r1", "r2", "r3", "crop"],
             "8 turns and mirrors + crop": [f"{m}{k}" for m in "rf" for k in range(4)] + ["crop"]}
#: forward passes a tile may cost and still index >= 25 tiles/s on 2 cores (measured with the folded
#: BatchNorms: 4 turns + crop, 34.7 tiles/s; before folding, 4 turns ran 36.1 and 5 views 22.6-24.0)
MAX_VIEWS = 5


def mean_recall(images: np.ndarray, texts: np.ndarray, rows: EvalSet) -> float:
    """mR of unit-length image and caption embeddings of an evaluation set."""
    return retrieval_recalls(images @ texts.T, rows.caption_image)["mR"]


def bundled() -> TowerCLIP:
    model = TowerCLIP(TowerCLIPConfig.from_dict(json.loads(BASE_CONFIG.read_text())))  # probes run the parts
    model.load_backbones()
    load_tower_weights(model, BUNDLED_WEIGHTS["georet-base"])
    model.eval()
    size = model.cfg.image_size
    model.visual(torch.zeros(1, 3, size, size))  # builds the (lazy) image trunk
    return model


class Probe:
    """The bundled model over the cached features: embeddings of any split, with a trainable image top."""

    def __init__(self, cache_dir: Path, min_distinct_captions: int = 1):
        self.data = Data.load(min_distinct_captions=min_distinct_captions)
        self.model = bundled()
        images, texts = feature_caches(self.data, self.model.cfg, 3, cache_dir)
        self.images = images
        self.stage4 = images.taps[0]  # (views, images, 100 positions, 112 channels)
        self.text_pooled = torch.from_numpy(np.asarray(texts.pooled[0], dtype=np.float32))
        self.trunk = self.model.visual.trunk

    def image_top(self, maps: torch.Tensor) -> torch.Tensor:
        """Cached stage-4 maps (B, 100, 112) → the tower's pooled feature, through stages 5-6 and the head conv."""
        t = self.trunk
        x = maps.transpose(1, 2).reshape(len(maps), -1, 10, 10)
        return t.bn2(t.conv_head(t.blocks[6](t.blocks[5](x)))).mean(dim=(2, 3))

    def embed(self, rows) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            self.trunk.eval()
            pooled = torch.cat([self.image_top(torch.from_numpy(np.asarray(self.stage4[0, rows.image[s:s + 256]],
                                                                             dtype=np.float32)))
                                for s in range(0, len(rows.image), 256)])
        return self.head_embeddings(self.model, pooled, rows.text)

    def head_embeddings(self, model: TowerCLIP, pooled: np.ndarray | torch.Tensor, text_rows: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Unit-length embeddings, through ``model``'s heads (in eval mode), of pooled image features and of
        the cached captions at ``text_rows``."""
        with torch.no_grad():
            images = F.normalize(model.image_head(torch.as_tensor(pooled)), dim=-1).numpy()
            texts = F.normalize(model.text_head(self.text_pooled[torch.from_numpy(text_rows)]), dim=-1).numpy()
        return images, texts

    def test_scores(self, images: np.ndarray | None = None) -> dict[str, float]:
        """Test mR, with the query-time scene prior, and zero-shot scene accuracy (``images``: test image
        embeddings to use instead of the plain view's)."""
        plain, texts = self.embed(self.data.rows(self.data.test))
        scores = embedding_scores(self.model, plain if images is None else images, texts, self.data)
        return {"test_mR": scores["mR"], "test_mR_prior": scores["mR_prior"], "scene_acc": scores["scene_acc"]}


def _view_features(probe: Probe, paths, names) -> dict[str, torch.Tensor]:
    """Pooled image-tower features of the images at ``paths`` in the named views (r<k>, f<k>, crop)."""
    size = probe.model.cfg.image_size
    preprocess = tower_preprocess(size)
    features: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with torch.no_grad():
        for start in range(0, len(paths), 32):
            x = preprocess.apply(np.stack([load_image(p) for p in paths[start:start + 32]]))
            for name in names:
                if name == "crop":
                    view = centre_crop_view(x, CROP_FRACTION)
                else:
                    view = torch.rot90(x, int(name[1]), dims=(2, 3))
                    view = torch.flip(view, dims=(3,)) if name[0] == "f" else view
                features[name].append(probe.model.visual(view)[1])
    return {name: torch.cat(parts) for name, parts in features.items()}


def views(probe: Probe) -> dict:
    texts = {}
    per_split = {}
    for split in ("val", "test"):
        rows = probe.data.rows(getattr(probe.data, split))
        features = _view_features(probe, getattr(probe.data, split).images,
                                  sorted({view for members in VIEW_SETS.values() for view in members}))
        with torch.no_grad():
            texts[split] = F.normalize(probe.model.text_head(probe.text_pooled[torch.from_numpy(rows.text)]),
                                       dim=-1).numpy()
            per_split[split] = {name: F.normalize(probe.model.image_head(torch.stack([features[m] for m in members])
                                                                         .mean(0)), dim=-1).numpy()
                                for name, members in VIEW_SETS.items()}
    out = {}
    for name, members in VIEW_SETS.items():
        val = probe.data.rows(probe.data.val)
        out[name] = {"views": len(members),
                     "val_mR": retrieval_recalls(per_split["val"][name] @ texts["val"].T, val.caption_image)["mR"],
                     **probe.test_scores(per_split["test"][name])}
    affordable = [n for n in out if out[n]["views"] <= MAX_VIEWS]
    chosen = max(affordable, key=lambda n: out[n]["val_mR"])
    print(f"{'views':30s} {'n':>2s} {'val mR':>7s} {'test mR':>8s} {'+ prior':>8s} {'scene acc':>10s}")
    for name, r in out.items():
        print(f"{name:30s} {r['views']:2d} {r['val_mR']:7.2f} {r['test_mR']:8.2f} {r['test_mR_prior']:8.2f} "
              f"{r['scene_acc']:9.1f}%")
    print(f"chosen on validation among sets of <= {MAX_VIEWS} views: {chosen}")
    return {"sets": out, "chosen": chosen}


def model_view_features(probe: Probe, cache_dir: Path, crop: bool) -> np.ndarray:
    """Pooled image-tower features of every image in the views georet-base embeds, float16, cached:
    its 4 quarter turns and, with ``crop``, the centre crop; (views, images, 1280)."""
    cfg = probe.model.cfg
    stem = f"{cfg.image_tower}-{cfg.image_size}"
    parts = [("turns4", [f"r{k}" for k in range(4)])] + ([(f"crop{CROP_FRACTION:g}", ["crop"])] if crop else [])
    arrays = []
    for name, views in parts:
        path = cache_dir / f"{stem}-{name}-n{len(probe.data.paths)}.npy"
        if not path.is_file():
            features = _view_features(probe, probe.data.paths, views)
            np.save(path, torch.stack(list(features.values())).half().numpy())
        arrays.append(np.load(path))
    return np.concatenate(arrays)


@dataclasses.dataclass
class _PooledViews:
    """Pooled features in several views; training draws a random view, evaluation takes view 0."""

    pooled: np.ndarray  # (views, images, dim)
    rng: np.random.Generator

    def features(self, items: np.ndarray, train: bool = False):
        views = self.rng.integers(len(self.pooled), size=len(items)) if train else 0
        return [], torch.from_numpy(np.ascontiguousarray(self.pooled[views, items])).float()


def turn_heads(probe: Probe, cache_dir: Path, seeds: list[int], lr: float, steps: int, head_hidden: int,
               scene_aug: float, crop: bool, distinct_pairs: bool, ensemble: bool, export: Path | None) -> dict:
    per_view = model_view_features(probe, cache_dir, crop)
    view_mean = per_view.astype(np.float32).mean(0)
    _, texts = feature_caches(probe.data, probe.model.cfg, 3, cache_dir)
    views = np.concatenate([view_mean[None].astype(np.float16), per_view, np.asarray(probe.images.pooled)])
    val, test = probe.data.rows(probe.data.val), probe.data.rows(probe.data.test)
    pairs = probe.data.pairs(distinct=distinct_pairs)
    record = {"study": "turn-heads", "lr": lr, "steps": steps, "head_hidden": head_hidden, "scene_aug": scene_aug,
              "crop": crop, "distinct_pairs": distinct_pairs, "val_min_distinct_captions": probe.data.min_distinct_captions}

    def scores(model: TowerCLIP) -> dict[str, float]:
        val_mR = mean_recall(*probe.head_embeddings(model, view_mean[val.image], val.text), val)
        test_scores = embedding_scores(model, *probe.head_embeddings(model, view_mean[test.image], test.text),
                                       probe.data)
        return {"val_mR": val_mR, "test_mR": test_scores["mR"], "test_mR_prior": test_scores["mR_prior"],
                "scene_acc": test_scores["scene_acc"]}

    runs, models = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        heads = TowerCLIP(dataclasses.replace(probe.model.cfg, method="lit", head_hidden=head_hidden, head_members=1,
                                              centre_crop_view=CROP_FRACTION if crop else None))
        heads.visual, heads.text = probe.model.visual, probe.model.text  # the loaded towers, for prompts and export
        result = train(heads, _PooledViews(views, np.random.default_rng(seed)), CachedFeatures(texts), pairs, val,
                       Schedule(steps=steps, eval_every=steps // 12, lr=lr, scene_aug_p=scene_aug, seed=seed),
                       progress=False)
        run = {"seed": seed, "best_step": result.best_step, **scores(heads.eval())}
        print(json.dumps(run), flush=True)
        runs.append(run)
        models.append(heads)
    summary = {key: {"mean": float(np.mean([r[key] for r in runs])), "std": float(np.std([r[key] for r in runs]))}
               for key in ("val_mR", "test_mR", "test_mR_prior", "scene_acc")}
    print(" ".join(f"{key} {v['mean']:.2f} ± {v['std']:.2f}" for key, v in summary.items()))
    candidates = {f"seed {r['seed']}": (r, m) for r, m in zip(runs, models)}
    if ensemble:  # the first k seeds' heads as one ensemble, k = 2..n; Procrustes fitted on train embeddings
        train_rows = probe.data.rows(probe.data.train)
        fit_images = torch.from_numpy(view_mean[np.unique(train_rows.image)])
        fit_texts = probe.text_pooled[torch.from_numpy(np.unique(train_rows.text))]
        for k in range(2, len(models) + 1):
            assembled = assemble_heads(models[:k], fit_images, fit_texts)
            candidates[f"ensemble of {k}"] = ({"members": k, **scores(assembled)}, assembled)
            print(json.dumps({"ensemble": k, **candidates[f"ensemble of {k}"][0]}), flush=True)
    chosen = max(candidates, key=lambda name: candidates[name][0]["val_mR"])
    print(f"chosen on validation: {chosen} ({json.dumps(candidates[chosen][0])})")
    if export:
        save_tower_weights(export, candidates[chosen][1], {**record, "chosen": chosen, **candidates[chosen][0]})
    return {"runs": runs, "summary": summary, "ensembles": [c for c, _ in candidates.values() if "members" in c],
            "chosen": chosen}


def caption_prior(probe: Probe, cache_dir: Path) -> dict:
    """The query-time scene prior with a *trained* caption→scene classifier instead of zero-shot prompts.

    A logistic regression on the bundled model's text embeddings of the train
    captions (labels: their image's scene); each family's weight and form
    (β·p, or β·log p) chosen on validation, test scored once.
    """
    cfg = probe.model.cfg
    view_mean = model_view_features(probe, cache_dir, cfg.centre_crop_view is not None).astype(np.float32).mean(0)
    classes = classes_for_labels(probe.data.test.scenes)
    index = {c.label: k for k, c in enumerate(classes)}
    zero_shot = ZeroShotScenes(_TextOnly(probe.model), classes)

    def embeddings(split) -> tuple[EvalSet, np.ndarray, np.ndarray, np.ndarray]:
        rows = probe.data.rows(split)
        images, texts = probe.head_embeddings(probe.model, view_mean[rows.image], rows.text)
        return rows, images, texts, np.array([index[s] for s in split.scenes])

    rows, _, train_texts, train_scenes = embeddings(probe.data.train)
    torch.manual_seed(0)
    classifier = torch.nn.Linear(train_texts.shape[1], len(classes))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=0.05, weight_decay=1e-2)
    x, y = torch.from_numpy(train_texts), torch.from_numpy(train_scenes[rows.caption_image])
    for _ in range(300):  # full batch: 40k captions x 256 dims
        optimizer.zero_grad()
        F.cross_entropy(classifier(x), y).backward()
        optimizer.step()
    priors = {f"zero-shot, {b:g}·p": ("zero-shot", lambda p, b=b: b * p) for b in (0.05, 0.1, 0.2)}
    priors |= {f"trained, {b:g}·p": ("trained", lambda p, b=b: b * p) for b in (0.05, 0.1, 0.2, 0.3)}
    priors |= {f"trained, {b:g}·log p": ("trained", lambda p, b=b: b * np.log(p + 1e-4)) for b in (0.02, 0.05, 0.1)}
    out: dict = {}
    for split in ("val", "test"):
        rows, images, texts, scenes = embeddings(getattr(probe.data, split))
        with torch.no_grad():
            probs = {"zero-shot": zero_shot.probabilities(texts),
                     "trained": F.softmax(classifier(torch.from_numpy(texts)), dim=-1).numpy()}
        sims = images @ texts.T
        caption_scene = scenes[rows.caption_image]
        predicted = zero_shot.probabilities(images).argmax(1)  # an image query's scene, as georet eval has it

        def with_prior(p: np.ndarray, form) -> float:
            return retrieval_recalls(sims + form(p[:, predicted].T), rows.caption_image,
                                     caption_query_similarity=sims + form(p[:, scenes].T))["mR"]

        out[split] = {"no prior": retrieval_recalls(sims, rows.caption_image)["mR"],
                      **{f"caption scene acc, {k}": float(100 * np.mean(v.argmax(1) == caption_scene))
                         for k, v in probs.items()},
                      **{name: with_prior(probs[source], form) for name, (source, form) in priors.items()}}
    chosen = {source: max((n for n in priors if priors[n][0] == source), key=lambda n: out["val"][n])
              for source in ("zero-shot", "trained")}
    for source, name in chosen.items():
        print(f"{source:10s} prior chosen on validation: {name:22s} val {out['val'][name]:.2f}  "
              f"test {out['test'][name]:.2f}  (caption scene acc on test "
              f"{out['test'][f'caption scene acc, {source}']:.1f} %)")
    print(f"no prior: val {out['val']['no prior']:.2f}  test {out['test']['no prior']:.2f}")
    return {"splits": out, "chosen": chosen}


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def qbnorm(probe: Probe, betas=(10.0, 20.0, 30.0, 50.0)) -> dict:
    train = probe.data.rows(probe.data.train)
    bank_images, bank_texts = probe.embed(dataclasses.replace(train, image=np.unique(train.image),
                                                              text=np.unique(train.text)))
    out = {}
    for split in ("val", "test"):
        rows = probe.data.rows(getattr(probe.data, split))
        images, texts = probe.embed(rows)
        sims = images @ texts.T
        out[split] = {"plain": retrieval_recalls(sims, rows.caption_image)["mR"]}
        for beta in betas:
            t2i = retrieval_recalls(sims - _logsumexp(beta * bank_texts @ images.T, 0)[:, None] / beta,
                                    rows.caption_image)
            i2t = retrieval_recalls(sims - _logsumexp(beta * bank_images @ texts.T, 0)[None, :] / beta,
                                    rows.caption_image)
            out[split][f"beta={beta:g}"] = float(np.mean([i2t[f"i2t_r{k}"] for k in (1, 5, 10)]
                                                         + [t2i[f"t2i_r{k}"] for k in (1, 5, 10)]))
    chosen = max((k for k in out["val"] if k != "plain"), key=lambda k: out["val"][k])
    out["chosen_on_val"] = chosen
    print(f"plain: val {out['val']['plain']:.2f} test {out['test']['plain']:.2f}")
    for key in out["val"]:
        if key != "plain":
            print(f"{key}: val {out['val'][key]:.2f} test {out['test'][key]:.2f}")
    print(f"chosen on validation: {chosen} → test {out['test'][chosen]:.2f}")
    return out


def top_stages(probe: Probe, steps: int, lr: float, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, trunk = probe.model, probe.trunk
    top_params = [p for m in (trunk.blocks[5], trunk.blocks[6], trunk.conv_head, trunk.bn2) for p in m.parameters()]
    head_params = [*model.image_head.parameters(), *model.text_head.parameters(), model.logit_scale]
    groups = [{"params": top_params, "lr": lr}, {"params": head_params, "lr": 1e-4}]
    base_lrs = [g["lr"] for g in groups]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    pairs, val = probe.data.pairs(), probe.data.rows(probe.data.val)

    def val_mR() -> float:
        return mean_recall(*probe.embed(val), val)

    best = (val_mR(), 0, {k: v.clone() for k, v in model.state_dict().items()})
    print(f"start: val {best[0]:.2f}", flush=True)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        scale = min(1.0, step / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group, base_lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base_lr * scale
        pick = rng.choice(len(pairs.image), BATCH, replace=False)
        images = pairs.image[pick]
        trunk.train()
        for module in trunk.modules():  # ImageNet's BN statistics: batches of 128 aerial chips are one domain
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        maps = torch.from_numpy(np.asarray(probe.stage4[rng.integers(0, 3, BATCH), images], dtype=np.float32))
        image_emb = F.normalize(model.image_head(probe.image_top(maps)), dim=-1)
        text_emb = F.normalize(model.text_head(probe.text_pooled[torch.from_numpy(pairs.text[pick])]), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
        sibling = torch.from_numpy(images[:, None] == images[None, :]) & ~torch.eye(BATCH, dtype=torch.bool)
        logits = logits.masked_fill(sibling, -1e4)  # another caption of the same image is no negative
        target = torch.arange(BATCH)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps:
            score = val_mR()
            print(f"step {step}: loss {loss.item():.3f} val {score:.2f} "
                  f"({(time.perf_counter() - started) / step:.2f} s/step)", flush=True)
            if score > best[0]:
                best = (score, step, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[2])
    result = {"seed": seed, "steps": steps, "lr": lr, "best_step": best[1], "val_mR": best[0],
              "s_per_step": (time.perf_counter() - started) / steps, **probe.test_scores()}
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["views", "turn-heads", "qbnorm", "top-stages", "caption-prior"])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--export", type=Path, default=None, help="turn-heads: write the best-on-validation weights")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "feature_cache")
    parser.add_argument("--steps", type=int, default=None, help="top-stages: 1000; turn-heads: 1500")
    parser.add_argument("--lr", type=float, default=None, help="top-stages (its top stages): 1e-4; turn-heads: 3e-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head-hidden", type=int, default=None,
                        help="turn-heads: width of the heads' residual MLP (0: linear; default: the bundled config's)")
    parser.add_argument("--crop-view", choices=["yes", "no"], default=None,
                        help="turn-heads: add the centre-crop view to the 4 turns (default: as the bundled config)")
    parser.add_argument("--scene-aug", type=float, default=0.3,
                        help="turn-heads: share of captions given their scene prefix in training")
    parser.add_argument("--validation", choices=["random", "distinct-captions"], default="random",
                        help="validation images drawn from all train images, or only from those with >= 2 distinct "
                             "captions, like the test split")
    parser.add_argument("--distinct-pairs", action="store_true",
                        help="turn-heads: train on each (image, caption) pair once")
    parser.add_argument("--ensemble", action="store_true",
                        help="turn-heads: also assemble the first k seeds' heads into one ensemble (k = 2..seeds)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    probe = Probe(args.cache_dir, 2 if args.validation == "distinct-captions" else 1)
    result = {"views": lambda: views(probe), "qbnorm": lambda: qbnorm(probe),
              "caption-prior": lambda: caption_prior(probe, args.cache_dir),
              "turn-heads": lambda: turn_heads(probe, args.cache_dir, args.seeds, args.lr or 3e-4, args.steps or 1500,
                                               probe.model.cfg.head_hidden if args.head_hidden is None
                                               else args.head_hidden, args.scene_aug,
                                               probe.model.cfg.centre_crop_view is not None if args.crop_view is None
                                               else args.crop_view == "yes", args.distinct_pairs, args.ensemble,
                                               args.export),
              "top-stages": lambda: top_stages(probe, args.steps or 1000, args.lr or 1e-4, args.seed)}[args.stage]()
    if args.out:
        args.out.write_text(json.dumps({"stage": args.stage, "argv": sys.argv[1:], "result": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
