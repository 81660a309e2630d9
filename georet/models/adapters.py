"""The training methods, one set of modules for every model family.

:class:`SideBranch` (CMER's Focus-Adapter) and :class:`MRSAdapter`
(PE-RSITR's MRS-Adapter) serve both open_clip CLIPs (:class:`AdaptedCLIP`,
here) and georet's pretrained-tower models (:class:`~georet.models.tower_clip.TowerCLIP`).
Methods (one vocabulary, :data:`METHODS`):

``frozen``
    the backbone stays as it is; only what it lacks trains (nothing on a CLIP,
    the zero-shot baseline; the two heads on a tower model: LiT).
``full``
    every parameter trains (full fine-tuning baseline).
``mrs``
    PE-RSITR's MRS-Adapter (docs/methods.md, "PE-RSITR"): ONE adapter shared by every
    block of both towers, parallel to the MLP, ``x + MLP(LN(x)) + A(x)``;
    ``A(x) = concat(W_up^m h, W_up^s h)``, ``h = Dropout(ReLU(W_down^m x))``;
    up-projections start at zero. Backprop runs through the whole backbone.
``focus``
    CMER's Focus-Adapter, re-designed here (the paper's formulas are not
    public; docs/methods.md, "CMER"). A *side branch* reads hidden states of the
    frozen backbone, computed under ``torch.no_grad()``, so no activation of the
    backbone is kept for backward and nothing backpropagates through it. Its
    focus layer keeps the most salient tokens and drops the background; its
    zero-initialised output is added to the frozen pooled feature, so the
    adapted model starts equal to the frozen one. The text tower gets the same
    branch without the focus layer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from georet.errors import GeoretError

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
    #: focus: fraction of tokens the focus layer keeps (1.0 keeps all, still saliency-weighted; None: no focus layer)
    focus_keep: float | None = 0.5
    #: mrs: adapter bottleneck width, shared output channels and dropout; None takes the model's own, held once
    #: per model family: :class:`MRSAdapter`'s defaults for open_clip CLIPs, the model config's for tower models
    bottleneck: int | None = None
    shared: int | None = None
    adapter_dropout: float | None = None
    #: train the logit scale (default: every method that trains anything)
    learn_logit_scale: bool | None = None

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; choose from {', '.join(METHODS)}")
        if self.focus_keep is not None and not 0.0 < self.focus_keep <= 1.0:
            raise ValueError(f"focus_keep must lie in (0, 1], got {self.focus_keep}")
        if self.tap_every < 1:
            raise ValueError(f"tap_every must be at least 1, got {self.tap_every}")

    def mrs_options(self) -> dict[str, Any]:
        """The MRS-Adapter settings this config sets (the rest stay the model's own)."""
        named = {"bottleneck": self.bottleneck, "shared": self.shared, "dropout": self.adapter_dropout}
        return {key: value for key, value in named.items() if value is not None}

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
    """One adapter shared by every block of the towers it serves (PE-RSITR's MRS-Adapter).

    ``widths`` names each modality's token width (``{"image": 768, "text": 512}``
    for a CLIP; ``{"text": 384}`` for georet's MiniLM tower, where the CNN has
    no MLP blocks to run beside). Each modality has its own down- and
    up-projection; the last ``shared`` output channels come from one
    up-projection shared by all modalities. Up-projections start at zero, so
    an adapted model starts equal to its backbone.
    """

    def __init__(self, widths: dict[str, int], bottleneck: int = 64, shared: int = 64, dropout: float = 0.5):
        super().__init__()
        shared = min(shared, *(w // 2 for w in widths.values()))  # tiny test models are narrower than 2×64
        self.dropout = dropout
        self.down = nn.ModuleDict({m: nn.Linear(w, bottleneck) for m, w in widths.items()})
        self.up = nn.ModuleDict({m: nn.Linear(bottleneck, w - shared) for m, w in widths.items()})
        self.up_shared = nn.Linear(bottleneck, shared)
        for layer in self.down.values():
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
@dataclass(frozen=True)
class SideConfig:
    """A side branch over tapped token maps."""

    width: int = 192
    heads: int = 4
    depth: int = 1
    #: fraction of valid tokens the focus layer keeps (None: no focus layer)
    focus_keep: float | None = None
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.focus_keep is not None and not 0.0 < self.focus_keep <= 1.0:
            raise GeoretError(f"focus_keep must lie in (0, 1], got {self.focus_keep}")
        if self.width % self.heads:
            raise GeoretError(f"side width {self.width} is not divisible by heads {self.heads}")


class SideBranch(nn.Module):
    """CMER's side branch over tapped token maps of a frozen tower; the one Focus-Adapter of every model.

    Every tap (ViT block outputs, CNN stage maps with one token per position,
    BERT hidden states) is projected to the side width and tagged with a
    learned level embedding; the tokens of all taps form one sequence. The
    focus layer scores each token ``s = σ(wᵀ LN(z) + b)``, keeps the top
    ``focus_keep`` fraction of valid tokens and scales them by ``s`` (so the
    scorer gets gradient): background tokens are dropped, which also cuts the
    branch's memory. Small pre-LN transformer blocks mix the kept tokens; a
    saliency-weighted (or masked) mean pools them; a zero-initialised
    up-projection returns a delta in the tower's pooled space, so the adapted
    model starts equal to the frozen one.
    """

    def __init__(self, tap_dims: list[int], out_dim: int, cfg: SideConfig):
        super().__init__()
        self.cfg = cfg
        self.inputs = nn.ModuleList(nn.Linear(d, cfg.width) for d in tap_dims)
        self.levels = nn.Parameter(torch.zeros(len(tap_dims), cfg.width))
        self.norm_in = nn.LayerNorm(cfg.width)
        self.score = nn.Linear(cfg.width, 1) if cfg.focus_keep is not None else None
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.width, cfg.heads, cfg.width * 2, cfg.dropout, batch_first=True,
                                       norm_first=True, activation="gelu")
            for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.up = nn.Linear(cfg.width, out_dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, taps: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """``taps``: (B, tokens, C_l) maps; ``mask``: (B, tokens) valid tokens, the same for every tap."""
        tokens = torch.cat([proj(t.to(proj.weight.dtype)) + level
                            for proj, t, level in zip(self.inputs, taps, self.levels)], dim=1)
        if mask is None:
            valid = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        else:
            valid = mask.repeat(1, len(taps))
        z = self.norm_in(tokens)
        weights = valid.to(z.dtype)
        if self.score is not None:
            z, valid, weights = self.focus(z, valid)
        for block in self.blocks:
            z = block(z, src_key_padding_mask=~valid)
        pooled = (self.norm_out(z) * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-6)
        return self.up(pooled)

    def focus(self, z: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The focus layer: (kept tokens scaled by saliency, their validity, their saliency)."""
        saliency = torch.sigmoid(self.score(z).squeeze(-1)).masked_fill(~valid, 0.0)
        keep = max(1, math.ceil(self.cfg.focus_keep * z.shape[1]))
        top = saliency.topk(keep, dim=1).indices
        kept = z.gather(1, top.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
        kept_saliency = saliency.gather(1, top)
        return kept * kept_saliency.unsqueeze(-1), valid.gather(1, top), kept_saliency


def _taps(n_layers: int, every: int) -> list[int]:
    taps = list(range(every - 1, n_layers, every))
    return taps if taps and taps[-1] == n_layers - 1 else taps + [n_layers - 1]


def _side_config(backbone_width: int, ratio: float, focus_keep: float | None) -> SideConfig:
    """The side branch for a backbone ``backbone_width`` wide: ``ratio`` of it, 4 heads, at least 16."""
    width = max(16, 4 * round(backbone_width * ratio / 4))
    return SideConfig(width=width, heads=4, depth=1, focus_keep=focus_keep)


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
            self.mrs = MRSAdapter({"image": vision_width, "text": text_width}, **config.mrs_options())
            for modality, blocks in (("image", clip.visual.transformer.resblocks), ("text", clip.transformer.resblocks)):
                for block in blocks:
                    block.forward = functools.partial(_mrs_block_forward, block, self.mrs, modality)
        elif method == "focus":
            self.image_taps = _taps(len(clip.visual.transformer.resblocks), config.tap_every)
            self.text_taps = _taps(len(clip.transformer.resblocks), config.tap_every)
            self.image_side = SideBranch([vision_width] * (1 + len(self.image_taps)), embed_dim,
                                         _side_config(vision_width, config.side_ratio, config.focus_keep))
            self.text_side = SideBranch([text_width] * (1 + len(self.text_taps)), embed_dim,
                                        _side_config(text_width, config.side_ratio, None))
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
            feats = frozen + self.image_side([x0, *hidden])
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
            valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] <= eot[:, None]  # up to EOT
            feats = frozen + self.text_side([x0, *hidden], valid)
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
