"""georet-base: which tower and input size, and which training method, on real rsicd_aid.

Stages (each prints a table; ``--out`` keeps the figures as JSON):

``select``
    EfficientNet-Lite0 vs Lite2, 150 px chips as they are vs upsampled to the
    tower's native size: heads-only (LiT) models trained on cached pooled
    features of ``--select-train`` train images, selected on validation, and
    scored on the test split (3 seeds), plus image-tower throughput.
``study``
    On the chosen tower: LiT heads, CMER (Focus side branches + queue + scene
    augmentation), CMER minus focus layer / queue / scene augmentation, the
    MRS-Adapter in MiniLM (image side heads only), full fine-tuning with the
    same wall-clock as CMER's training, each over ``--seeds``; the query-time
    scene prior on and off; mR mean ± std on test, selection on a validation
    split carved from train (10 %, fixed).

Features of frozen towers are computed once into ``--cache-dir`` (float16).

    python benchmarks/base_study.py select --out benchmarks/results/base_select.json
    python benchmarks/base_study.py study --warm-start --side-width 96 --steps 150 --eval-every 25 \
        --out benchmarks/results/base_study.json --export runs/base/best.pt

``--warm-start`` starts every adapted model from the same seed's LiT heads (its
side branch or adapter is zero-initialised, so it starts equal to LiT).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from georet.geo import ZeroShotScenes, classes_for_labels, default_prompt_words
from georet.models.backbones import minilm_folder
from georet.models.minilm import WordPieceTokenizer
from georet.models.preprocess import tower_preprocess
from georet.models.tower_clip import TowerCLIP, TowerCLIPConfig
from georet.training.data import SCENE_TEMPLATE, RetrievalSplit, load_karpathy
from georet.training.evaluate import scene_prior_matrices
from georet.training.feature_cache import FeatureCache, cache_images, cache_texts
from georet.training.metrics import retrieval_recalls
from georet.training.tower_trainer import (CachedFeatures, EvalSet, LiveImages, LiveTexts, Pairs, Schedule, embed,
                                           train)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rsicd_aid" / "dataset_rsicd_aid.json"
PRIOR = 0.1
BASE_CONFIG = ROOT / "georet" / "models" / "configs" / "georet-base.json"
VAL_FRACTION, VAL_SEED = 0.1, 1234


@dataclasses.dataclass
class Data:
    """All images of train+test in one order (cache rows) and every text once."""

    train: RetrievalSplit
    val: RetrievalSplit
    test: RetrievalSplit
    paths: list[Path]
    texts: list[str]
    min_distinct_captions: int = 1

    @classmethod
    def load(cls, train_images: int | None = None, min_distinct_captions: int = 1) -> "Data":
        """``min_distinct_captions`` > 1: validation only among images with that many distinct captions,
        like the test split (:meth:`RetrievalSplit.split_validation`)."""
        full_train = load_karpathy(DATA, "train")
        if train_images:
            keep = np.random.default_rng(0).permutation(len(full_train.images))[:train_images]
            full_train = full_train.subset(sorted(keep))
        # the random split fixes the row order of the feature caches, whichever validation is used
        cache_train, cache_val = full_train.split_validation(VAL_FRACTION, VAL_SEED)
        train_split, val = full_train.split_validation(VAL_FRACTION, VAL_SEED, min_distinct_captions)
        test = load_karpathy(DATA, "test")
        paths = list(dict.fromkeys([*cache_train.images, *cache_val.images, *test.images]))
        texts = list(dict.fromkeys([*cache_train.captions, *scene_texts(cache_train), *cache_val.captions,
                                    *test.captions, *scene_texts(train_split)]))
        return cls(train_split, val, test, paths, texts, min_distinct_captions)

    def rows(self, split: RetrievalSplit) -> EvalSet:
        image_row = {p: i for i, p in enumerate(self.paths)}
        text_row = {t: i for i, t in enumerate(self.texts)}
        return EvalSet(np.array([image_row[p] for p in split.images]), np.array([text_row[c] for c in split.captions]),
                       np.asarray(split.caption_image))

    def pairs(self, distinct: bool = False) -> Pairs:
        """The train pairs; ``distinct``: each (image, caption) once, not an image's identical captions 5 times."""
        rows = self.rows(self.train)
        text_row = {t: i for i, t in enumerate(self.texts)}
        pairs = Pairs(rows.image[rows.caption_image], rows.text,
                      np.array([text_row[t] for t in scene_texts(self.train)]))
        if not distinct:
            return pairs
        _, first = np.unique(np.stack([pairs.image, pairs.text]), axis=1, return_index=True)
        keep = np.sort(first)
        return Pairs(pairs.image[keep], pairs.text[keep], pairs.scene_text[keep])


