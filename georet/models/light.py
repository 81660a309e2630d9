"""georet-base without torch: its image and text sides as ONNX graphs shipped in the package.

A plain ``pip install georet`` brings no torch, torchvision, timm or
open_clip (5 GB of CUDA wheels that most users, who index and search, never
need). georet-base is then served from files in ``weights/georet-base-light/``,
made from the declared weights by ``training/export_light.py``:

* ``image.onnx`` — the views, EfficientNet-Lite0 trunk (batch norm folded),
  heads and normalisation as one graph (:mod:`georet.models.onnx_image`), its
  weights stored in float16 and cast to float32 inside the graph (22 MB
  instead of 44); OpenVINO, else ONNX Runtime, runs it;
* ``text.onnx`` — all-MiniLM-L6-v2 and the trained text head as one graph
  (:mod:`georet.models.onnx_text`), weights in float16 as above, with its
  tokenizer (``text.tokenizer.json``) and settings (``text.json``) beside it;
  torch installs query the bundled model through it too;
* ``light.json`` — what they were made from: the bundled weights file's
  sha256 and the backbones' ids, so the model has the identity of the torch
  model and an index built by either install serves the other.

Why ship them rather than build them on first use: building needs torch and
the backbone packages, which are exactly what this install leaves out. The
ImageNet EfficientNet-Lite0 and MiniLM weights are Apache-2.0; their notices
lie beside the files (``NOTICE.md``).
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from georet.errors import GeoretError
from georet.models.identity import BUNDLED_TAG, model_identity
from georet.models.preprocess import Preprocess, tower_preprocess
from georet.models.shipped import LIGHT_ARCH, LIGHT_DIR, light_manifest

TORCH_EXTRA = "pip install 'georet[torch]'"


class NumpyPreprocess(Preprocess):
    """:class:`Preprocess` in numpy and PIL: the same resize and normalisation without torch. PIL resizes each
    band in float (no rounding to 8 bits between), which matches torch's antialiased resize to 5e-7."""

    def apply(self, pixels: np.ndarray) -> np.ndarray:  # type: ignore[override]
        x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        if x.shape[2:] != tuple(self.size):
            x = np.clip(np.stack([[self._resize(band) for band in tile] for tile in x]), 0.0, 1.0)
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((x - mean) / std)

    def _resize(self, band: np.ndarray) -> np.ndarray:
        """One float band: shortest side to the output size, then the centre, as :meth:`Preprocess.apply`."""
        from PIL import Image

        out_h, out_w = self.size
        in_h, in_w = band.shape
        scale = max(out_h / in_h, out_w / in_w)
        mid_w, mid_h = max(out_w, round(in_w * scale)), max(out_h, round(in_h * scale))
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        image = Image.fromarray(band, mode="F").resize((mid_w, mid_h), resample)
        left, top = (mid_w - out_w) // 2, (mid_h - out_h) // 2
        return np.asarray(image.crop((left, top, left + out_w, top + out_h)))


class LightModel:
    """The bundled georet-base on ONNX and numpy: ``encode_images``, ``encode_text``, ``preprocess``,
    ``identity``, as :class:`~georet.models.factory.EmbeddingModel` offers them."""

    def __init__(self, spec, manifest: dict[str, Any], image_runtime: str = "auto", threads: int | None = None):
        self.spec = spec
        self._manifest = manifest
        self._runtime, self._threads = image_runtime, threads
        self.preprocess = NumpyPreprocess(**tower_preprocess(manifest["image_size"]).to_dict())
        self.dim = int(manifest["dim"])
        self.tile_ground_m = manifest.get("tile_ground_m")
        self.backbones = manifest["backbones"]

    @cached_property
    def _text(self):
        """The shipped text graph (:mod:`georet.models.text_query`)."""
        from georet.models.onnx_text import text_engine
        from georet.models.text_query import QueryTextEncoder

        engine = text_engine()
        if engine is None:
            raise GeoretError("neither openvino nor onnxruntime is installed: pip install openvino")
        return QueryTextEncoder(LIGHT_DIR / "text.onnx", BUNDLED_TAG, engine)

    @cached_property
    def _image(self):
        from georet.models.onnx_image import OnnxImageSide, resolve_engine

        if self._runtime == "torch":
            raise GeoretError(f"image_runtime torch needs torch: {TORCH_EXTRA}")
        engine = resolve_engine(self._runtime)
        if engine is None:
            raise GeoretError("neither openvino nor onnxruntime is installed: pip install openvino")
        return OnnxImageSide(LIGHT_DIR / "image.onnx", engine, self._threads or os.cpu_count())

    @property
    def identity(self) -> dict[str, Any]:
        return model_identity(self.spec.arch, self.spec.pretrained, self._manifest["weights_sha256"], None, self.dim,
                              self.preprocess.to_dict(), self.backbones)

    @property
    def logit_scale(self) -> float:
        return self._text.logit_scale

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed images (N, 3, h, w) float32 -> float32 (N, dim), unit length."""
        return self._image(images)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, dim), unit length."""
        return self._text.encode_text(texts)

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """MiniLM's own unit vectors of ``texts`` (:class:`~georet.geo.scenes.SceneVocabulary` compares words there)."""
        return self._text.sentence_vectors(texts)

    def text_and_sentence_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`encode_text`, :meth:`sentence_vectors`) of ``texts`` in one run of the text graph."""
        return self._text.text_and_sentence_vectors(texts)


def load_light_model(spec, image_runtime: str = "auto", threads: int | None = None) -> LightModel:
    """The torch-free georet-base for ``spec``, or a one-line error saying what needs torch."""
    if spec.arch != LIGHT_ARCH or spec.pretrained != BUNDLED_TAG or spec.checkpoint:
        raise GeoretError(f"{spec.arch} ({spec.pretrained or 'random init'}"
                          f"{', checkpoint' if spec.checkpoint else ''}) needs torch, which this install does not "
                          f"have: {TORCH_EXTRA} (without it georet runs the bundled {LIGHT_ARCH})")
    from georet.models.onnx_image import check_image_runtime

    check_image_runtime(image_runtime)
    manifest = light_manifest()
    if manifest is None:
        raise GeoretError(f"the torch-free {LIGHT_ARCH} files in {LIGHT_DIR} are missing or were made from other "
                          f"weights; reinstall georet, or {TORCH_EXTRA}")
    return LightModel(spec, manifest, image_runtime, threads)
