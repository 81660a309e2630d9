"""The text side of georet-base in numpy: queries are encoded without importing torch.

A ``georet query`` is one sentence through MiniLM and the text head, yet
importing torch alone costs ~1.3 s of a cold run. For tower models trained
heads-only (``method: frozen``, the bundled georet-base) the whole text path is
six BERT layers and the head (a matrix and a small MLP beside it), which
numpy runs in a few milliseconds. The same weights are read (MiniLM's
safetensors, the trained head from georet's weights file) and the same
identity is built as by the torch model, and a test holds the two to 1e-5.
Anything else (side branches or adapters on the text side, open_clip models,
checkpoints) returns None from :func:`load_query_encoder` and the caller uses
the torch model.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from georet.errors import GeoretError
from georet.models.backbones import backbone_files, backbone_ids, minilm_weights
from georet.models.identity import (
    BUNDLED_TAG,
    BUNDLED_WEIGHTS,
    TOWER_WEIGHTS_FORMAT,
    cached_sha256,
    model_identity,
    tower_config,
)
from georet.models.preprocess import tower_preprocess


class WordPiece:
    """Texts -> (N, context_length) int64 token ids, 0-padded; ``[CLS] … [SEP]`` as BERT expects."""

    def __init__(self, folder: Path, context_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=context_length)
        self.tokenizer.enable_padding(length=context_length, pad_id=0, pad_token="[PAD]")
        self.context_length = context_length

    def ids(self, texts: Sequence[str] | str) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return np.array([e.ids for e in self.tokenizer.encode_batch(texts)], dtype=np.int64)


# -- torch's zip file format, read without torch ---------------------------------------------
_STORAGE_DTYPES = {"HalfStorage": np.float16, "FloatStorage": np.float32, "DoubleStorage": np.float64,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_unused) -> np.ndarray:
    if not size:
        return storage[offset].copy()
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=[s * storage.itemsize for s in stride]).copy()


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` payload of plain containers and tensors into numpy arrays; nothing else loads."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes):
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: tuple) -> np.ndarray:
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=dtype, count=numel)


def read_torch_file(path: str | Path) -> Any:
    """A file written by ``torch.save`` (zip format) with tensors as numpy arrays, or a GeoretError."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise GeoretError(f"{path} is not a torch zip file")
            prefix = pickles[0][: -len("data.pkl")]
            if archive.read(f"{prefix}byteorder").decode() != "little":
                raise GeoretError(f"{path} was written on a big-endian machine")
            return _TorchUnpickler(archive, prefix, archive.read(pickles[0])).load()
    except (OSError, zipfile.BadZipFile, KeyError, pickle.UnpicklingError, ValueError) as exc:
        raise GeoretError(f"{path} is not a readable torch file ({exc})") from None


# -- MiniLM (BERT) in numpy -------------------------------------------------------------------
def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26); numpy has none and scipy would cost an import."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1 / np.sqrt(2))))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    return centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps) * weight + bias


