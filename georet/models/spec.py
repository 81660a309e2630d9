"""What model the user asked for (:class:`ModelSpec`), torch-free: an install without torch names the bundled
georet-base (:mod:`georet.models.light`); the names of other models come from open_clip and the zoo, which
need torch (:mod:`georet.models.open_clip_names`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from georet.errors import GeoretError
from georet.models.identity import BUNDLED_TAG, BUNDLED_WEIGHTS, DEFAULT_ARCH, DEFAULT_PRETRAINED


def has_torch() -> bool:
    """Whether torch is installed (``pip install 'georet[torch]'``): training, open_clip models, the zoo."""
    return importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: enough to rebuild the same model later.

    ``pretrained`` is an open_clip tag, ``bundled``, a local weights file, or
    None for a deterministic random init. The bundled weights exist only for
    georet's own models, so any other architecture must name its weights:
    ``ModelSpec("ViT-B-32")`` is an error, not a silent fallback.
    """

    arch: str = DEFAULT_ARCH
    pretrained: str | None = DEFAULT_PRETRAINED
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.pretrained == BUNDLED_TAG and self.arch not in BUNDLED_WEIGHTS:
            raise GeoretError(_name_the_weights(self.arch))

    @classmethod
    def from_options(cls, arch: str | None = None, pretrained: str | None = None,
                     checkpoint: str | None = None) -> "ModelSpec":
        """The spec for user options as the CLI takes them (``pretrained="none"`` = random init).

        No architecture means the default model (with ``pretrained``, if given),
        unless ``pretrained`` names a zoo model with one architecture or a
        weights file whose name or shapes say which architecture it is for.
        An architecture without pretrained tags may leave ``pretrained`` out (random init).
        """
        if pretrained is not None and pretrained.lower() == "none":
            return cls(arch or DEFAULT_ARCH, None, checkpoint)
        if arch is None:
            return cls(_arch_of_weights(pretrained) or DEFAULT_ARCH, pretrained or DEFAULT_PRETRAINED, checkpoint)
        if pretrained is None:
            if arch in BUNDLED_WEIGHTS or (has_torch() and _pretrained_tags(arch)):
                raise GeoretError(_name_the_weights(arch))
            return cls(arch, None, checkpoint)
        return cls(arch, pretrained, checkpoint)


def _pretrained_tags(arch: str) -> list[str]:
    from georet.models.open_clip_names import pretrained_tags

    return pretrained_tags(arch)


def _name_the_weights(arch: str) -> str:
    if arch in BUNDLED_WEIGHTS:
        tags = [BUNDLED_TAG]
    elif has_torch():
        from georet.models.open_clip_names import list_architectures

        tags = _pretrained_tags(arch) if arch in list_architectures() else []
    else:
        tags = []
    known = f"tags: {', '.join(tags[:8])}{', ...' if len(tags) > 8 else ''}" if tags else "no pretrained tags"
    return f"name the weights for {arch}: --pretrained TAG|FILE ({known}) or --pretrained none"


def _arch_of_weights(pretrained: str | None) -> str | None:
    """The architecture a zoo name or a weights file implies, when the user gave none."""
    if pretrained is None or pretrained == BUNDLED_TAG or not has_torch():
        return None  # without torch only the bundled model loads, and its loader says so
    import georet.models.zoo as zoo
    from georet.models.io import load_torch_file
    from georet.models.open_clip_names import open_clip_module

    if pretrained in zoo.zoo_families():
        archs = [e.arch for e in zoo.zoo_entries() if e.family == pretrained]
        if len(archs) > 1:
            raise GeoretError(f"{pretrained} exists for {', '.join(archs)}: name one with {{arch}}", names=("arch",))
        return archs[0]
    if not Path(pretrained).is_file():
        return None
    if entry := zoo.recognise_file(pretrained):
        return entry.arch
    try:  # a file with another name: its shapes tell which open_clip architecture it fits
        payload = load_torch_file(pretrained, mmap=True)
    except GeoretError:  # not a plain torch zip file: leave it to the loader, which explains
        return None
    if isinstance(payload, dict) and "format" in payload:  # georet's own weights files carry a format tag
        return None
    state = zoo.state_dict_of(payload)
    if state is None:
        return None
    open_clip = open_clip_module()
    return zoo.infer_arch(state, {name: open_clip.get_model_config(name) for name in open_clip.list_models()})