def scene_texts(split: RetrievalSplit) -> list[str]:
    """Each caption of ``split`` prefixed with its image's scene (CMER's scene label augmentation)."""
    words = default_prompt_words()
    return [SCENE_TEMPLATE.format(words.get(s, s), c)
            for c, s in zip(split.captions, (split.scenes[i] for i in split.caption_image))]


def cached(folder: Path, meta: dict, make) -> FeatureCache:
    if (folder / "meta.json").is_file():
        return FeatureCache.load(folder, meta)
    cache = make()
    cache.save(folder, meta)
    return FeatureCache.load(folder, meta)


def image_throughput(model: TowerCLIP, size: int, batch: int = 64, repeats: int = 3) -> float:
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        model.image_features(x[:4])
        start = time.perf_counter()
        for _ in range(repeats):
            model.image_features(x)
    return batch * repeats / (time.perf_counter() - start)


class _TextOnly:
    """Enough of an embedding model for :class:`ZeroShotScenes` (class prompts through the trained text side)."""

    def __init__(self, model: TowerCLIP):
        self.model, self.tokenizer = model, model.text.tokenizer()
        self.logit_scale = float(model.logit_scale.detach().exp())

    def encode_text(self, texts):
        with torch.no_grad():
            return torch.nn.functional.normalize(self.model.encode_text(self.tokenizer(list(texts))), dim=-1).numpy()


def test_scores(model: TowerCLIP, images, texts, data: Data) -> dict[str, float]:
    """Test mR without and with the query-time scene prior, and zero-shot scene accuracy on test images."""
    return embedding_scores(model, *embed(model, images, texts, data.rows(data.test)), data)


def embedding_scores(model: TowerCLIP, image_feats: np.ndarray, text_feats: np.ndarray, data: Data
                     ) -> dict[str, float]:
    """:func:`test_scores` of given test embeddings (unit length; images and captions in split order), with
    the prior as ``georet eval`` applies it (no query image's label read)."""
    test = data.rows(data.test)
    sims = image_feats @ text_feats.T
    text_model = _TextOnly(model)
    image_queries, caption_queries = scene_prior_matrices(text_model, data.test, image_feats, text_feats)
    classes = classes_for_labels(data.test.scenes)
    truth = np.array([[c.label for c in classes].index(s) for s in data.test.scenes])
    return {"mR": retrieval_recalls(sims, test.caption_image)["mR"],
            "mR_prior": retrieval_recalls(sims + PRIOR * image_queries, test.caption_image,
                                          caption_query_similarity=sims + PRIOR * caption_queries)["mR"],
            "scene_acc": float(100 * np.mean(ZeroShotScenes(text_model, classes).probabilities(image_feats)
                                             .argmax(1) == truth))}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in ("mR", "mR_prior", "scene_acc", "val_mR", "best_step", "samples_per_s"):
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": values}
    return out


def fmt(summary: dict, key: str) -> str:
    s = summary.get(key)
    return f"{s['mean']:.2f} ± {s['std']:.2f}" if s else "-"


def stage_select(args) -> dict:
    data = Data.load(args.select_train)
    results = {}
    for variant, size in [("efficientnet-lite0", 150), ("efficientnet-lite0", 224),
                          ("efficientnet-lite2", 150), ("efficientnet-lite2", 260)]:
        cfg = TowerCLIPConfig(image_tower=variant, image_size=size, method="lit")
        model = TowerCLIP(cfg)
        model.load_backbones()
        model.eval()
        tag = f"{variant}-{size}-select{args.select_train}"
        images = cached(args.cache_dir / tag, {"variant": variant, "size": size, "n": len(data.paths), "pooled": True},
                        lambda: cache_images(model, data.paths, tower_preprocess(size), pooled_only=True))
        texts = cached(args.cache_dir / f"text-select{args.select_train}", {"n": len(data.texts)},
                       lambda: cache_texts(model, data.texts))
        runs = []
        for seed in args.seeds:
            model = TowerCLIP(cfg)
            model.load_backbones()
            result = train(model, CachedFeatures(images), CachedFeatures(texts), data.pairs(), data.rows(data.val),
                           Schedule(steps=args.select_steps, lr=args.select_lr, eval_every=100, seed=seed), progress=False)
            runs.append({"val_mR": result.best_val["mR"], "best_step": result.best_step,
                         **test_scores(model, CachedFeatures(images), CachedFeatures(texts), data)})
        results[f"{variant} @ {size} px"] = {**summarise(runs), "image_tower_img_per_s": image_throughput(model, size)}
        print(f"{variant} @ {size}: test mR {fmt(results[f'{variant} @ {size} px'], 'mR')}, "
              f"{results[f'{variant} @ {size} px']['image_tower_img_per_s']:.1f} img/s", flush=True)
    return results


