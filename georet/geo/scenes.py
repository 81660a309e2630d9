"""Scene vocabulary: class labels, their prompt words, and zero-shot class probabilities.

One vocabulary serves every place that speaks of scene classes: zero-shot land
cover while indexing, the query-time scene prior of relational search and of
evaluation, and scene label augmentation in training. Class files hold one class
per line, ``label`` or ``label: prompt words`` (``denseresidential: dense
residential area``); ``#`` starts a comment. Labels the default vocabulary does
not know (a land-cover layer's own classes) are their own prompt words.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Literal, Protocol, Sequence, get_args

import numpy as np

from georet.errors import GeoretError, NotFoundError
from georet.files import atomic_write

DEFAULT_CLASSES_FILE = Path(__file__).resolve().parents[1] / "data" / "scene_classes.txt"
#: the classes real rasters hold and AID lacks (sea, wetland, cloud, snow, shrubland); see :func:`tile_legend`
LAND_COVER_FILE = DEFAULT_CLASSES_FILE.with_name("land_cover_classes.txt")
PROMPT_TEMPLATE = "an aerial image of {}"
#: the wordings whose mean names a class when tiles are labelled: on real rasters the model never saw (Sentinel-2,
#: NAIP, Landsat; experiments/real_tiles) 54 % of tiles get a visible class against 42 % with
#: :data:`PROMPT_TEMPLATE` alone, and on rsicd_aid validation chips 91.1 % against 90.8 %, ahead under most
#: simulated sensor shifts too (experiments/prompt_ensembles)
TILE_LABEL_TEMPLATES = (PROMPT_TEMPLATE, "a satellite image of {}", "{} seen from above", "a remote sensing image of {}",
                        "an aerial photograph of {}", "a top-down view of {}", "a satellite photo of {}",
                        "there is {} in the image")


#: the label of a tile that fits no class well enough (its best probability under the labeller's
#: ``min_confidence``): better said than the nearest wrong class
UNKNOWN = "unknown"


@dataclass(frozen=True)
class SceneClass:
    label: str
    prompt_words: str

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(self.prompt_words)


@dataclass(frozen=True)
class SceneLabel:
    """A tile's scene: class, confidence (probability or area fraction) and, from a layer, all fractions."""

    scene: str
    score: float
    fractions: dict[str, float] | None = None

    def fractions_json(self) -> str:
        return json.dumps(self.fractions, sort_keys=True) if self.fractions else ""


def read_classes(path: str | Path | None = None) -> list[SceneClass]:
    """Parse a class vocabulary file (default: the shipped 30 AID/RSICD scene classes)."""
    path = Path(path) if path else DEFAULT_CLASSES_FILE
    if not path.is_file():
        raise NotFoundError(f"classes file not found: {path}")
    classes: list[SceneClass] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        label, _, words = line.partition(":")
        if not label.strip():
            raise GeoretError(f"{path}: {line!r} has no class label before its ':'")
        classes.append(SceneClass(label.strip(), words.strip() or label.strip()))
    labels = [c.label for c in classes]
    if len(labels) < 2:
        raise GeoretError(f"{path}: a class vocabulary needs at least two classes")
    if len(set(labels)) != len(labels):
        raise GeoretError(f"{path}: duplicate class labels")
    return classes


def tile_legend() -> list[SceneClass]:
    """The default legend of tile labels: AID's 30 scene classes, then :data:`LAND_COVER_FILE`'s.

    AID has no open sea, marsh, cloud, snow or shrubland, so on a Sentinel-2 coast the sea had to be called
    something else (forest, at 0.62). The scene vocabulary the models were trained with stays AID's 30.
    """
    return read_classes() + read_classes(LAND_COVER_FILE)


@lru_cache(maxsize=1)
def default_prompt_words() -> dict[str, str]:
    """``{label: prompt words}`` of the default vocabulary."""
    return {c.label: c.prompt_words for c in read_classes()}


def classes_for_labels(labels: Iterable[str | None]) -> list[SceneClass]:
    """The distinct non-empty ``labels``, sorted, with the default vocabulary's prompt words where known."""
    words = default_prompt_words()
    return [SceneClass(label, words.get(label, label)) for label in sorted({str(s) for s in labels if s})]


class TextEncoder(Protocol):
    """What zero-shot scenes and queries need of a model: its unit text embeddings and, for a model whose heads
    sit on a frozen pretrained text tower, the tower's own unit vectors (``None`` for other models; see
    :class:`SceneVocabulary`), alone or both from one pass."""

    logit_scale: float

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray | None: ...

    def text_and_sentence_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]: ...


