"""Training: adapt a model to image–caption data (CMER, MRS-Adapter + HMMC, full fine-tuning) and evaluate it.

Public surface: :class:`TrainConfig` with :func:`load_config` (strict), :func:`train`
(one loop, :func:`fit`, for every model family and method), :func:`evaluate`,
:func:`assemble_heads` (a head ensemble from several seeds) and the data loaders.
Depends on :mod:`georet.models` and :mod:`georet.geo`; nothing in the library imports it.
"""

from georet.training.config import TrainConfig, load_config
from georet.training.data import RetrievalSplit, load_retrieval_data, tiled_scenes
from georet.training.ensemble import assemble_heads
from georet.training.evaluate import evaluate, retrieval_scores
from georet.training.metrics import retrieval_recalls
from georet.training.trainer import contrastive_loss, fit, load_splits, make_optimizer, train

__all__ = ["TrainConfig", "load_config", "RetrievalSplit", "load_retrieval_data", "tiled_scenes", "evaluate",
           "retrieval_scores", "retrieval_recalls", "contrastive_loss", "fit", "load_splits", "make_optimizer", "train",
           "assemble_heads"]
