"""Your imagery, not AID's: zero-shot labels with the tile legend, few-shot labels, per-raster alignment and text
search, on real imagery split by place, for one model.

Sets (every tile read as ``georet index`` reads it; places never split):

* ``sentinel2``: the 169 hand-labelled tiles of the shared Sentinel-2 raster (experiments/real_tiles), held
  out of every training recipe: the validation raster;
* ``naip_landsat``: the other 89 labelled tiles (NAIP 5 m on two dates, Landsat 300 m); the recipe with real
  tiles trains on them, so for that model they are not unseen;
* ``ucmerced``: UC Merced scene groups held out by the recipe (a quarter, by a stable hash of the group);
* ``dubai``: the Dubai land-cover crops of mosaic tiles 3 and 5 (held out by the recipe);
* rsicd_aid test chips, zero-shot, in domain (reported, never selected on).

Measured: the main class with the AID legend (30 classes) and the tile legend
(:func:`georet.geo.tile_legend`), each raw and propagated per raster; few-shot labels against shots per
class (0, 1, 3, 5, 10; five draws), the examples drawn from other places than the tiles scored (other blocks
of the raster, or other scene groups), for the Tip-Adapter-style cache and for prototypes; CORAL-style
alignment of each raster's embeddings; text precision@5 of plain class queries, as ``georet query`` embeds
them (eight wordings, anchoring, pseudo-relevance feedback from the 10 best).

    python experiments/your_imagery/run.py --data ../shared/data [--pretrained runs/georet-base-real/best.pt]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
from pathlib import Path

import numpy as np

from georet.geo import (
    TILE_LABEL_TEMPLATES,
    FewShotScenes,
    SceneClass,
    SceneExamples,
    SceneVocabulary,
    ZeroShotScenes,
    propagate_labels,
    read_classes,
    tile_legend,
)
from georet.index.scenes import few_shot_labeller
from georet.models import ModelSpec, cache_dir, load_model
from georet.provenance import write_results
from georet.search import embed_queries
from georet.search.feedback import pseudo_feedback_query
from georet.training import load_retrieval_data
from georet.training.data import load_image, same_size
from georet.training.sources import CLASS_WORDS, SourceSpec, held_out, source_places

OUT = Path(__file__).with_name("results")
LABELS = Path(__file__).parents[1] / "real_tiles" / "labels.csv"
SENTINEL2 = "rasters/sentinel2_virginia_rgb_10m.tif"
RESIDENTIAL = {"sparseresidential", "mediumresidential", "denseresidential"}
BUILT = RESIDENTIAL | {"commercial", "industrial", "center"}
#: a place's class → the legend labels that name it (a label not listed names itself)
ACCEPT = {
    "lake": {"pond"}, "agricultural": {"farmland"}, "airplane": {"airport"}, "buildings": BUILT,
    "chaparral": {"shrubland"}, "freeway": {"viaduct"}, "harbor": {"port"}, "parkinglot": {"parking"},
    "building": BUILT, "land": {"bareland", "desert"}, "road": {"viaduct"},
    "vegetation": {"park", "meadow", "forest", "farmland", "shrubland"}, "water": {"sea", "river", "pond", "port"},
    "sparseresidential": RESIDENTIAL, "mediumresidential": RESIDENTIAL, "denseresidential": RESIDENTIAL,
    "island": {"island"},
}
#: the plain queries of the issue on the Sentinel-2 raster, and a query per class elsewhere (fixed before running)
S2_QUERIES = {"forest": "forest", "sea": "the sea", "farmland": "farmland", "sparseresidential": "a town"}
CLASS_QUERIES = {"agricultural": "farmland", "airplane": "airplanes", "beach": "a beach", "buildings": "buildings",
                 "chaparral": "shrubland", "forest": "forest", "freeway": "a freeway", "harbor": "a harbour",
                 "parkinglot": "a parking lot", "river": "a river", "sea": "the sea", "lake": "a lake",
                 "wetland": "a marsh", "farmland": "farmland", "building": "buildings", "land": "bare land",
                 "water": "water", "vegetation": "trees"}
SHOTS, DRAWS = (0, 1, 3, 5, 10), 5
#: the label sets a user marks on the Sentinel-2 raster, named as they would name them (a town is a class the
#: legend lacks: relabelling adds it)
USER_SETS = {"forest": "forest", "sea": "sea", "farmland": "farmland", "sparseresidential": "town",
             "wetland": "wetland", "beach": "beach"}


def accepted(truth: str) -> set[str]:
    return ACCEPT.get(truth, {truth})


def embed(model, paths: list[Path]) -> np.ndarray:
    out = []
    for start in range(0, len(paths), 64):
        pixels = np.stack(same_size([load_image(p) for p in paths[start:start + 64]]))
        out.append(model.encode_images(model.preprocess.apply(pixels)))
    return np.concatenate(out).astype(np.float32)


def read_sets(data: Path, work: Path) -> dict[str, dict]:
    """name → {paths, truth (main class), visible (all classes), place (raster, scene group, mosaic tile) and
    block (of a raster: 4 × 4 tiles, the same ground at every date; else the place)}."""
    real = source_places(SourceSpec("labelled_tiles", str(LABELS), root=str(data)), work)
    with LABELS.open() as f:
        offsets = [(int(r["col_off"]), int(r["row_off"])) for r in csv.DictReader(f)]
    ucm = [im for im in source_places(SourceSpec("scene_folders", str(data / "ucmerced10")), work)
           if held_out(im.place, (), 0.25)]
    dubai = [im for im in source_places(SourceSpec("landcover_masks", str(data / "dubai_landcover")), work)
             if im.place in ("tile3", "tile5")]

    def pack(images, blocks) -> dict:
        return {"paths": [im.path for im in images], "truth": [im.classes[0] for im in images],
                "visible": [set(im.classes) for im in images], "place": [im.place for im in images],
                "block": list(blocks)}

    s2 = [i for i, im in enumerate(real) if im.place == SENTINEL2]
    rest = [i for i, im in enumerate(real) if im.place != SENTINEL2]
    # blocks of 4 × 4 tiles; the two NAIP dates are one site, so a block is the same ground at either date
    block = [f"{'naip' if 'naip' in im.place else im.place}:{offsets[i][0] // (4 * 150)}:{offsets[i][1] // (4 * 150)}"
            for i, im in enumerate(real)]
    return {"sentinel2": pack([real[i] for i in s2], [block[i] for i in s2]),
            "naip_landsat": pack([real[i] for i in rest], [block[i] for i in rest]),
            "ucmerced": pack(ucm, [im.place for im in ucm]), "dubai": pack(dubai, [im.place for im in dubai])}


def main_class_accuracy(labels: list[str], predicted: np.ndarray, truth: list[str]) -> float:
    return round(float(np.mean([labels[p] in accepted(t) for p, t in zip(predicted, truth)])), 3)


def per_place(vectors, probabilities, places) -> np.ndarray:
    refined = probabilities.copy()
    for place in set(places):
        members = np.array([i for i, p in enumerate(places) if p == place])
        if len(members) > 1:
            refined[members] = propagate_labels(vectors[members], probabilities[members])
    return refined


def raw_and_propagated(labeller: ZeroShotScenes, vectors: np.ndarray, s: dict) -> dict[str, float]:
    """Main-class accuracy of ``vectors`` labelled as they are and propagated per raster."""
    p = labeller.probabilities(vectors)
    return {"raw": main_class_accuracy(labeller.labels, p.argmax(1), s["truth"]),
            "propagated": main_class_accuracy(labeller.labels, per_place(vectors, p, s["place"]).argmax(1), s["truth"])}


def coral(vectors: np.ndarray, places: list[str], target_mean: np.ndarray, target_cov: np.ndarray,
          shrink: float = 0.5) -> np.ndarray:
    """Each place's embeddings whitened by its own covariance and re-coloured by the target's (CORAL),
    its covariance shrunk towards the identity first (a raster of one class has almost none of its own)."""
    def root(cov, inverse):
        values, vecs = np.linalg.eigh(cov)
        values = np.maximum(values, 1e-6) ** (-0.5 if inverse else 0.5)
        return (vecs * values) @ vecs.T
    out = vectors.copy()
    dim = vectors.shape[1]
    colour = root(target_cov, False)
    for place in set(places):
        members = np.array([i for i, p in enumerate(places) if p == place])
        x = vectors[members]
        cov = (1 - shrink) * np.cov(x.T) + shrink * np.trace(np.cov(x.T)) / dim * np.eye(dim)
        aligned = (x - x.mean(0)) @ root(cov, True) @ colour + target_mean
        out[members] = aligned / np.linalg.norm(aligned, axis=1, keepdims=True)
    return out


def adabn_embed(model, paths: list[Path], places: list[str], mix: float) -> np.ndarray:
    """Each place's tiles embedded after the image tower's BatchNorm statistics are re-estimated on that place's
    own tiles (AdaBN), ``mix`` of the way from the training statistics (1: the place's alone); needs the torch
    image side. The training statistics are restored afterwards."""
    import torch

    norms = [m for m in model.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:  # the tower was built under inference mode: its buffers become ordinary tensors to update
        m.running_mean, m.running_var = m.running_mean.clone(), m.running_var.clone()
        m.num_batches_tracked = m.num_batches_tracked.clone()
    trained = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in norms]
    out = np.zeros((len(paths), model.dim), np.float32)
    for place in sorted(set(places)):
        members = [i for i, p in enumerate(places) if p == place]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the place's tiles
            m.train()
        embed(model, [paths[i] for i in members])
        for m, (mean, var, momentum) in zip(norms, trained):
            m.running_mean.mul_(mix).add_((1 - mix) * mean)
            m.running_var.mul_(mix).add_((1 - mix) * var)
            m.momentum = momentum
            m.eval()
        out[members] = embed(model, [paths[i] for i in members])
        for m, (mean, var, _) in zip(norms, trained):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    return out


def few_shot_legend(model, classes, truth_labels) -> ZeroShotScenes:
    """The legend few-shot labels a set with: ``classes`` plus the classes its examples name (in their caption
    words), as relabelling adds them; encoded once per set."""
    known = {c.label for c in classes}
    classes = classes + [SceneClass(c, CLASS_WORDS.get(c, c) or c) for c in sorted(set(truth_labels) - known)]
    return ZeroShotScenes(model, classes, TILE_LABEL_TEMPLATES, SceneVocabulary.of(model, cache_dir("vocabulary")))


def prior_adapted(probabilities: np.ndarray, steps: int = 20) -> np.ndarray:
    """Class probabilities of one raster's tiles re-weighted to the class shares the raster itself seems to
    have (EM prior adaptation, Saerens et al., Neural Computation 2002): no labels, one prior per raster."""
    prior = np.full(probabilities.shape[1], 1.0 / probabilities.shape[1])
    adapted = probabilities
    for _ in range(steps):
        adapted = probabilities * prior * probabilities.shape[1]
        adapted /= adapted.sum(axis=1, keepdims=True)
        prior = adapted.mean(axis=0)
    return adapted


def per_raster(probabilities: np.ndarray, rasters: list[str]) -> np.ndarray:
    """:func:`prior_adapted` over each raster's tiles."""
    out = probabilities.copy()
    for raster in set(rasters):
        members = np.array([i for i, r in enumerate(rasters) if r == raster])
        out[members] = prior_adapted(probabilities[members])
    return out


def few_shot(labeller: ZeroShotScenes, vectors, truth_labels, places, method, shots, seed,
             rasters: list[str] | None = None) -> float:
    """Accuracy on each block's tiles with ``shots`` examples per class drawn from the other blocks, labelled
    by ``labeller`` (:func:`few_shot_legend`) and the examples; with ``rasters`` (each tile's raster), the
    probabilities adapted to each raster's class shares first (:func:`prior_adapted`)."""
    rng = np.random.default_rng(seed)
    right = []
    for place in sorted(set(places)):
        scored = [i for i, p in enumerate(places) if p == place]
        pool = [i for i, p in enumerate(places) if p != place]
        chosen = []
        for label in sorted(set(truth_labels[i] for i in pool)):
            members = [i for i in pool if truth_labels[i] == label]
            chosen += list(rng.choice(members, size=min(shots, len(members)), replace=False))
        model = labeller if not chosen else FewShotScenes(
            labeller, SceneExamples(tuple(truth_labels[i] for i in chosen), vectors[chosen]), method)
        probabilities = model.probabilities(vectors)
        if rasters is not None:
            probabilities = per_raster(probabilities, rasters)
        predicted = probabilities[scored].argmax(axis=1)
        right += [model.labels[p] in accepted(truth_labels[i]) | {truth_labels[i]} for p, i in zip(predicted, scored)]
    return float(np.mean(right))


def sentinel2_user_flow(model, data: Path, work: Path, shots: int = 5) -> dict:
    """The issue's check as a user meets it: ``georet index`` the Sentinel-2 raster with the defaults, ask
    "forest", "the sea", "farmland", "a town"; then mark ``shots`` tiles of each as examples (five draws) and
    relabel, with prototypes and with the probe.
    A default tile (150 px every 100 px) takes the labels of the labelled tile holding its centre; hits
    that are marked examples are not counted (the next best are)."""
    from georet import index_raster, open_index

    labels = {}
    with LABELS.open() as f:
        for row in csv.DictReader(f):
            if row["raster"] == SENTINEL2:
                labels[(int(row["col_off"]) // 150, int(row["row_off"]) // 150)] = \
                    [row["label"], *filter(None, row["also"].split(";"))]
    db = work / "s2-index"
    index_raster([data / SENTINEL2], db, model=model, progress=False)
    index = open_index(db, model=model)
    rows = index.store.table.to_arrow().select(["tile_id", "col_off", "row_off", "scene"]).to_pylist()
    truth = {r["tile_id"]: labels.get(((r["col_off"] + 75) // 150, (r["row_off"] + 75) // 150)) for r in rows}
    towns = RESIDENTIAL | {"commercial"}

    def right(tile_id: str, label: str) -> bool:
        visible = set(truth.get(tile_id) or ())
        return bool(visible & towns) if label == "sparseresidential" else label in visible

    def precision(exclude: set[str]) -> dict[str, float]:
        out = {}
        for label, query in S2_QUERIES.items():
            hits = [t for t in index.search(query, k=5 + len(exclude))["tile_id"] if t not in exclude][:5]
            out[query] = round(float(np.mean([right(t, label) for t in hits])), 2)
        out["mean"] = round(float(np.mean(list(out.values()))), 3)
        return out

    def label_accuracy(exclude: set[str], scenes: dict[str, str] | None = None) -> float:
        if scenes is None:
            scenes = {r["tile_id"]: r["scene"] for r in index.store.table.to_arrow().select(["tile_id", "scene"]).to_pylist()}
        judged = [t for t, v in truth.items() if v and t not in exclude]
        return round(float(np.mean([scenes[t] in accepted(truth[t][0]) | {truth[t][0], USER_SETS.get(truth[t][0])}
                                    for t in judged])), 3)

    result = {"tiles": len(rows), "zero-shot": {"text_p@5": precision(set()), "main_class": label_accuracy(set())}}
    table = index.store.table.to_arrow().select(["tile_id", "vector"])
    tile_ids = table["tile_id"].to_pylist()
    vectors = np.asarray(table["vector"].to_pylist(), dtype=np.float32)
    prior_draws: list[float] = []
    for method in ("prototype", "probe"):
        draws = []
        for seed in range(DRAWS):
            rng = np.random.default_rng(seed)
            marked: set[str] = set()
            for label, set_name in USER_SETS.items():
                pool = sorted(t for t, v in truth.items() if v and v[0] == label)
                chosen = list(rng.choice(pool, size=min(shots, len(pool)), replace=False))
                if set_name in index.label_sets():
                    index.clear_labels(set_name)
                index.label(set_name, positive=chosen)
                marked |= set(chosen)
            index.relabel(list(USER_SETS.values()), method=method)
            draws.append({"text_p@5": precision(marked), "main_class": label_accuracy(marked)})
            if method == "prototype":  # the same labeller, its probabilities adapted to the raster's shares
                labeller, _ = few_shot_labeller(index.store, model, SceneVocabulary.of(model, cache_dir("vocabulary")),
                                                list(USER_SETS.values()), method)
                adapted = prior_adapted(labeller.probabilities(vectors))
                scenes = dict(zip(tile_ids, np.array(labeller.labels)[propagate_labels(vectors, adapted).argmax(1)]))
                prior_draws.append(label_accuracy(marked, scenes))
        result[f"{shots} examples per class, relabelled ({method}), mean and std of {DRAWS} draws"] = {
            "text_p@5": {query: [round(float(np.mean(v)), 3), round(float(np.std(v)), 3)]
                         for query in draws[0]["text_p@5"] for v in [[d["text_p@5"][query] for d in draws]]},
            "main_class": [round(float(np.mean([d["main_class"] for d in draws])), 3),
                           round(float(np.std([d["main_class"] for d in draws])), 3)]}
    result[f"{shots} examples per class (prototype), prior adapted to the raster, main class"] = [
        round(float(np.mean(prior_draws)), 3), round(float(np.std(prior_draws)), 3)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="georet-base")
    parser.add_argument("--pretrained", default="bundled")
    parser.add_argument("--name", default="bundled", help="results file name")
    parser.add_argument("--skip-test", action="store_true", help="leave out the rsicd_aid test chips")
    args = parser.parse_args()

    model = load_model(ModelSpec.from_options(args.model, args.pretrained))
    vocabulary = SceneVocabulary.of(model)
    legends = {"aid30": read_classes(), "tile legend": tile_legend()}
    labellers = {name: ZeroShotScenes(model, classes, TILE_LABEL_TEMPLATES, vocabulary)
                 for name, classes in legends.items()}
    work = Path(tempfile.mkdtemp(prefix="your-imagery-"))  # tiles and crops, read again by AdaBN
    sets = read_sets(args.data, work)
    for s in sets.values():
        s["vectors"] = embed(model, s["paths"])
    result: dict = {"model": f"{args.model} ({args.pretrained})", "sets": {k: len(v["paths"]) for k, v in sets.items()}}
    # 1. zero-shot, legends, propagation, alignment
    aid_mean = aid_cov = None
    zero = {}
    for name, s in sets.items():
        entry = {}
        for legend, labeller in labellers.items():
            p = labeller.probabilities(s["vectors"])
            entry[legend] = main_class_accuracy(labeller.labels, p.argmax(1), s["truth"])
            if name in ("sentinel2", "naip_landsat"):
                entry[f"{legend}, propagated"] = main_class_accuracy(
                    labeller.labels, per_place(s["vectors"], p, s["place"]).argmax(1), s["truth"])
        zero[name] = entry
    result["zero_shot_main_class"] = zero
    # 2. per-raster alignment (CORAL) to the rsicd_aid training chips' embedding statistics
    if not args.skip_test:
        train = load_retrieval_data(args.data / "rsicd_aid" / "dataset_rsicd_aid.json", "train")
        sample = embed(model, list(np.random.default_rng(0).choice(train.images, 1500, replace=False)))
        aid_mean, aid_cov = sample.mean(0), np.cov(sample.T)
        result["coral_main_class"] = {}
        for name in ("sentinel2", "naip_landsat"):
            s = sets[name]
            for shrink in (0.5, 0.9):
                aligned = coral(s["vectors"], s["place"], aid_mean, aid_cov, shrink)
                result["coral_main_class"][f"{name}, shrink {shrink}"] = raw_and_propagated(
                    labellers["tile legend"], aligned, s)
    # 2b. AdaBN: the image tower's BatchNorm statistics re-estimated per raster (torch image side)
    torch_model = load_model(ModelSpec.from_options(args.model, args.pretrained), image_runtime="torch")
    torch_model.model.visual._fold_pending = False  # keep the BatchNorms the inference tower folds into its convs
    result["adabn_main_class"] = {}
    for name in ("sentinel2", "naip_landsat"):
        s = sets[name]
        for mix in (0.5, 1.0):
            adapted = adabn_embed(torch_model, s["paths"], s["place"], mix)
            result["adabn_main_class"][f"{name}, mix {mix}"] = raw_and_propagated(labellers["tile legend"], adapted, s)
    # 3. few-shot: examples from other blocks of the raster / other scene groups or mosaic tiles
    curves = {}
    for name, s in sets.items():
        places = s["block"]
        labeller = few_shot_legend(model, legends["tile legend"], s["truth"])
        for method in ("cache", "prototype", "probe"):
            curve = {}
            for shots in SHOTS:
                scores = [few_shot(labeller, s["vectors"], s["truth"], places, method, shots, seed)
                          for seed in range(DRAWS if shots else 1)]
                curve[str(shots)] = [round(float(np.mean(scores)), 3), round(float(np.std(scores)), 3)]
            curves[f"{name}, {method}"] = curve
    result["few_shot_main_class_mean_std"] = curves
    # 3b. EM prior adaptation per raster (unlabelled): zero-shot (propagated) and after 5 examples a class
    adapted = {}
    for name in ("sentinel2", "naip_landsat"):
        s = sets[name]
        p = labellers["tile legend"].probabilities(s["vectors"])
        adapted[f"{name}, zero-shot"] = {
            "plain": main_class_accuracy(labellers["tile legend"].labels,
                                         per_place(s["vectors"], p, s["place"]).argmax(1), s["truth"]),
            "prior adapted": main_class_accuracy(labellers["tile legend"].labels,
                                                 per_place(s["vectors"], per_raster(p, s["place"]), s["place"]).argmax(1),
                                                 s["truth"])}
        labeller = few_shot_legend(model, legends["tile legend"], s["truth"])
        for how, rasters in (("plain", None), ("prior adapted", s["place"])):
            scores = [few_shot(labeller, s["vectors"], s["truth"], s["block"], "prototype", 5, seed, rasters)
                      for seed in range(DRAWS)]
            adapted.setdefault(f"{name}, 5 examples a class (prototypes)", {})[how] = [
                round(float(np.mean(scores)), 3), round(float(np.std(scores)), 3)]
    result["prior_adaptation_main_class"] = adapted
    # 4. text search, as georet query embeds a short query, then feedback from its 10 best
    search = {}
    for name, s in sets.items():
        queries = S2_QUERIES if name == "sentinel2" else {c: q for c, q in CLASS_QUERIES.items()
                                                         if c in set(s["truth"])}
        texts = embed_queries(model, list(queries.values()), vocabulary)
        entry = {}
        for (label, query), text in zip(queries.items(), texts):
            ranked = np.argsort(-(s["vectors"] @ text))
            text = pseudo_feedback_query(text, s["vectors"][ranked[:10]])
            top = np.argsort(-(s["vectors"] @ text))[:5]
            entry[query] = round(float(np.mean([label in s["visible"][i] or bool(accepted(label) & s["visible"][i])
                                                for i in top])), 2)
        entry["mean"] = round(float(np.mean(list(entry.values()))), 3)
        search[name] = entry
    result["text_p@5"] = search
    if not args.skip_test:
        test = load_retrieval_data(args.data / "rsicd_aid" / "dataset_rsicd_aid.json", "test")
        vectors = embed(model, list(test.images))
        labeller = labellers["tile legend"]
        result["rsicd_aid_test_zero_shot"] = {
            legend: round(float(np.mean([lab.labels[i] == t for i, t in
                                         zip(lab.probabilities(vectors).argmax(1), test.scenes)])), 4)
            for legend, lab in labellers.items()}
        del labeller
    result["sentinel2_raster_as_a_user_meets_it"] = sentinel2_user_flow(model, args.data, work)
    shutil.rmtree(work, ignore_errors=True)
    write_results(OUT / f"{args.name}.json", result)
    import json
    print(json.dumps({k: v for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