#: a name the model was not trained with moves this far towards the model's own scene classes, weighted by a
#: softmax of their closeness in the text tower's own space at this temperature (chosen on rsicd_aid validation
#: chips and the real tiles for short queries: experiments/wording)
ANCHOR_WEIGHT, ANCHOR_TEMPERATURE = 0.5, 0.05


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def class_vectors(model: TextEncoder, classes: Sequence[SceneClass], templates: Sequence[str]) -> np.ndarray:
    """(classes, dim): the unit mean of each class's prompt in every wording of ``templates``."""
    return _unit(np.mean([model.encode_text([t.format(c.prompt_words) for c in classes]) for t in templates], axis=0))


#: bump when what a cached vocabulary file holds changes
VOCABULARY_FORMAT = 1


@dataclass(frozen=True)
class SceneVocabulary:
    """The scene classes a model was trained to know, as anchors for names it was not.

    georet-base's heads learnt RSICD's few words: "cropland" lands next to *bare land*. The frozen MiniLM
    below them learnt general English and still puts "cropland" next to "farmland". A name (a short
    query, a class of the user's own legend) is compared with these classes' words in the tower's own
    space (``words``) and moved towards their label vectors in the shared space (``vectors``: eight
    wordings, as tiles are labelled) by :meth:`anchored`.
    """

    labels: tuple[str, ...]
    words: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of(cls, model: TextEncoder, cache_dir: Path | None = None) -> "SceneVocabulary | None":
        """The shipped 30 classes (those georet's models are trained with) for ``model``; None when it has no
        frozen text tower of its own to compare words in. With ``cache_dir``, kept there per model identity:
        making it encodes 270 sentences, over a second of a cold query."""
        sentence_vectors = getattr(model, "sentence_vectors", None)
        if sentence_vectors is None:
            return None
        classes = read_classes()
        path = None
        if cache_dir is not None and getattr(model, "identity", None) is not None:
            key = json.dumps([VOCABULARY_FORMAT, model.identity, [(c.label, c.prompt_words) for c in classes],  # type: ignore[attr-defined]
                              TILE_LABEL_TEMPLATES], sort_keys=True)
            path = Path(cache_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
            with contextlib.suppress(OSError, ValueError, KeyError):
                with np.load(path) as stored:
                    return cls(tuple(str(label) for label in stored["labels"]), stored["words"], stored["vectors"])
        words = sentence_vectors([c.prompt_words for c in classes])
        if words is None:
            return None
        vocabulary = cls(tuple(c.label for c in classes), words, class_vectors(model, classes, TILE_LABEL_TEMPLATES))
        if path is not None:
            def write(tmp: Path) -> None:
                with tmp.open("wb") as file:  # a file, not a name: numpy would add .npz to the name
                    np.savez(file, labels=np.array(vocabulary.labels), words=words, vectors=vocabulary.vectors)

            with contextlib.suppress(OSError):  # a read-only cache only costs the next cold query the time again
                atomic_write(path, write)
        return vocabulary

    def anchored(self, vectors: np.ndarray, words: np.ndarray) -> np.ndarray:
        """``vectors`` (n, dim) of names whose tower vectors are ``words`` (n, width), each moved
        :data:`ANCHOR_WEIGHT` towards the classes, weighted by a softmax of its closeness to their words."""
        closeness = words @ self.words.T / ANCHOR_TEMPERATURE
        weights = np.exp(closeness - closeness.max(axis=1, keepdims=True))
        anchors = (weights / weights.sum(axis=1, keepdims=True)) @ self.vectors
        return _unit(_unit(vectors) + ANCHOR_WEIGHT * anchors)


def foreign_classes(classes: Sequence[SceneClass]) -> list[int]:
    """Positions of the classes named in words the shipped vocabulary does not use for their label."""
    known = default_prompt_words()
    return [i for i, c in enumerate(classes) if known.get(c.label) != c.prompt_words]


class ZeroShotScenes:
    """Scene = the class whose prompt embedding is closest; probabilities = softmax over the classes.

    ``templates``: the wordings of a class's prompt, ``{}`` standing for its
    words; with several, the class is the unit mean of their embeddings
    (tiles are labelled with :data:`TILE_LABEL_TEMPLATES`; a query's scene
    prior uses the one :data:`PROMPT_TEMPLATE` it was weighted for). With the
    model's ``vocabulary``, classes in words it was not trained with (a
    ``--classes`` legend of one's own, a land-cover layer's classes) are
    anchored to the ones it was. The class prompts are encoded once, when
    this object is made: keep it for as long as the model's weights do not
    change.
    """

    def __init__(self, model: TextEncoder, classes: Sequence[SceneClass],
                 templates: Sequence[str] = (PROMPT_TEMPLATE,), vocabulary: SceneVocabulary | None = None,
                 min_confidence: float = 0.0):
        self.labels = [c.label for c in classes]
        self.min_confidence = min_confidence
        self.text_vectors = class_vectors(model, classes, templates)
        foreign = foreign_classes(classes)
        if vocabulary is not None and foreign:
            words = model.sentence_vectors([classes[i].prompt_words for i in foreign])  # type: ignore[attr-defined]
            self.text_vectors[foreign] = vocabulary.anchored(self.text_vectors[foreign], words)
        self.logit_scale = model.logit_scale

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(n, classes): softmax of the scaled cosine to each class prompt."""
        return _softmax(self.logit_scale * vectors @ self.text_vectors.T)

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        return self.labels_of(self.probabilities(vectors))

    def labels_of(self, probabilities: np.ndarray) -> list[SceneLabel]:
        """Each row's most probable class and its probability (:data:`UNKNOWN` below ``min_confidence``)."""
        return _labels_of(self.labels, probabilities, self.min_confidence)


def _softmax(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def _labels_of(labels: Sequence[str], probabilities: np.ndarray, min_confidence: float) -> list[SceneLabel]:
    best = probabilities.argmax(axis=1)
    return [SceneLabel(labels[i] if probabilities[n, i] >= min_confidence else UNKNOWN, float(probabilities[n, i]))
            for n, i in enumerate(best)]


@dataclass(frozen=True)
class SceneExamples:
    """Tiles a person said show a class ("this tile is a forest"): one label and one embedding per example."""

    labels: tuple[str, ...]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.vectors):
            raise GeoretError(f"{len(self.labels)} example labels for {len(self.vectors)} example vectors")

    def __len__(self) -> int:
        return len(self.labels)


#: few-shot scenes: how far a class's text vector moves to its examples' mean as a prototype (the default: 0.76 of
#: Sentinel-2 validation tiles at 5 shots against 0.71 for the cache), and the cache's weight beside the text
#: classes and how sharply it prefers the closest examples (Tip-Adapter's alpha and beta); each chosen on the
#: Sentinel-2 validation raster and UC Merced validation groups (experiments/your_imagery)
PROTOTYPE_WEIGHT, CACHE_WEIGHT, CACHE_SHARPNESS = 1.0, 1.0, 5.0
#: the probe starts at the prototypes and takes full-batch gradient steps of cross-entropy on the examples,
#: pulled back to the prototypes by an L2 penalty (in the manner of CLAP, Silva-Rodríguez et al., CVPR 2024):
#: 200 steps of 0.05 and a pull of 0.01, chosen on the same validation sets (experiments/your_imagery)
PROBE_STEPS, PROBE_STEP_SIZE, PROBE_PULL = 200, 0.05, 0.01
FewShotMethod = Literal["prototype", "probe", "cache"]
FEW_SHOT_METHODS: tuple[str, ...] = get_args(FewShotMethod)


class FewShotScenes:
    """Zero-shot classes corrected by a handful of labelled tiles: the whole index relabelled from a few marks.

    ``prototype`` (the default) moves each class's text vector :data:`PROTOTYPE_WEIGHT` towards the unit
    mean of its examples. ``probe`` then fits the classes to the examples as a linear classifier that stays
    near the prototypes (:func:`_probe`): on scene collections (UC Merced, Dubai) it labels 3–9 points
    more tiles right from five examples a class, but on a raster where one class dominates and another
    is rare (the Sentinel-2 coast) it lets the rare class take the common one's tiles, 61 % against 70 %
    right (experiments/your_imagery), so it is an option. ``cache`` is training-free in the manner of
    Tip-Adapter (Zhang et al., ECCV 2022): a tile's class logits are the text classes' plus
    :data:`CACHE_WEIGHT` times its affinity to each example, ``exp(-CACHE_SHARPNESS * (1 - cosine))``, summed per class; it lost to prototypes on the
    validation tiles (experiments/your_imagery), so it stays an option. Every example's class must be one
    of the legend's (a class named only by examples would be compared by its examples alone, and such a
    prototype's cosines dwarf a text class's). Same interface as :class:`ZeroShotScenes`, so indexing and
    label propagation take either.
    """

    def __init__(self, zero_shot: ZeroShotScenes, examples: SceneExamples, method: FewShotMethod = "prototype"):
        if method not in FEW_SHOT_METHODS:
            raise GeoretError(f"few-shot method must be one of {', '.join(FEW_SHOT_METHODS)}, got {method!r}")
        unknown = sorted(set(examples.labels) - set(zero_shot.labels))
        if unknown:
            raise GeoretError(f"examples of {unknown[0]!r}, a class the legend lacks: add it to the legend first")
        self.labels = list(zero_shot.labels)
        self.logit_scale = zero_shot.logit_scale
        self.method = method
        self.min_confidence = zero_shot.min_confidence
        owner = np.array([self.labels.index(c) for c in examples.labels], dtype=np.int64)
        keys = _unit(np.asarray(examples.vectors, dtype=np.float32))
        text = zero_shot.text_vectors.copy()
        if method != "cache":
            means = np.zeros_like(text)
            np.add.at(means, owner, keys)
            shown = np.bincount(owner, minlength=len(self.labels)) > 0
            text[shown] = _unit(text[shown] + PROTOTYPE_WEIGHT * _unit(means[shown]))
        if method == "probe":
            text = _probe(text, keys, owner, self.logit_scale)
        self.text_vectors = text
        self.keys, self.owner = keys, owner

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = self.logit_scale * vectors @ self.text_vectors.T
        if self.method == "cache":
            affinity = np.exp(-CACHE_SHARPNESS * (1.0 - vectors @ self.keys.T))
            per_class = np.zeros((len(vectors), len(self.labels)), np.float32)
            np.add.at(per_class.T, self.owner, affinity.T)
            logits = logits + CACHE_WEIGHT * self.logit_scale * per_class
        return _softmax(logits)

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        return self.labels_of(self.probabilities(vectors))

    def labels_of(self, probabilities: np.ndarray) -> list[SceneLabel]:
        return _labels_of(self.labels, probabilities, self.min_confidence)


def _probe(start: np.ndarray, keys: np.ndarray, owner: np.ndarray, logit_scale: float) -> np.ndarray:
    """Class vectors fitted to labelled ``keys`` (cross-entropy of the scaled cosines, full batch), pulled
    towards ``start`` so that a class with few or no examples keeps what its words and prototype said."""
    weights = start.astype(np.float64)
    targets = np.eye(len(start))[owner]
    for _ in range(PROBE_STEPS):
        errors = _softmax(logit_scale * keys @ weights.T) - targets
        gradient = logit_scale * errors.T @ keys / len(keys) + PROBE_PULL * (weights - start)
        weights -= PROBE_STEP_SIZE * gradient
    return weights.astype(np.float32)


#: label propagation: neighbours per tile, weight of the neighbours, iterations (experiments/prompt_ensembles,
#: fixed before it measured; per raster on experiments/real_tiles)
PROPAGATION_NEIGHBOURS, PROPAGATION_WEIGHT, PROPAGATION_STEPS = 10, 0.5, 10


def propagate_labels(vectors: np.ndarray, probabilities: np.ndarray, block: int = 1024) -> np.ndarray:
    """Zero-shot class probabilities smoothed over the tiles' nearest-neighbour graph: ``F = (1-w)·P + w·W·F``.

    Tiles that look alike (their embeddings' 10 nearest neighbours, edges
    weighted by cosine, made symmetric, rows normalised) mostly show the same
    class, so a tile read wrongly on its own is outvoted by its look-alikes:
    +7 points of right labels on real rasters (experiments/real_tiles), +1.7
    on rsicd_aid chips (experiments/prompt_ensembles). The graph is sparse
    and built ``block`` rows at a time: memory grows with n, time with n².
    """
    n = len(vectors)
    k = min(PROPAGATION_NEIGHBOURS, n - 1)
    if k < 1:
        return probabilities
    neighbours = np.empty((n, k), dtype=np.int64)
    weights = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block):
        similarity = vectors[start:start + block] @ vectors.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # a tile is not its own neighbour
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        neighbours[start:start + block] = nearest
        weights[start:start + block] = np.maximum(similarity[rows[:, None], nearest], 0.0)
    # W = (A + Aᵀ) / 2 as an edge list sorted by source, then each row normalised
    source = np.concatenate([np.repeat(np.arange(n), k), neighbours.ravel()])
    target = np.concatenate([neighbours.ravel(), np.repeat(np.arange(n), k)])
    weight = np.concatenate([weights.ravel(), weights.ravel()]) / 2
    order = np.argsort(source, kind="stable")
    source, target, weight = source[order], target[order], weight[order]
    weight /= np.maximum(np.bincount(source, weights=weight, minlength=n)[source], 1e-12)
    starts = np.flatnonzero(np.r_[True, np.diff(source) != 0])  # every tile has k edges of its own
    refined = probabilities
    for _ in range(PROPAGATION_STEPS):
        neighbourhood = np.add.reduceat(weight[:, None] * refined[target], starts, axis=0)
        refined = (1 - PROPAGATION_WEIGHT) * probabilities + PROPAGATION_WEIGHT * neighbourhood
    return refined
