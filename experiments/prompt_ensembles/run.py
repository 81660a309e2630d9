"""Do prompt ensembles and transductive refinement help zero-shot labels and one-word text search, in domain
and under sensor shifts?

Users type "farmland", not a caption, and zero-shot land cover asks the model
which of 30 class prompts fits a tile best. Both read one wording of each
class today ("an aerial image of {words}"). A prompt ensemble averages the
embeddings of several wordings. Measured on the georet-base recipe's
**validation** chips (rsicd_aid train, held out from training; never the test
split), clean and under simulated shifts of real products (haze, colour
cast, blur, JPEG, a coarser sensor: 4x down and back up, half the ground
scale: a 2x zoom, and twice the ground: the chip mirrored 2x2): zero-shot
accuracy over the 30 classes, and precision@5 of each class's prompt as a
text query over the chips (a hit is right when its class matches).

Transductive refinement (after RS-TransCLIP, ICASSP 2025, in a simpler form):
the zero-shot class probabilities of all chips of one set are smoothed over
their image-embedding neighbours (label propagation on a k-nearest-neighbour
graph, ``F = (1 - beta) P0 + beta W F``), so chips that look alike agree; the
settings (k = 10, beta = 0.5, 10 steps) were fixed before the run.

    python experiments/prompt_ensembles/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json \
        --out experiments/prompt_ensembles/results/prompt_ensembles.json
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from georet.geo import read_classes
from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.training import load_config, load_splits

SIZE, K = 150, 5
#: the recipe whose validation split the study reads (georet-base's; never its test split)
RECIPE = Path(__file__).resolve().parents[2] / "training" / "configs" / "georet-base.yaml"
TEMPLATE_SETS = {
    "one: an aerial image of {}": ["an aerial image of {}"],
    "bare words: {}": ["{}"],
    "four": ["an aerial image of {}", "a satellite image of {}", "{} seen from above",
             "a remote sensing image of {}"],
    "eight": ["an aerial image of {}", "a satellite image of {}", "{} seen from above",
              "a remote sensing image of {}", "an aerial photograph of {}", "a top-down view of {}",
              "a satellite photo of {}", "there is {} in the image"],
}


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _array_shift(fn):
    return lambda image, _: Image.fromarray(np.clip(fn(np.asarray(image, np.float32)), 0, 255).astype(np.uint8))


def _twice_the_ground(image: Image.Image, _) -> Image.Image:
    """The chip at half size, mirrored into the four quarters: a scene of the same kind over twice the ground."""
    half = image.resize((SIZE // 2, SIZE // 2), Image.BILINEAR)
    canvas = Image.new("RGB", (SIZE // 2 * 2, SIZE // 2 * 2))
    for n, chip in enumerate([half, half.transpose(Image.FLIP_LEFT_RIGHT), half.transpose(Image.FLIP_TOP_BOTTOM),
                              half.transpose(Image.ROTATE_180)]):
        canvas.paste(chip, ((n % 2) * (SIZE // 2), (n // 2) * (SIZE // 2)))
    return canvas.resize((SIZE, SIZE), Image.BILINEAR)


SHIFTS = {
    "clean": lambda image, _: image,
    "haze": _array_shift(lambda x: x * 0.6 + np.array([95.0, 105.0, 125.0])),
    "colour cast": _array_shift(lambda x: x * np.array([0.85, 1.0, 1.15]) + np.array([0.0, 10.0, 35.0])),
    "blur": lambda image, _: image.filter(ImageFilter.GaussianBlur(2)),
    "jpeg q20": lambda image, _: _jpeg(image, 20),
    "coarser sensor (4x down, up)": lambda image, _: image.resize((SIZE // 4, SIZE // 4), Image.BILINEAR).resize(
        (SIZE, SIZE), Image.BILINEAR),
    "half the ground (2x zoom)": lambda image, _: image.crop((SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4)).resize(
        (SIZE, SIZE), Image.BICUBIC),
    "twice the ground (mirrored 2x2)": _twice_the_ground,
}


#: label propagation: neighbours per chip, weight of the neighbours, iterations (fixed before measuring)
NEIGHBOURS, BETA, STEPS = 10, 0.5, 10


def propagate(images: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Zero-shot class probabilities smoothed over the k-nearest-neighbour graph of the image embeddings."""
    similarity = images @ images.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argpartition(-similarity, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
    weights = np.zeros_like(similarity)
    rows = np.arange(len(images))[:, None]
    weights[rows, neighbours] = np.maximum(similarity[rows, neighbours], 0.0)
    weights = (weights + weights.T) / 2
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    refined = probabilities
    for _ in range(STEPS):
        refined = (1 - BETA) * probabilities + BETA * weights @ refined
    return refined


def class_vectors(model, words: list[str], templates: list[str]) -> np.ndarray:
    """Mean of each class's template embeddings, unit length."""
    vectors = np.stack([model.encode_text([t.format(w) for w in words]) for t in templates]).mean(axis=0)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Karpathy JSON with scene labels (rsicd_aid)")
    parser.add_argument("--pretrained", help="georet-base weights file to measure instead of the bundled one")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    _, val = load_splits(load_config(RECIPE, [f"data.path={args.data}"]), Path(tempfile.gettempdir()))
    classes = read_classes()
    labels = [c.label for c in classes]
    truth = np.array([labels.index(s) for s in val.scenes])
    model = load_model(ModelSpec("georet-base", args.pretrained or "bundled"), device="cpu")
    chips = [Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC) for p in val.images]
    text = {name: class_vectors(model, [c.prompt_words for c in classes], templates)
            for name, templates in TEMPLATE_SETS.items()}
    results: dict[str, dict] = {}
    for shift_name, shift in SHIFTS.items():
        shifted = [np.asarray(shift(chip, None)) for chip in chips]
        images = np.concatenate([model.encode_images(model.preprocess.apply(np.stack(shifted[i:i + 64])))
                                 for i in range(0, len(shifted), 64)])
        entry = {}
        for name, vectors in text.items():
            similarity = images @ vectors.T
            accuracy = float(np.mean(similarity.argmax(axis=1) == truth))
            top = np.argsort(-similarity, axis=0)[:K]  # (K, classes): the best chips of each class query
            precision = float(np.mean(truth[top] == np.arange(len(labels))[None, :]))
            logits = model.logit_scale * similarity
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            refined = float(np.mean(propagate(images, probabilities).argmax(axis=1) == truth))
            entry[name] = {"zero_shot_accuracy": round(accuracy, 4), "text_p@5": round(precision, 4),
                           "zero_shot_accuracy_propagated": round(refined, 4)}
        results[shift_name] = entry
        print(shift_name, entry, file=sys.stderr, flush=True)
    if args.out:
        write_results(args.out, {"protocol": {"images": len(chips), "split": "rsicd_aid train → recipe validation",
                                              "k": K, "model": "georet-base", "weights": args.pretrained or "bundled",
                                              "templates": TEMPLATE_SETS,
                                              "propagation": {"neighbours": NEIGHBOURS, "beta": BETA,
                                                              "steps": STEPS}},
                                 "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
