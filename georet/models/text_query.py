"""Query text without torch: the text side of a frozen-tower model as an ONNX graph, for cold and warm queries.

A ``georet query`` is one sentence (or a short query's nine) through MiniLM and
the text head, yet importing torch alone costs ~1.3 s of a cold run. For tower
models trained heads-only (``method: frozen``, the bundled georet-base) the
whole text path is six BERT layers and the head: one graph
(:mod:`georet.models.onnx_text`) that OpenVINO runs in a few milliseconds. The
encoder carries the same identity as the torch model, and a test holds their
vectors to cosine 0.9999. Anything else (side branches or adapters on the text
side, open_clip models, checkpoints, a weights file whose graph is not cached
yet) returns None from :func:`load_query_encoder` and the caller uses the
torch model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from georet.errors import GeoretError
from georet.models.identity import BUNDLED_TAG, BUNDLED_WEIGHTS, cached_sha256, model_identity, tower_config
from georet.models.onnx_text import TEXT_FORMAT, OnnxTextSide, WordPiece, text_engine, text_graph_path
from georet.models.preprocess import tower_preprocess


class QueryTextEncoder:
    """Encodes query text as the torch tower model does: ``encode_text``, ``sentence_vectors``, ``logit_scale``,
    ``identity``, from a text graph and the JSON file beside it (:func:`~georet.models.onnx_text.export_text_side`).
    """

    def __init__(self, graph: Path, pretrained: str, engine: str, threads: int | None = None):
        meta = json.loads(graph.with_suffix(".json").read_text())
        if meta.get("format") != TEXT_FORMAT:
            raise GeoretError(f"{graph} is not a georet text graph ({meta.get('format')!r}); delete it to remake it")
        self.tokenizer = WordPiece(graph.with_suffix(".tokenizer.json"), meta["context_length"], pad_to_longest=True)
        self.side = OnnxTextSide(graph, engine, threads)
        self.logit_scale = float(meta["logit_scale"])
        self.dim = int(meta["dim"])
        self.identity = model_identity(meta["arch"], pretrained, meta["weights_sha256"], None, self.dim,
                                       tower_preprocess(meta["image_size"]).to_dict(), meta["backbones"])

    def text_and_sentence_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (float32 (N, dim) unit embeddings, float32 (N, 384) unit vectors of MiniLM itself), one run."""
        return self.side(self.tokenizer.ids(list(texts)))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, dim), unit length."""
        return self.text_and_sentence_vectors(texts)[0]

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, 384) unit vectors of MiniLM itself, as the torch model's ``sentence_vectors``."""
        return self.text_and_sentence_vectors(texts)[1]


def text_meta(arch: str, weights_sha256: str, backbones: dict[str, str], image_size: int, dim: int,
              logit_scale: float, context_length: int) -> dict[str, Any]:
    """What a :class:`QueryTextEncoder` reads beside its graph: the identity's fields and the text settings."""
    return {"format": TEXT_FORMAT, "arch": arch, "weights_sha256": weights_sha256, "backbones": backbones,
            "image_size": image_size, "dim": dim, "logit_scale": logit_scale, "context_length": context_length}


def shipped_text_graph(weights_sha256: str) -> Path | None:
    """The bundled georet-base's text graph in the package, when it was made from the weights file installed."""
    from georet.models.shipped import LIGHT_DIR, light_manifest

    manifest = light_manifest()
    graph = LIGHT_DIR / "text.onnx"
    return graph if manifest is not None and manifest["weights_sha256"] == weights_sha256 and graph.is_file() \
        else None


def load_query_encoder(arch: str, pretrained: str | None, checkpoint: str | None = None,
                       threads: int | None = None) -> QueryTextEncoder | None:
    """The torch-free text encoder for this model, or None when only the torch model can encode its text (or
    its graph is not made yet: see :func:`~georet.models.onnx_text.export_text_side`)."""
    if tower_config(arch) is None or checkpoint or pretrained is None:
        return None
    weights_file = BUNDLED_WEIGHTS.get(arch) if pretrained == BUNDLED_TAG else Path(pretrained)
    engine = text_engine()
    if weights_file is None or not weights_file.is_file() or engine is None:
        return None
    sha = cached_sha256(weights_file)
    graph = shipped_text_graph(sha) if pretrained == BUNDLED_TAG else None
    graph = graph or text_graph_path(sha)
    return QueryTextEncoder(graph, pretrained, engine, threads) if graph.is_file() else None
