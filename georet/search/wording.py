"""How a query's words become its vector: a short query is read as the name of a thing, in eight wordings.

Users name what they look for in their own words ("a marina", "cropland", "an aerodrome"); the
model learnt from RSICD's sentences ("many boats are in a port"). A query of at most
:data:`SHORT_QUERY_WORDS` words is put in the eight wordings tiles are labelled with
(:data:`~georet.geo.TILE_LABEL_TEMPLATES`, "an aerial image of {}", ...) and their unit vectors
averaged; a longer one reads like a caption and is embedded as written. On 17 queries whose key
word no rsicd_aid caption uses, precision@4 rises from 0.62 to 0.66 on a layout of validation
chips and from 0.53 to 0.71 on test chips, while rsicd_aid test mR stays 22.81: no test caption is
that short, and wrapping every caption would cost 0.7 (experiments/wording). Relational and change
queries embed their phrases ("airport", "river") the same way. A plain search for such a name also
takes pseudo-relevance feedback (:func:`georet.search.feedback.pseudo_feedback_query`).

A short query is also anchored to the scene classes the index labelled its tiles with
(:class:`SceneVocabulary`): the model's heads learnt RSICD's words, so "cropland" or "a reservoir" land
far from the farmland and ponds they mean, while the frozen text tower below them still knows these
words are near "farmland" and "pond". The query moves towards the classes it is nearest to in the
tower's own space (:data:`ANCHOR_WEIGHT`, :data:`ANCHOR_TEMPERATURE`): precision@4 0.735 -> 0.824 on
those validation chips, with the feedback (experiments/wording).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from georet.geo import TILE_LABEL_TEMPLATES
from georet.geo.scenes import SceneClass, TextEncoder, ZeroShotScenes

#: queries of at most this many words read like a class name and are embedded in every wording
SHORT_QUERY_WORDS = 3
#: a short query moves this far towards its nearest scene classes, weighted by a softmax of their cosine in the
#: text tower's own space at this temperature (chosen on validation chips and the real tiles: experiments/wording)
ANCHOR_WEIGHT, ANCHOR_TEMPERATURE = 0.5, 0.05


def _words(text: str) -> str:
    return text.strip().rstrip(".").strip()


def names_a_thing(text: str) -> bool:
    """Whether ``text`` reads like the name of a thing (at most :data:`SHORT_QUERY_WORDS` words), not a caption."""
    return len(_words(text).split()) <= SHORT_QUERY_WORDS


def query_sentences(text: str) -> list[str]:
    """The sentences whose embeddings, averaged, are ``text``'s vector (itself alone for a long query)."""
    if not names_a_thing(text):
        return [text]
    return [template.format(_words(text)) for template in TILE_LABEL_TEMPLATES]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class SceneVocabulary:
    """An index's scene classes as anchors for short queries: where each class's words lie in the text
    tower's own space (``words``), and its label vector in the shared space (``vectors``, the unit mean of
    its eight wordings, as tiles are labelled)."""

    labels: tuple[str, ...]
    words: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of(cls, text_model: TextEncoder, classes: Sequence[SceneClass]) -> "SceneVocabulary | None":
        """The vocabulary of ``classes``; None without two classes, or when ``text_model`` has no frozen text
        tower of its own to compare words in (``sentence_vectors``)."""
        sentence_vectors = getattr(text_model, "sentence_vectors", None)
        if len(classes) < 2 or sentence_vectors is None:
            return None
        words = sentence_vectors([c.prompt_words for c in classes])
        if words is None:
            return None
        vectors = ZeroShotScenes(text_model, classes, TILE_LABEL_TEMPLATES).text_vectors
        return cls(tuple(c.label for c in classes), words, _unit(vectors))

    def anchors(self, sentence_vectors: np.ndarray) -> np.ndarray:
        """(N, dim): each text's blend of class vectors, weighted by a softmax of its closeness to their words."""
        closeness = sentence_vectors @ self.words.T / ANCHOR_TEMPERATURE
        weights = np.exp(closeness - closeness.max(axis=1, keepdims=True))
        return (weights / weights.sum(axis=1, keepdims=True)) @ self.vectors


def embed_queries(text_model: TextEncoder, texts: Sequence[str],
                  vocabulary: SceneVocabulary | None = None) -> np.ndarray:
    """Query texts -> float32 (N, dim) unit vectors, all their sentences encoded in one batch; with a
    ``vocabulary``, short queries are moved towards their nearest scene classes."""
    sentences = [query_sentences(text) for text in texts]
    vectors = text_model.encode_text([s for group in sentences for s in group])
    ends = np.cumsum([len(group) for group in sentences])
    means = _unit(np.stack([vectors[end - len(group):end].mean(axis=0) for group, end in zip(sentences, ends)]))
    short = [i for i, text in enumerate(texts) if names_a_thing(text) and _words(text)]
    if vocabulary is not None and short:
        words = text_model.sentence_vectors([_words(texts[i]) for i in short])
        means[short] = _unit(means[short] + ANCHOR_WEIGHT * vocabulary.anchors(words))
    return means
