"""How does georet do on real rasters it never saw? Zero-shot scene labels and text search on hand-labelled tiles.

``labels.csv`` labels 258 tiles of the shared real rasters (Sentinel-2 at 10 m, NAIP at 5 m on two dates,
Landsat at 300 m; see ``make_sheets.py``) with the class that covers most of the tile and the others that are
plainly visible. This script indexes those rasters on the same grid with georet's defaults otherwise (band
stretch, default image runtime, zero-shot scenes), then measures:

* zero-shot scene labels: right when the scene is a visible class (``label`` or ``also``), over the tiles
  where some visible class is one of the model's 30 scene classes; and strictly (scene == label) over tiles
  whose main class is one of them. For one class wording and for the eight the index labels with, each
  also after label propagation over each raster's tiles (``georet.geo.propagate_labels``, as ``georet
  index`` refines them), and on rsicd_aid's test chips (in domain: reported, not selected on);
* zero-shot labels with a legend of this set's classes in plain words (``LEGEND``: "the sea", "a marsh",
  "houses"), its classes anchored to the ones the model was trained with (as ``georet index --classes``
  labels tiles) and not;
* text search: precision@5 and @10 of a plain query per class (fixed before the first run), a hit being right
  when the class is visible in it, over all 258 tiles in one index, as ``georet query`` answers (these short
  queries in eight wordings, then pseudo-relevance feedback from their 10 best places); and pseudo-relevance
  feedback by hand, from the query as embedded (:func:`georet.search.embed_queries`) moved halfway towards
  the mean of its first k tiles (k = 0: none; 10: what ``georet query`` does on these non-overlapping tiles).

    python experiments/real_tiles/run.py --data ../shared/data [--model georet-base --pretrained bundled]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from make_sheets import RASTERS, TILE_PX

from georet import TilingParams, index_raster, open_index
from georet.geo import (
    TILE_LABEL_TEMPLATES,
    SceneClass,
    SceneVocabulary,
    ZeroShotScenes,
    propagate_labels,
    read_classes,
)
from georet.geo.grid import parse_bands
from georet.geo.scenes import PROMPT_TEMPLATE
from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.search import embed_queries
from georet.search.feedback import pseudo_feedback_query
from georet.training import load_retrieval_data
from georet.training.evaluate import load_image

OUT = Path(__file__).with_name("results") / "real_tiles.json"
LABELS = Path(__file__).with_name("labels.csv")
#: one plain query per labelled class, as a user would type it (fixed before the first run)
QUERIES = {"farmland": "farmland", "sea": "the sea", "lake": "a lake", "wetland": "a marsh", "beach": "a beach",
           "forest": "forest", "sparseresidential": "houses", "river": "a river", "island": "an island"}


#: class wordings compared: the one a query's scene prior uses, and the eight tiles are labelled with
WORDINGS = {"one": (PROMPT_TEMPLATE,), "eight (default)": TILE_LABEL_TEMPLATES}
#: a legend of the classes labelled here in plain words, as a user would pass it to ``georet index --classes``
#: (written for the anchoring check, which keeps the weight chosen on short queries), and the labels it merges
LEGEND = {"farmland": "farmland", "sea": "the sea", "lake": "a lake", "wetland": "a marsh", "beach": "a beach",
          "forest": "a forest", "houses": "houses", "river": "a river", "island": "an island", "cloud": "clouds"}
LEGEND_OF = {"sparseresidential": "houses", "mediumresidential": "houses", "pond": "lake"}


def pseudo_relevance_p5(vectors: np.ndarray, texts: np.ndarray, relevant: list[list[bool]], k: int) -> float:
    """Mean precision@5 over the queries when each query vector is moved towards its first ``k`` tiles by
    cosine, as ``georet query`` moves it (:func:`~georet.search.feedback.pseudo_feedback_query`; k = 0: the
    plain cosine ranking), and the tiles are ranked again."""
    hits = []
    for text, right in zip(texts, relevant):
        text = pseudo_feedback_query(text, vectors[np.argsort(-(vectors @ text))[:k]])
        hits.append(np.mean([right[i] for i in np.argsort(-(vectors @ text))[:5]]))
    return round(float(np.mean(hits)), 3)


def legend_scores(model, vectors: np.ndarray, visible: list[list[str]], per_raster) -> dict[str, dict]:
    """Zero-shot labels with :data:`LEGEND` as the vocabulary, its classes anchored to the ones the model was
    trained with (as ``georet index --classes`` labels) and not: the main class, and a visible class."""
    visible = [[LEGEND_OF.get(label, label) for label in v] for v in visible]
    judged = [i for i, v in enumerate(visible) if v[0] in LEGEND]
    legend = [SceneClass(label, words) for label, words in LEGEND.items()]
    result: dict[str, dict] = {"tiles": len(judged)}
    vocabulary = SceneVocabulary.of(model)
    for anchor in (False, True):
        probabilities = ZeroShotScenes(model, legend, TILE_LABEL_TEMPLATES, vocabulary if anchor else None
                                       ).probabilities(vectors)
        entry = {}
        for name, p in (("as labelled", probabilities), ("propagated", per_raster(probabilities))):
            predicted = [list(LEGEND)[i] for i in p.argmax(axis=1)]
            entry[name] = {"main_class": round(float(np.mean([predicted[i] == visible[i][0] for i in judged])), 3),
                           "visible_class": round(float(np.mean([predicted[i] in visible[i] for i in judged])), 3)}
        result["anchored" if anchor else "not anchored"] = entry
    return result


def read_labels() -> dict[tuple[str, int, int], set[str]]:
    """(raster, col_off, row_off) -> the visible classes, main class first."""
    with LABELS.open() as f:
        return {(row["raster"], int(row["col_off"]), int(row["row_off"])):
                [row["label"], *filter(None, row["also"].split(";"))] for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--model", default="georet-base")
    parser.add_argument("--pretrained", default="bundled")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    labels = read_labels()
    classes = read_classes()
    names = [c.label for c in classes]
    model = load_model(ModelSpec.from_options(args.model, args.pretrained))
    labellers = {name: ZeroShotScenes(model, classes, templates) for name, templates in WORDINGS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index"
        for name, bands in RASTERS.items():
            tiling = TilingParams(tile_size=TILE_PX, stride=TILE_PX, bands=parse_bands(bands))
            index_raster([args.data / name], db, tiling=tiling, model=model, progress=False)
        index = open_index(db, model=model)
        rows = index.store.table.to_arrow().select(["source", "col_off", "row_off", "scene", "vector"]).to_pylist()

        def key(row) -> tuple[str, int, int]:
            return str(Path(row["source"]).relative_to(args.data.resolve())), int(row["col_off"]), int(row["row_off"])

        rows = [row for row in rows if key(row) in labels]
        assert len(rows) == len(labels), f"{len(labels) - len(rows)} labelled tiles are not in the index"
        vectors = np.array([row["vector"] for row in rows], np.float32)
        visible = [labels[key(row)] for row in rows]
        judged = [i for i, v in enumerate(visible) if set(names) & set(v)]
        strict = [i for i, v in enumerate(visible) if v[0] in names]

        def scores(probabilities: np.ndarray) -> dict[str, float]:
            predicted = [names[i] for i in probabilities.argmax(axis=1)]
            return {"visible_class": round(float(np.mean([predicted[i] in visible[i] for i in judged])), 3),
                    "main_class": round(float(np.mean([predicted[i] == visible[i][0] for i in strict])), 3)}

        rasters = [np.array([i for i, row in enumerate(rows) if key(row)[0] == name]) for name in RASTERS]

        def per_raster(probabilities: np.ndarray) -> np.ndarray:
            """Label propagation over each raster's own tiles, as georet index refines them."""
            refined = probabilities.copy()
            for members in rasters:
                refined[members] = propagate_labels(vectors[members], probabilities[members])
            return refined

        zero_shot = {"visible_class_tiles": len(judged), "main_class_tiles": len(strict)}
        for name, labeller in labellers.items():
            probabilities = labeller.probabilities(vectors)
            zero_shot[name] = {**scores(probabilities), "propagated": scores(per_raster(probabilities))}
        zero_shot["legend in plain words"] = legend_scores(model, vectors, visible, per_raster)
        default = per_raster(labellers["eight (default)"].probabilities(vectors)).argmax(axis=1)
        assert [row["scene"] for row in rows] == [names[i] for i in default], "the index labels so"
        zero_shot["predicted (default)"] = dict(Counter(row["scene"] for row in rows).most_common())
        search = {}
        for label, query in QUERIES.items():
            hits = index.search(query, k=10)
            right = [label in labels.get(key(hit), ()) for hit in hits.to_dict("records")]
            search[query] = {"class": label, "relevant": sum(label in v for v in labels.values()),
                             "p@5": round(sum(right[:5]) / 5, 2), "p@10": round(sum(right[:10]) / 10, 2)}
    texts = embed_queries(model, list(QUERIES.values()))  # as georet query embeds them
    feedback = {f"top {k}": pseudo_relevance_p5(vectors, texts, [[label in v for v in visible] for label in QUERIES], k)
                for k in (0, 3, 5, 10)}
    test = load_retrieval_data(args.data / "rsicd_aid" / "dataset_rsicd_aid.json", "test")
    test_images = np.concatenate([model.encode_images(model.preprocess.apply(np.stack([load_image(f) for f in batch])))
                                  for batch in np.array_split(test.images, 16)])
    truth = np.array([names.index(s) for s in test.scenes])
    in_domain = {name: round(float(np.mean(labeller.probabilities(test_images).argmax(axis=1) == truth)), 4)
                 for name, labeller in labellers.items()}
    in_domain["eight (default), propagated over the test chips"] = round(float(np.mean(propagate_labels(
        test_images, labellers["eight (default)"].probabilities(test_images)).argmax(axis=1) == truth)), 4)
    mean = {f"mean_p@{k}": round(sum(s[f"p@{k}"] for s in search.values()) / len(search), 3) for k in (5, 10)}
    result = {"model": f"{args.model} ({args.pretrained})", "tiles": len(labels),
              "labels": dict(Counter(v[0] for v in labels.values()).most_common()),
              "zero_shot": zero_shot, "rsicd_aid_test_zero_shot": in_domain, "search": search, **mean,
              "pseudo_relevance_feedback_mean_p@5": feedback}
    write_results(args.out, result)
    for name in WORDINGS:
        z = zero_shot[name]
        print(f"zero-shot, {name} wording(s): visible class {z['visible_class']:.1%} of {len(judged)} tiles "
              f"(propagated {z['propagated']['visible_class']:.1%}), main class {z['main_class']:.1%} of "
              f"{len(strict)}; rsicd_aid test {in_domain[name]:.1%}")
    print(f"legend in plain words (main class / visible class, propagated): {zero_shot['legend in plain words']}")
    print(f"rsicd_aid test, eight wordings, propagated: {in_domain['eight (default), propagated over the test chips']:.1%}")
    for query, s in search.items():
        print(f"  {query!r:16} p@5 {s['p@5']:.2f}  p@10 {s['p@10']:.2f}  ({s['relevant']} relevant)")
    print(f"mean p@5 {mean['mean_p@5']:.3f}, p@10 {mean['mean_p@10']:.3f}; pseudo-relevance feedback "
          f"(plain cosine ranking, then towards the first k tiles): {feedback}")


if __name__ == "__main__":
    main()