STUDY = {  # name: (model config overrides, schedule overrides)
    "LiT heads": ({"method": "lit"}, {}),  # lr: --lit-lr
    # lr 1e-4 for the warm-started adapters: at 1e-3 the side branches' deltas wreck the trained heads
    # within 75 steps (val mR 22.5 -> 13.6, measured)
    "CMER": ({"method": "focus"}, {"lr": 1e-4, "queue_size": 4096, "scene_aug_p": 0.3}),
    "CMER - focus layer": ({"method": "focus", "image_side": {"focus_keep": None}},
                           {"lr": 1e-4, "queue_size": 4096, "scene_aug_p": 0.3}),
    "CMER - queue": ({"method": "focus"}, {"lr": 1e-4, "scene_aug_p": 0.3}),
    "CMER - scene aug": ({"method": "focus"}, {"lr": 1e-4, "queue_size": 4096}),
    "MRS-Adapter": ({"method": "mrs"}, {"lr": 1e-4, "batch_size": 128}),
    "MRS-Adapter + HMMC": ({"method": "mrs"}, {"lr": 1e-4, "batch_size": 128, "loss": "hmmc"}),
    "full FT": ({"method": "full"}, {"lr": 3e-5, "batch_size": 64, "eval_every": 50}),
}


def feature_caches(data: Data, base: TowerCLIPConfig, views: int, cache_dir: Path) -> tuple[FeatureCache, FeatureCache]:
    """The frozen towers' image features (``views`` per image) and text features, computed on first use."""

    @functools.cache
    def frozen() -> TowerCLIP:  # built only when a cache is missing
        model = TowerCLIP(dataclasses.replace(base, method="lit"))
        model.load_backbones()
        return model.eval()

    tag = f"{base.image_tower}-{base.image_size}"
    images = cached(cache_dir / f"{tag}-views{views}-n{len(data.paths)}",
                    {"variant": base.image_tower, "size": base.image_size, "n": len(data.paths), "views": views,
                     "taps": list(base.image_taps)},
                    lambda: cache_images(frozen(), data.paths, tower_preprocess(base.image_size), views=views))
    texts = cached(cache_dir / f"text-n{len(data.texts)}", {"n": len(data.texts), "taps": list(base.text_taps),
                                                          "context": base.text_context_length},
                   lambda: cache_texts(frozen(), data.texts))
    return images, texts


