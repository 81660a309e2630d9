"""The architectures and pretrained tags georet can name: open_clip's (imported on first use), its own configs,
the tower models and the remote-sensing CLIP zoo. Needs torch (open_clip) for all but georet's own names."""

from __future__ import annotations

from georet.models.identity import BUNDLED_TAG, BUNDLED_WEIGHTS, MODEL_CONFIG_DIR, tower_config

_configs_registered = False


def open_clip_module():
    """Import open_clip lazily (it pulls torchvision) and register our configs once."""
    global _configs_registered
    import open_clip

    if not _configs_registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _configs_registered = True
    return open_clip


def list_architectures() -> list[str]:
    """All architecture names georet can build: open_clip's, georet's own, and the tower models."""
    towers = [p.stem for p in sorted(MODEL_CONFIG_DIR.glob("*.json")) if tower_config(p.stem)]
    return towers + list(open_clip_module().list_models())


def pretrained_tags(arch: str) -> list[str]:
    """Pretrained tags of one architecture: ``bundled`` for georet's own models, else the zoo's and open_clip's."""
    if arch in BUNDLED_WEIGHTS:
        return [BUNDLED_TAG]
    import georet.models.zoo as zoo

    return zoo.zoo_tags_for(arch) + list(open_clip_module().list_pretrained_tags_by_model(arch))
