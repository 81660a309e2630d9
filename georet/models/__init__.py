"""Models: one factory from (architecture, weights, checkpoint) to an embedding model.

Public surface: :class:`ModelSpec`, :func:`load_model`, :class:`EmbeddingModel`,
:class:`Preprocess`, the remote-sensing CLIP registry (:mod:`~georet.models.zoo`), the pretrained-tower models (:class:`TowerCLIP`, georet-base),
the training methods (:class:`AdapterConfig`,
:class:`AdaptedCLIP`) and checkpoints (:func:`save_checkpoint`,
:func:`read_checkpoint`). Depends on nothing else in georet but
:mod:`georet.errors`.
"""

import georet.models.zoo as zoo
from georet.models.adapters import METHODS, AdaptedCLIP, AdapterConfig
from georet.models.checkpoint import CHECKPOINT_FORMAT, Checkpoint, file_sha256, read_checkpoint, save_checkpoint
from georet.models.factory import (
    BUNDLED_TAG,
    BUNDLED_WEIGHTS,
    DEFAULT_ARCH,
    DEFAULT_PRETRAINED,
    EmbeddingModel,
    ModelSpec,
    list_architectures,
    load_model,
    open_clip_module,
    pretrained_tags,
    resolve_device,
)
from georet.models.preprocess import Preprocess
from georet.models.tower_clip import TowerCLIP, TowerCLIPConfig, load_tower_weights, save_tower_weights

__all__ = ["zoo", "METHODS", "AdaptedCLIP", "AdapterConfig", "CHECKPOINT_FORMAT", "Checkpoint", "file_sha256",
           "read_checkpoint", "save_checkpoint", "BUNDLED_TAG", "BUNDLED_WEIGHTS", "DEFAULT_ARCH",
           "DEFAULT_PRETRAINED", "EmbeddingModel", "ModelSpec", "list_architectures", "load_model",
           "open_clip_module", "pretrained_tags", "resolve_device", "Preprocess", "TowerCLIP", "TowerCLIPConfig",
           "load_tower_weights", "save_tower_weights"]
