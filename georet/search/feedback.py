"""Search by example: score every tile from a text query and/or example tiles marked right and wrong.

Two scorers, measured against each other in ``benchmarks/feedback.py``:

* **Rocchio** (few labels): one query vector, ``text + β·mean(right) − γ·mean(wrong)``;
  the score is the cosine between it and each tile.
* **Linear probe** (Earth Index's approach, once there are enough labels of
  both kinds): a logistic regression on the embeddings, regularised towards
  the Rocchio direction so that a handful of labels refine the text query
  instead of replacing it; the score is the probe's probability.

A plain search for the name of a thing ("forest", "a marina") gets *pseudo*-relevance feedback
(:func:`pseudo_feedback_query`): its best places stand in for examples marked right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from georet.errors import GeoretError

Scorer = Literal["auto", "rocchio", "probe"]
#: Rocchio weights of the text, the mean right example and the mean wrong example.
ROCCHIO_POSITIVE, ROCCHIO_NEGATIVE = 1.0, 0.5
#: ``auto`` switches to the probe once there are this many right *and* this many wrong examples.
PROBE_MIN_LABELS = 3
#: Probe: strength of the pull towards the Rocchio direction, its scale (cosine -> logit), Newton steps at most.
PROBE_PRIOR, PROBE_SCALE, PROBE_STEPS = 1.0, 10.0, 50
#: Pseudo-relevance feedback: the query moves this far towards the mean of its best places, this many of them.
#: For names of things, on validation sets only: 17 queries in words no caption uses on rsicd_aid validation
#: chips, p@4 0.662 → 0.735 (experiments/wording); 9 class names on 258 hand-labelled tiles of real rasters,
#: p@5 0.511 → 0.622 (experiments/real_tiles); 27 class names on validation chips under the default tiles,
#: p@5 0.882 → 0.896 with scenes on the tile grid, 0.941 either way off it (experiments/tile_scale).
#: Sentences get none: they read like the captions the model was trained on, where it costs mR.
PSEUDO_FEEDBACK_WEIGHT, PSEUDO_FEEDBACK_PLACES = 0.5, 10
SCORE_KINDS = {"rocchio": "cosine similarity to the query (text and examples combined), -1..1",
               "probe": "probability from a linear probe on the labelled examples, 0..1",
               "text": "cosine similarity to the text, -1..1",
               "pseudo-feedback": "cosine similarity to the text moved towards its best places, -1..1"}


@dataclass(frozen=True)
class Examples:
    """Embeddings of the tiles (or images) marked right and wrong."""

    positives: np.ndarray  # (p, dim), unit length
    negatives: np.ndarray  # (n, dim), unit length

    @property
    def empty(self) -> bool:
        return len(self.positives) == 0 and len(self.negatives) == 0


def choose_scorer(examples: Examples, scorer: Scorer = "auto") -> str:
    """Which scorer ``auto`` means for these labels (and a check that the chosen one can run)."""
    if scorer == "auto":
        enough = min(len(examples.positives), len(examples.negatives)) >= PROBE_MIN_LABELS
        return "probe" if enough else "rocchio"
    if scorer == "probe" and (len(examples.positives) == 0 or len(examples.negatives) == 0):
        raise GeoretError("the linear probe needs at least one right and one wrong example")
    if scorer not in ("rocchio", "probe"):
        raise GeoretError(f"unknown scorer {scorer!r}; use auto, rocchio or probe")
    return scorer


def rocchio_query(text: np.ndarray | None, examples: Examples) -> np.ndarray:
    """The unit query vector combining the text (if any) with the examples."""
    query = np.zeros(examples.positives.shape[1]) if text is None else text.astype(np.float64)  # (0, dim) if none
    if len(examples.positives):
        query += ROCCHIO_POSITIVE * examples.positives.mean(axis=0)
    if len(examples.negatives):
        query -= ROCCHIO_NEGATIVE * examples.negatives.mean(axis=0)
    norm = np.linalg.norm(query)
    if norm == 0:
        raise GeoretError("the query has nothing to search for: give a text or at least one right example")
    return (query / norm).astype(np.float32)


def pseudo_feedback_query(query: np.ndarray, best: np.ndarray) -> np.ndarray:
    """The unit query moved :data:`PSEUDO_FEEDBACK_WEIGHT` towards the mean of ``best``, the vectors of its
    best places (at most :data:`PSEUDO_FEEDBACK_PLACES`): the look of the imagery at hand, learnt from the
    query's own first answers, pulls in tiles the words alone rank lower."""
    if not len(best):
        return query
    moved = query.astype(np.float64) + PSEUDO_FEEDBACK_WEIGHT * best.mean(axis=0)
    return (moved / np.linalg.norm(moved)).astype(np.float32)


def probe_weights(text: np.ndarray | None, examples: Examples, prior_strength: float | None = None
                  ) -> tuple[np.ndarray, float]:
    """A logistic regression (weights, bias) on the labelled embeddings, pulled towards the Rocchio query.

    Minimises the log-loss (right = 1, wrong = 0, the two kinds weighted
    equally, weights summing to 1) plus ``prior_strength·|w − PROBE_SCALE·q|²``
    (default :data:`PROBE_PRIOR`)
    with Newton steps: embeddings of one model are strongly correlated, which
    leaves plain gradient descent crawling, while a few hundred labels in a
    few hundred dimensions make the exact Hessian cheap.
    """
    prior = PROBE_SCALE * rocchio_query(text, examples).astype(np.float64)
    x = np.concatenate([examples.positives, examples.negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(examples.positives)), np.zeros(len(examples.negatives))])
    weight = np.where(y == 1, 0.5 / max(len(examples.positives), 1), 0.5 / max(len(examples.negatives), 1))
    xb = np.hstack([x, np.ones((len(x), 1))])  # the last column carries the bias
    strength = PROBE_PRIOR if prior_strength is None else prior_strength  # read at call time: benchmarks vary it
    ridge = np.full(x.shape[1] + 1, 2 * max(strength, 1e-6))
    ridge[-1] = 1e-6  # the bias is free, but keep the Hessian invertible
    theta = np.append(prior, -float(np.median(x @ prior)))
    target = np.append(prior, 0.0)
    for _ in range(PROBE_STEPS):
        p = _sigmoid(xb @ theta)
        gradient = xb.T @ (weight * (p - y)) + ridge * (theta - target)
        hessian = (xb * (weight * p * (1 - p))[:, None]).T @ xb + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1].astype(np.float32), float(theta[-1])


def score_tiles(vectors: np.ndarray, text: np.ndarray | None, examples: Examples, scorer: Scorer = "auto"
                ) -> tuple[np.ndarray, np.ndarray, str]:
    """Scores of every tile, the key to rank them by (higher = better), and the scorer used.

    The probe ranks by its logit: a confident probe saturates many
    probabilities at 1.0, which would leave their order to chance.
    """
    chosen = choose_scorer(examples, scorer)
    if chosen == "probe":
        w, b = probe_weights(text, examples)
        logits = vectors.astype(np.float64) @ w + b
        return _sigmoid(logits), logits, chosen
    cosines = vectors @ rocchio_query(text, examples)
    return cosines, cosines, chosen


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for confident probes (logits of hundreds)."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))


def touching_groups(n: int, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Connected components (a label per item) of ``n`` items joined by ``pairs`` (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(*pairs):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])