def stage_study(args) -> dict:
    data = Data.load(args.train_images)
    base = dataclasses.replace(TowerCLIPConfig.from_dict(json.loads(BASE_CONFIG.read_text())),
                               image_tower=args.tower, image_size=args.size)
    images, texts = feature_caches(data, base, args.views, args.cache_dir)
    text_ids = WordPieceTokenizer(minilm_folder(), base.text_context_length)(data.texts)
    if args.side_width:
        base = dataclasses.replace(base, image_side=dataclasses.replace(base.image_side, width=args.side_width),
                                   text_side=dataclasses.replace(base.text_side, width=args.side_width))
    results, best_overall = {}, None
    cmer_seconds = None
    lit_heads: dict[int, dict[str, torch.Tensor]] = {}

    def warm_heads(seed: int) -> dict[str, torch.Tensor]:
        """The LiT heads of this seed (trained once), which the adapted models start from with --warm-start."""
        if seed not in lit_heads:
            torch.manual_seed(seed)
            lit = TowerCLIP(dataclasses.replace(base, method="lit"))
            sched = Schedule(steps=args.lit_steps, eval_every=args.lit_steps // 12, lr=args.lit_lr, seed=seed)
            lit_heads[seed] = train(lit, CachedFeatures(images, np.random.default_rng(seed)), CachedFeatures(texts),
                                    data.pairs(), data.rows(data.val), sched, progress=False).state
        return lit_heads[seed]

    for name in args.methods:
        model_over, sched_over = STUDY[name]
        runs = []
        for seed in args.seeds:
            over = dict(model_over)
            if "image_side" in over:
                over["image_side"] = dataclasses.replace(base.image_side, **over["image_side"])
            cfg = dataclasses.replace(base, **over)
            torch.manual_seed(seed)  # the heads' and side branches' initialisation belongs to the seed too
            model = TowerCLIP(cfg)
            model.load_backbones()
            sched = dataclasses.replace(Schedule(steps=args.steps, eval_every=args.eval_every, seed=seed), **sched_over)
            if cfg.method == "lit":
                sched = dataclasses.replace(sched, lr=args.lit_lr, steps=args.lit_steps,
                                            eval_every=args.lit_steps // 12)
            elif args.warm_start:
                model.load_state_dict(warm_heads(seed), strict=False)
                sched = dataclasses.replace(sched, warmup_steps=min(sched.warmup_steps, args.steps // 10),
                                            queue_warmup_steps=min(sched.queue_warmup_steps, args.steps // 6))
            if cfg.method == "full":
                if args.full_ft_budget == "samples":  # as many samples as CMER's steps saw
                    cmer_batch = dataclasses.replace(Schedule(), **STUDY["CMER"][1]).batch_size
                    sched = dataclasses.replace(sched, steps=args.steps * cmer_batch // sched.batch_size)
                else:
                    sched = dataclasses.replace(sched, time_budget_s=cmer_seconds or args.full_budget_s)
                img_src = LiveImages(model, data.paths, tower_preprocess(args.size), np.random.default_rng(seed))
                txt_src = LiveTexts(model, text_ids)
            elif cfg.method == "mrs":
                img_src, txt_src = CachedFeatures(images, np.random.default_rng(seed)), LiveTexts(model, text_ids)
            else:
                img_src, txt_src = CachedFeatures(images, np.random.default_rng(seed)), CachedFeatures(texts)
            started = time.perf_counter()
            result = train(model, img_src, txt_src, data.pairs(), data.rows(data.val), sched, progress=args.progress)
            wall = time.perf_counter() - started
            if name == "CMER" and cmer_seconds is None:
                cmer_seconds = wall
            if cfg.method == "full":
                img_src = LiveImages(model, data.paths, tower_preprocess(args.size))
            run = {"seed": seed, "val_mR": result.best_val["mR"], "best_step": result.best_step,
                   "samples_per_s": result.samples_per_s, "wall_s": wall,
                   **test_scores(model, img_src if cfg.method == "full" else CachedFeatures(images),
                                 txt_src if cfg.method in ("full", "mrs") else CachedFeatures(texts), data)}
            runs.append(run)
            print(f"{name} seed {seed}: val {run['val_mR']:.2f} test {run['mR']:.2f} (+prior {run['mR_prior']:.2f}) "
                  f"scene acc {run['scene_acc']:.1f} step {run['best_step']} {wall:.0f}s", flush=True)
            if args.export and (best_overall is None or run["val_mR"] > best_overall[0]):
                best_overall = (run["val_mR"], name, seed)
                export(model, args.export, {"study": name, "seed": seed, "val": result.best_val, "test": run})
        results[name] = summarise(runs)
    return results


def export(model: TowerCLIP, path: Path, record: dict) -> None:
    from georet.models.tower_clip import save_tower_weights

    path.parent.mkdir(parents=True, exist_ok=True)
    save_tower_weights(path, model, record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["select", "study"])
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "feature_cache")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--select-train", type=int, default=2500, help="train images used by the select stage")
    parser.add_argument("--select-steps", type=int, default=600, help="heads-only steps of the select stage")
    parser.add_argument("--select-lr", type=float, default=1e-3)
    parser.add_argument("--lit-steps", type=int, default=1500, help="heads-only steps of the study")
    parser.add_argument("--lit-lr", type=float, default=3e-4)
    parser.add_argument("--warm-start", action="store_true",
                        help="adapted models start from the same seed's LiT heads (trained first, --lit-steps)")
    parser.add_argument("--side-width", type=int, default=None, help="override the side branches' width")
    parser.add_argument("--tower", default="efficientnet-lite0")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=None, help="use only this many train images (smoke runs)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--full-budget-s", type=float, default=900.0,
                        help="full FT's training time when CMER was not run first (else CMER's)")
    parser.add_argument("--full-ft-budget", choices=["wall-clock", "samples"], default="wall-clock",
                        help="full FT gets CMER's training time, or as many samples as CMER's --steps")
    parser.add_argument("--methods", type=lambda s: s.split(";"), default=list(STUDY))
    parser.add_argument("--export", type=Path, default=None, help="write the best-on-validation model's weights here")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = stage_select(args) if args.stage == "select" else stage_study(args)
    table = [f"{'variant':28s} {'test mR':>14s} {'+ scene prior':>14s} {'scene acc %':>14s} {'val mR':>14s}"]
    for name, r in results.items():
        table.append(f"{name:28s} {fmt(r, 'mR'):>14s} {fmt(r, 'mR_prior'):>14s} {fmt(r, 'scene_acc'):>14s} "
                     f"{fmt(r, 'val_mR'):>14s}")
    print("\n".join(table))
    if args.out:
        args.out.write_text(json.dumps({"stage": args.stage, "argv": sys.argv[1:], "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
