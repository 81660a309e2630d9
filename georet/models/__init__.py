"""Models: one factory from (architecture, weights, checkpoint) to an embedding model.

Public surface: :class:`ModelSpec`, :func:`load_model`, :class:`EmbeddingModel`,
:class:`Preprocess`, the remote-sensing CLIP registry (:mod:`~georet.models.zoo`), the pretrained-tower models (:class:`TowerCLIP`, georet-base),
the torch-free query encoder (:func:`load_query_encoder`),
the training methods (:class:`AdapterConfig`,
:class:`AdaptedCLIP`) and checkpoints (:func:`save_checkpoint`,
:func:`read_checkpoint`). Depends on nothing else in georet but
:mod:`georet.errors`. Names whose modules import torch load on first use
(:mod:`georet.lazy`), so a text query can run without torch; :func:`load_model` runs the bundled georet-base
without torch where it is not installed (:mod:`georet.models.light`).
"""

from georet.lazy import lazy_exports
from georet.models.identity import BUNDLED_TAG, BUNDLED_WEIGHTS, DEFAULT_ARCH, DEFAULT_PRETRAINED, file_sha256
from georet.models.io import cache_dir
from georet.models.loading import load_model
from georet.models.preprocess import Preprocess
from georet.models.spec import ModelSpec, has_torch
from georet.models.text_query import QueryTextEncoder, load_query_encoder

_TORCH_MODULES = {
    "georet.models.zoo": ("zoo",),
    "georet.models.adapters": ("METHODS", "AdaptedCLIP", "AdapterConfig"),
    "georet.models.checkpoint": ("CHECKPOINT_FORMAT", "Checkpoint", "read_checkpoint", "save_checkpoint"),
    "georet.models.factory": ("EmbeddingModel", "resolve_device"),
    "georet.models.open_clip_names": ("list_architectures", "open_clip_module", "pretrained_tags"),
    "georet.models.tower_clip": ("TowerCLIP", "TowerCLIPConfig", "load_tower_weights", "save_tower_weights"),
}
__getattr__ = lazy_exports(__name__, _TORCH_MODULES)

__all__ = ["BUNDLED_TAG", "BUNDLED_WEIGHTS", "DEFAULT_ARCH", "DEFAULT_PRETRAINED", "file_sha256", "Preprocess",
           "ModelSpec", "has_torch", "load_model", "cache_dir", "QueryTextEncoder", "load_query_encoder", *(n for names in _TORCH_MODULES.values() for n in names)]
