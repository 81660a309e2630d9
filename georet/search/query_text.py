"""Query words → vectors for one index: the model its tiles were embedded with, loaded only as far as needed.

A text query needs only the text side: the torch-free encoder (:mod:`georet.models.text_query`) where the
index's model has one, so a cold query never imports torch; the whole model (its image side too) only for
example images. Vectors are anchored to the scene classes the model was trained with, kept in the query
cache, and turned into scene priors over the index's labels, each encoded once per model.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from georet.errors import ConflictError, GeoretError
from georet.geo import SceneVocabulary, ZeroShotScenes
from georet.index import TileStore, describe_mismatch
from georet.models import QueryTextEncoder, cache_dir, load_query_encoder
from georet.search.catalog import TileCatalog
from georet.search.query_cache import QueryVectorCache, query_model_key, wording_settings
from georet.search.relations import ScenePrior
from georet.search.wording import SHORT_QUERY_WORDS, embed_queries

if TYPE_CHECKING:
    from georet.models import EmbeddingModel


class QueryEncoder:
    """The model of one index (``store``), as its queries need it. ``overrides`` ({"pretrained", "checkpoint"})
    point at weights that moved; ``model``, when given, is used as loaded (checked against the index)."""

    def __init__(self, store: TileStore, device: str = "auto", overrides: dict[str, str | None] | None = None,
                 model: EmbeddingModel | None = None, query_cache: QueryVectorCache | None = None):
        self.store = store
        #: query vectors already computed (in memory unless the caller gives one kept on disk)
        self.query_cache = query_cache or QueryVectorCache()
        self._device = device
        self._overrides = overrides or {}
        self._model = model
        self._text_encoder: QueryTextEncoder | None = None
        self._zero_shot: dict[tuple[str, ...], ZeroShotScenes] = {}
        if model is not None:
            self.check(model)

    @property
    def model(self) -> EmbeddingModel:
        """The model the index was built with, loaded on first use."""
        if self._model is None:
            from georet.models import ModelSpec, load_model

            model = load_model(ModelSpec(**self._model_spec()), device=self._device)
            self.check(model)
            self._model = model
        return self._model

    @property
    def text_model(self) -> EmbeddingModel | QueryTextEncoder:
        """What encodes query text: the torch-free encoder when the index's model has one, else :attr:`model`."""
        if self._model is not None:
            return self._model
        if self._text_encoder is None:
            spec = self._model_spec()
            encoder = load_query_encoder(spec["arch"], spec.get("pretrained"), spec.get("checkpoint"))
            if encoder is None:
                self.model.export_text_graph()  # where it can: the next cold query skips torch
                return self.model
            self.check(encoder)
            self._text_encoder = encoder
        return self._text_encoder

    def _model_spec(self) -> dict[str, Any]:
        spec = dict(self.store.model_spec)
        spec.update({k: v for k, v in self._overrides.items() if v})
        for key in ("pretrained", "checkpoint"):
            value = spec.get(key)
            if value and Path(value).suffix and not Path(value).is_file():
                raise GeoretError(f"this index was built with {key} file {value}, which is gone; "
                                  f"pass its new location (--{key} FILE)")
        return spec

    def check(self, model: EmbeddingModel | QueryTextEncoder) -> None:
        """A model other than the index's is refused: its vectors would not be comparable."""
        problem = describe_mismatch(self.store.model_identity, model.identity)
        if problem:
            raise ConflictError(f"cannot query {self.store.path}: {problem}; re-index into a new {{db}}",
                                names=("db",))

    @cached_property
    def vocabulary(self) -> SceneVocabulary | None:
        """The scene classes the model was trained with, as anchors for short queries and for scene labels in
        other words (None: it has no frozen text tower to compare words in); from the cache, or encoded."""
        return SceneVocabulary.of(self.text_model, cache_dir("vocabulary"))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Query texts as :func:`~georet.search.wording.embed_queries` reads them, short ones anchored; from the
        query cache where it has them, the rest encoded in one batch and added to it."""
        key = self._query_key
        vectors = [self.query_cache.get(key, text) for text in texts]
        missing = list(dict.fromkeys(text for text, vector in zip(texts, vectors) if vector is None))
        if missing:
            encoded = dict(zip(missing, embed_queries(self.text_model, missing, self.vocabulary)))
            for text, vector in encoded.items():
                self.query_cache.put(key, text, vector)
            vectors = [encoded[text] if vector is None else vector for text, vector in zip(texts, vectors)]
        return np.stack(vectors)

    @cached_property
    def _query_key(self) -> str:
        """What names this index's query vectors in the cache: its model (an index is only ever queried by a
        model of the identity it stores) and the wording settings."""
        return query_model_key(self.store.model_identity, wording_settings(SHORT_QUERY_WORDS))

    def scene_prior(self, phrases: np.ndarray, catalog: TileCatalog, weight: float = 1.0) -> ScenePrior | None:
        """The scene prior of ``phrases`` over the index's scene labels; None when fewer than two labels exist."""
        classes = catalog.scene_classes
        if len(classes) < 2:
            return None
        key = tuple(c.label for c in classes)
        if key not in self._zero_shot:  # class prompts are encoded once per model and label set
            self._zero_shot[key] = ZeroShotScenes(self.text_model, classes, vocabulary=self.vocabulary)
        return ScenePrior.of(self._zero_shot[key].probabilities(phrases), catalog.scene_codes, weight)
