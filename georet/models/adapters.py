"""Trainable methods on an open_clip CLIP: the model side of training.

:class:`AdaptedCLIP` wraps a CLIP and exposes ``encode_image``/``encode_text``
like open_clip does, so indexing and search use an adapted model exactly like
a plain one. Methods:

``frozen``
    nothing trains (zero-shot baseline).
``full``
    every CLIP parameter trains (full fine-tuning baseline).
``mrs``
    PE-RSITR's MRS-Adapter (methods.md §1.2–1.3): ONE adapter shared by every
    block of both towers, parallel to the MLP, ``x + MLP(LN(x)) + A(x)``;
    ``A(x) = concat(W_up^m h, W_up^s h)``, ``h = Dropout(ReLU(W_down^m x))``;
    up-projections start at zero. Backprop runs through the whole backbone.
``focus``
    CMER's Focus-Adapter, re-designed here (the paper's formulas are not
    public, methods.md §2.3 B). A *side branch* reads hidden states of the
    frozen backbone, computed under ``torch.no_grad()``, so no activation of the
    backbone is kept for backward and nothing backpropagates through it:

    * ``z₀ = W_in h₀`` (width r ≈ D/8); at every tapped layer l:
      ``z ← z + MLP_r(LN(z + W_l h_l))``.
    * **Focus layer** (image tower, after the first side block): a saliency
      ``s_i = σ(wᵀ LN(z_i) + b)`` per patch token; only the top ``focus_keep``
      fraction of patches goes on (background tokens are dropped, which also
      cuts side-branch memory), each scaled by ``s_i`` so the scorer learns.
    * Pooling: image ``p = z_CLS + Σ_i s_i z_i / Σ_i s_i`` over kept patches;
      text: the EOT token.
    * Gated fusion: ``f = f_frozen + g · W_out LN(p)`` with the scalar gate ``g``
      starting at 0, so the adapted model starts equal to the frozen one.

    The text tower gets the same side branch without the focus layer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, get_args

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F

Method = Literal["frozen", "full", "mrs", "focus"]
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class AdapterConfig:
    """A training method and its hyper-parameters: what a checkpoint needs to rebuild the model.

    Every field is read by :class:`AdaptedCLIP`; fields of other methods are ignored
    by it but still typed, so a config names only keys that exist.
    """

    name: Method = "focus"
    #: focus: the side branch reads every ``tap_every``-th block of the frozen tower
    tap_every: int = 2
    #: focus: side-branch width as a fraction of the backbone width
    side_ratio: float = 0.125
    #: focus: fraction of patch tokens the focus layer keeps (1.0 keeps all, still saliency-weighted; None: no focus layer)
    focus_keep: float | None = 0.5
    #: focus: hidden width of the side blocks' MLP relative to the side width
    mlp_ratio: float = 2.0
    #: mrs: adapter bottleneck width, shared output channels and dropout
    bottleneck: int = 64
    shared: int = 64
    adapter_dropout: float = 0.5
    #: train the logit scale (default: every method that trains anything)
    learn_logit_scale: bool | None = None

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; choose from {', '.join(METHODS)}")
        if self.focus_keep is not None and not 0.0 < self.focus_keep <= 1.0:
            raise ValueError(f"focus_keep must lie in (0, 1], got {self.focus_keep}")
        if self.tap_every < 1:
            raise ValueError(f"tap_every must be at least 1, got {self.tap_every}")

    def options(self) -> dict[str, Any]:
        """Everything but the method name, as stored in checkpoints (``method_config``)."""
        return {k: v for k, v in asdict(self).items() if k != "name"}


# -- plain tower passes, shared by every method -------------------------------------------
def _run_blocks(blocks: nn.ModuleList, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                taps: set[int] | None = None, checkpointing: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run transformer blocks, keeping the outputs of the ``taps`` blocks.

    With ``checkpointing`` (and grad enabled) block activations are recomputed
    in backward instead of stored: less memory for ``full``/``mrs`` training.
    """
    hidden = []
    recompute = checkpointing and torch.is_grad_enabled()
    for i, block in enumerate(blocks):
        if recompute:
            x = torch.utils.checkpoint.checkpoint(block, x, None, None, attn_mask, use_reentrant=False)
        else:
            x = block(x, attn_mask=attn_mask)
        if taps and i in taps:
            hidden.append(x)
    return x, hidden


def _image_embeds(clip, images: torch.Tensor, token_dropout: float) -> torch.Tensor:
    x = clip.visual._embeds(images)  # patchify, CLS, positions, ln_pre
    return F.dropout(x, token_dropout, training=True) if token_dropout else x


