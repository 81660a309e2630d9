"""The text side of a frozen-tower model as one ONNX graph: a query's wordings in one batch, on a compiled runtime.

A short query is eight wordings plus the bare name (the name for anchoring,
:class:`~georet.geo.scenes.SceneVocabulary`). The graph takes their token ids
(any batch, any length) and returns both what search needs in one run: the
model's unit embeddings (MiniLM, the trained text head, its ensemble) and
MiniLM's own unit sentence vectors. OpenVINO runs it in float32 (the vectors
stay torch's: cosine > 0.9999, ``tests/test_text_query.py``), else ONNX
Runtime; ``benchmarks/query_latency.py`` times both against torch.

Where the graph comes from: the bundled georet-base's ships in the package
(``weights/georet-base-light/text.onnx``, made by ``training/export_light.py``)
because a torch-free install cannot make one. Any other frozen-tower weights
file has its graph exported into georet's cache (named by a digest of the
weights and backbones) the first time torch loads it; later cold queries
skip torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from georet.files import atomic_write
from georet.models.io import cache_dir
from georet.models.onnx_image import OPSET, graph_runner

#: bumped when the exported graph changes for the same weights
TEXT_FORMAT = "georet-onnx-text/1"
#: OpenVINO in float32 first, ONNX Runtime else. bfloat16 (where the CPU has it) was tried: a short query's nine
#: sentences in 8.8 ms against 13.7, cosine 0.99997 to float32, but served searches of the benchmarks' layouts kept
#: the same tiles in the same order in 76 of 83 against 81 (experiments/fast_queries)
TEXT_ENGINES = ("openvino", "onnxruntime")


class WordPiece:
    """Texts -> (N, length) int64 token ids, ``[CLS] … [SEP]`` as BERT expects, 0-padded to ``context_length``
    or, with ``pad_to_longest``, to the longest text: padding never changes the valid tokens, so a query need
    not run any."""

    def __init__(self, tokenizer_file: Path, context_length: int, pad_to_longest: bool = False):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=context_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=None if pad_to_longest else context_length)
        self.context_length = context_length

    def ids(self, texts: Sequence[str] | str) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return np.array([e.ids for e in self.tokenizer.encode_batch(texts)], dtype=np.int64).reshape(len(texts), -1)


def text_engine() -> str | None:
    """The first of :data:`TEXT_ENGINES` installed, or None."""
    import importlib.util

    return next((e for e in TEXT_ENGINES if importlib.util.find_spec(e) is not None), None)


class OnnxTextSide:
    """Token ids (N, L) -> (unit embeddings (N, dim), unit sentence vectors (N, width)) from the exported graph.

    OpenVINO keeps the compiled graph in georet's cache (``cache_dir("openvino")``): compiling takes 0.5 s,
    loading the compiled one 0.15 s, which is most of what a cold query spends on its text.
    """

    def __init__(self, path: str | Path, engine: str = "openvino", threads: int | None = None):
        self.path, self.engine = Path(path), engine
        compiled_cache: Path | None = cache_dir("openvino")
        try:
            compiled_cache.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only cache only costs each cold query the compile again
            compiled_cache = None
        self._run = graph_runner(self.path, engine, threads, compiled_cache, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings, sentences = self._run(np.ascontiguousarray(ids, dtype=np.int64))
        return np.asarray(embeddings, dtype=np.float32), np.asarray(sentences, dtype=np.float32)


def text_graph_path(weights_sha256: str) -> Path:
    """Where the cache keeps the text graph of one weights file. The weights alone name it: a weights file
    records the backbones it was trained on, and the graph holds those (the JSON beside it names them)."""
    return cache_dir("onnx") / f"text-{TEXT_FORMAT.rsplit('/', 1)[1]}-{weights_sha256[:24]}.onnx"


def export_text_side(tower, path: str | Path, meta: dict[str, Any], tokenizer: Path) -> Path:
    """Write ``tower``'s text side (a :class:`~georet.models.tower_clip.TowerCLIP` with frozen towers) as an
    ONNX graph with dynamic batch and length, atomically, with what a torch-free encoder reads beside it:
    ``meta`` (logit scale, context length, identity fields) and the ``tokenizer`` file, both written first
    so a graph is never found without them."""
    import shutil

    import torch
    import torch.nn.functional as F

    class TextSide(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids):
            taps, mask, pooled = self.model.text_features(ids)
            return (F.normalize(self.model.embed_text(taps, mask, pooled), dim=-1),
                    F.normalize(pooled, dim=-1))

    side = TextSide(tower).eval()
    example = torch.tensor([[101, 2019, 4946, 102], [101, 2019, 102, 0]], dtype=torch.int64)

    def write(tmp: Path) -> None:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on Python ints: the axes named dynamic stay dynamic
            torch.onnx.export(side, (example,), str(tmp), input_names=["ids"],
                              output_names=["embeddings", "sentences"],
                              dynamic_axes={"ids": {0: "n", 1: "length"}, "embeddings": {0: "n"},
                                            "sentences": {0: "n"}},
                              opset_version=OPSET, dynamo=False)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    atomic_write(path.with_suffix(".tokenizer.json"), lambda tmp: shutil.copy(tokenizer, tmp))
    atomic_write(path, write)
    return path