class NumpyMiniLM:
    """all-MiniLM-L6-v2's masked-mean sentence feature, as :class:`~georet.models.minilm.MiniLMTower` computes it."""

    def __init__(self, folder: Path):
        from safetensors.numpy import load_file

        cfg = json.loads((folder / "config.json").read_text())
        self.heads, self.eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
        w = {k: v.astype(np.float32) for k, v in load_file(str(minilm_weights(folder))).items()}
        self.word, self.position = w["embeddings.word_embeddings.weight"], w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for n in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{n}."
            qkv = np.concatenate([w[p + f"attention.self.{m}.weight"] for m in ("query", "key", "value")])
            self.layers.append({
                "qkv": (np.ascontiguousarray(qkv.T),
                        np.concatenate([w[p + f"attention.self.{m}.bias"] for m in ("query", "key", "value")])),
                "out": (np.ascontiguousarray(w[p + "attention.output.dense.weight"].T), w[p + "attention.output.dense.bias"]),
                "norm1": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                "up": (np.ascontiguousarray(w[p + "intermediate.dense.weight"].T), w[p + "intermediate.dense.bias"]),
                "down": (np.ascontiguousarray(w[p + "output.dense.weight"].T), w[p + "output.dense.bias"]),
                "norm2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            })

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Token ids (B, L) -> pooled (B, 384) float32."""
        mask = ids != 0
        length = max(1, int(mask.sum(1).max()))  # padding never changes the valid tokens: drop it
        ids, mask = ids[:, :length], mask[:, :length]
        x = self.word[ids] + self.position[:length] + self.token_type
        x = _layer_norm(x, *self.embed_norm, self.eps)
        b, n, width = x.shape
        head = width // self.heads
        bias = np.where(mask, 0.0, -np.inf).astype(np.float32)[:, None, None, :]
        for layer in self.layers:
            qkv = (x @ layer["qkv"][0] + layer["qkv"][1]).reshape(b, n, 3, self.heads, head).transpose(2, 0, 3, 1, 4)
            scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(head)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attended = (scores / scores.sum(-1, keepdims=True)) @ qkv[2]
            attended = attended.transpose(0, 2, 1, 3).reshape(b, n, width)
            x = _layer_norm(x + attended @ layer["out"][0] + layer["out"][1], *layer["norm1"], self.eps)
            ffn = _gelu(x @ layer["up"][0] + layer["up"][1]) @ layer["down"][0] + layer["down"][1]
            x = _layer_norm(x + ffn, *layer["norm2"], self.eps)
        weights = mask[..., None].astype(np.float32)
        return (x * weights).sum(1) / np.maximum(weights.sum(1), 1.0)


def _dense(state: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """A torch ``nn.Linear``'s (weight transposed for ``x @ w``, bias) as float32."""
    return (np.ascontiguousarray(state[f"{prefix}.weight"].astype(np.float32).T),
            state[f"{prefix}.bias"].astype(np.float32))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Head:
    """georet's ``Projection`` at ``prefix``: a linear map plus, when trained with one, the residual MLP."""

    def __init__(self, state: dict[str, np.ndarray], prefix: str):
        self.linear = _dense(state, prefix)
        self.mlp = (_dense(state, f"{prefix}.hidden"), _dense(state, f"{prefix}.out")) \
            if f"{prefix}.hidden.weight" in state else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.linear[0] + self.linear[1]
        if self.mlp is not None:
            (w1, b1), (w2, b2) = self.mlp
            y = y + _gelu(x @ w1 + b1) @ w2 + b2
        return y


class QueryTextEncoder:
    """Encodes query text like the torch georet-base model does: ``encode_text``, ``logit_scale``, ``identity``."""

    def __init__(self, arch: str, pretrained: str, weights_file: Path, config: dict[str, Any],
                 state: dict[str, np.ndarray], text_folder: Path, backbones: dict[str, str]):
        self.tokenizer = WordPiece(text_folder, config["text_context_length"])
        self.minilm = NumpyMiniLM(text_folder)
        members = config.get("head_members", 1)
        self.heads = [_Head(state, "text_head" if members == 1 else f"text_head.members.{k}") for k in range(members)]
        self.logit_scale = float(np.exp(np.float32(state["logit_scale"])))
        self.dim = int(self.heads[0].linear[0].shape[1])
        self.identity = model_identity(arch, pretrained, cached_sha256(weights_file), None, self.dim,
                                       tower_preprocess(config["image_size"]).to_dict(), backbones)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, dim), unit length."""
        pooled = self.minilm(self.tokenizer.ids(list(texts)))
        # as HeadEnsemble: the mean of the members' unit vectors (one member: its own unit vector)
        return _unit(np.mean([_unit(head(pooled)) for head in self.heads], axis=0))

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, 384) unit vectors of MiniLM itself, as the torch model's ``sentence_vectors``."""
        return _unit(self.minilm(self.tokenizer.ids(list(texts))))


def load_query_encoder(arch: str, pretrained: str | None, checkpoint: str | None = None) -> QueryTextEncoder | None:
    """The torch-free text encoder for this model, or None when only the torch model can encode its text.

    None also when anything does not line up (a changed backbone, another
    config): the torch loader then reports the problem in its own words.
    """
    if tower_config(arch) is None or checkpoint or pretrained is None:
        return None
    weights_file = BUNDLED_WEIGHTS.get(arch) if pretrained == BUNDLED_TAG else Path(pretrained)
    if weights_file is None or not weights_file.is_file():
        return None
    try:
        payload = read_torch_file(weights_file)
    except GeoretError:
        return None
    # the file carries the config it was trained as ("lit": the name of frozen towers in older files)
    config = payload.get("config") if isinstance(payload, dict) else None
    if not isinstance(config, dict) or payload.get("format") != TOWER_WEIGHTS_FORMAT \
            or config.get("method") not in ("frozen", "lit"):
        return None
    try:
        files = backbone_files(config["image_tower"])
    except GeoretError:  # not installed (a torch-free install: load_model's light model encodes the text)
        return None
    backbones = backbone_ids(files)
    if payload.get("backbones") != backbones:
        return None
    encoder = QueryTextEncoder(arch, pretrained, weights_file, config, payload["state_dict"], files["text"].parent,
                               backbones)
    return encoder if encoder.dim == config.get("embed_dim") else None  # weights that do not fit their config