def _image_head(clip, x: torch.Tensor) -> torch.Tensor:
    pooled, _ = clip.visual._pool(x)
    return pooled @ clip.visual.proj if clip.visual.proj is not None else pooled


def _text_embeds(clip, tokens: torch.Tensor, token_dropout: float) -> torch.Tensor:
    x = clip.token_embedding(tokens) + clip.positional_embedding
    return F.dropout(x, token_dropout, training=True) if token_dropout else x


def _text_head(clip, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    from open_clip.transformer import text_global_pool  # imported here: open_clip pulls torchvision (~1.5 s)

    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if isinstance(clip.text_projection, nn.Linear):
        return clip.text_projection(x)
    return x @ clip.text_projection if clip.text_projection is not None else x


def _eot_index(clip, tokens: torch.Tensor) -> torch.Tensor:
    eos = getattr(clip, "text_eos_id", None)
    return (tokens == eos).int().argmax(dim=-1) if eos is not None else tokens.argmax(dim=-1)


# -- MRS-Adapter (PE-RSITR) ---------------------------------------------------------------
class MRSAdapter(nn.Module):
    """One adapter for both towers; the last ``shared`` output channels come from a shared up-projection."""

    def __init__(self, vision_width: int, text_width: int, bottleneck: int = 64, shared: int = 64,
                 dropout: float = 0.5):
        super().__init__()
        shared = min(shared, vision_width // 2, text_width // 2)  # tiny test models are narrower than 2×64
        self.dropout = dropout
        self.down = nn.ModuleDict({"image": nn.Linear(vision_width, bottleneck),
                                   "text": nn.Linear(text_width, bottleneck)})
        self.up = nn.ModuleDict({"image": nn.Linear(bottleneck, vision_width - shared),
                                 "text": nn.Linear(bottleneck, text_width - shared)})
        self.up_shared = nn.Linear(bottleneck, shared)
        for layer in (*self.down.values(),):
            nn.init.zeros_(layer.bias)
        for layer in (*self.up.values(), self.up_shared):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        h = F.relu(self.down[modality](x.float()))
        h = F.dropout(h, self.dropout, training=self.training)
        return torch.cat([self.up[modality](h), self.up_shared(h)], dim=-1).to(x.dtype)


def _mrs_block_forward(block, adapter: MRSAdapter, modality: str, q_x, k_x=None, v_x=None, attn_mask=None):
    x = q_x + block.ls_1(block.attention(q_x=block.ln_1(q_x), attn_mask=attn_mask))
    return x + block.ls_2(block.mlp(block.ln_2(x))) + adapter(x, modality)


# -- Focus-Adapter (CMER) -------------------------------------------------------------------
class SideBlock(nn.Module):
    def __init__(self, width: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, int(width * mlp_ratio))
        self.fc2 = nn.Linear(int(width * mlp_ratio), width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(z))))


class FocusLayer(nn.Module):
    """Keeps the most salient patch tokens (token 0 = CLS always stays) and scales them by saliency."""

    def __init__(self, width: int, keep: float):
        super().__init__()
        self.keep = keep
        self.norm = nn.LayerNorm(width)
        self.score = nn.Linear(width, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (kept tokens (B, 1+k, r), their indices in the full sequence (B, 1+k), patch saliency (B, k))."""
        cls, patches = z[:, :1], z[:, 1:]
        saliency = torch.sigmoid(self.score(self.norm(patches))).squeeze(-1)
        k = max(1, math.ceil(self.keep * patches.shape[1]))
        top = saliency.topk(k, dim=1).indices.sort(dim=1).values
        kept_s = saliency.gather(1, top)
        kept = patches.gather(1, top[..., None].expand(-1, -1, z.shape[-1])) * kept_s[..., None]
        index = torch.cat([torch.zeros_like(top[:, :1]), top + 1], dim=1)
        return torch.cat([cls, kept], dim=1), index, kept_s


class SideBranch(nn.Module):
    def __init__(self, backbone_width: int, width: int, n_taps: int, out_dim: int,
                 focus_keep: float | None = None, mlp_ratio: float = 2.0):
        super().__init__()
        self.inp = nn.Linear(backbone_width, width)
        self.taps = nn.ModuleList([nn.Linear(backbone_width, width, bias=False) for _ in range(n_taps)])
        self.blocks = nn.ModuleList([SideBlock(width, mlp_ratio) for _ in range(n_taps)])
        self.focus = FocusLayer(width, focus_keep) if focus_keep else None
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, hidden: list[torch.Tensor],
                pool: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
        """``hidden`` = [embeddings, tapped block outputs...] of the frozen tower (no grad)."""
        z = self.inp(hidden[0])
        index = saliency = None
        for i, (tap, block) in enumerate(zip(self.taps, self.blocks)):
            h = hidden[i + 1]
            if index is not None:
                h = h.gather(1, index[..., None].expand(-1, -1, h.shape[-1]))
            z = z + block(z + tap(h))
            if i == 0 and self.focus is not None:
                z, index, saliency = self.focus(z)
        return self.gate * self.out(self.norm(pool(z, saliency)))


def _pool_image(z: torch.Tensor, saliency: torch.Tensor | None) -> torch.Tensor:
    if saliency is None:
        return z[:, 0] + z[:, 1:].mean(dim=1)
    return z[:, 0] + (saliency[..., None] * z[:, 1:]).sum(1) / saliency.sum(1, keepdim=True).clamp_min(1e-6)


def _taps(n_layers: int, every: int) -> list[int]:
    taps = list(range(every - 1, n_layers, every))
    return taps if taps and taps[-1] == n_layers - 1 else taps + [n_layers - 1]


# -- the wrapper ----------------------------------------------------------------------------
class AdaptedCLIP(nn.Module):
    """An open_clip CLIP plus one training method (see module docstring)."""

    grad_checkpointing = False

    def __init__(self, clip: nn.Module, config: AdapterConfig):
        super().__init__()
        if not hasattr(clip, "token_embedding"):
            raise ValueError("adapters need an open_clip CLIP with its own text transformer")
        self.clip = clip
        self.config = config
        method = config.name
        for p in clip.parameters():
            p.requires_grad_(method == "full")
        vision_width = clip.visual.transformer.width
        text_width = clip.transformer.width
        embed_dim = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) \
            else clip.text_projection.out_features
        if method == "mrs":
            self.mrs = MRSAdapter(vision_width, text_width, config.bottleneck, config.shared, config.adapter_dropout)
            for modality, blocks in (("image", clip.visual.transformer.resblocks), ("text", clip.transformer.resblocks)):
                for block in blocks:
                    block.forward = functools.partial(_mrs_block_forward, block, self.mrs, modality)
        elif method == "focus":
            self.image_taps = _taps(len(clip.visual.transformer.resblocks), config.tap_every)
            self.text_taps = _taps(len(clip.transformer.resblocks), config.tap_every)
            self.image_side = SideBranch(vision_width, max(16, int(vision_width * config.side_ratio)),
                                         len(self.image_taps), embed_dim, config.focus_keep, config.mlp_ratio)
            self.text_side = SideBranch(text_width, max(16, int(text_width * config.side_ratio)),
                                        len(self.text_taps), embed_dim, None, config.mlp_ratio)
        learn_scale = config.learn_logit_scale if config.learn_logit_scale is not None else method != "frozen"
        if learn_scale:
            clip.logit_scale.requires_grad_(True)

    @property
    def method(self) -> str:
        return self.config.name

    # what indexing/search need from a model
    @property
    def visual(self):
        return self.clip.visual

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = False, token_dropout: float = 0.0) -> torch.Tensor:
        clip = self.clip
        if self.method == "focus":
            with torch.no_grad():
                x0 = _image_embeds(clip, images, token_dropout)
                x, hidden = _run_blocks(clip.visual.transformer.resblocks, x0, taps=set(self.image_taps))
                frozen = _image_head(clip, x)
            feats = frozen + self.image_side([x0, *hidden], _pool_image)
        else:
            x, _ = _run_blocks(clip.visual.transformer.resblocks, _image_embeds(clip, images, token_dropout),
                               checkpointing=self.grad_checkpointing)
            feats = _image_head(clip, x)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False, token_dropout: float = 0.0) -> torch.Tensor:
        clip = self.clip
        if self.method == "focus":
            eot = _eot_index(clip, tokens)
            with torch.no_grad():
                x0 = _text_embeds(clip, tokens, token_dropout)
                x, hidden = _run_blocks(clip.transformer.resblocks, x0, clip.attn_mask, set(self.text_taps))
                frozen = _text_head(clip, x, tokens)
            rows = torch.arange(len(tokens), device=tokens.device)
            feats = frozen + self.text_side([x0, *hidden], lambda z, _s: z[rows, eot])
        else:
            x, _ = _run_blocks(clip.transformer.resblocks, _text_embeds(clip, tokens, token_dropout), clip.attn_mask,
                               checkpointing=self.grad_checkpointing)
            feats = _text_head(clip, x, tokens)
        return F.normalize(feats, dim=-1) if normalize else feats

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: this is what checkpoints hold."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k in names}

    def count_trainable(self, exclude_logit_scale: bool = True) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if p.requires_grad and not (exclude_logit_scale and n.endswith("logit_scale")))
