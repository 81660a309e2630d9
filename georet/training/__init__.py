"""Training: adapt a model to image–caption data (CMER, MRS-Adapter + HMMC, full fine-tuning) and evaluate it.

Public surface: :class:`TrainConfig` with :func:`load_config` (strict), :func:`train`,
:class:`TrainingStep`, :func:`evaluate`, :func:`assemble_heads` (a head ensemble from several seeds)
and the data loaders. Depends on
:mod:`georet.models` and :mod:`georet.geo`; nothing in the library imports it.
"""

from georet.training.config import TrainConfig, load_config
from georet.training.data import RetrievalSplit, load_retrieval_data, tiled_scenes
from georet.training.ensemble import assemble_heads
from georet.training.evaluate import evaluate
from georet.training.metrics import retrieval_recalls
from georet.training.step import TrainingStep, make_optimizer
from georet.training.trainer import build_adapted, train

__all__ = ["TrainConfig", "load_config", "RetrievalSplit", "load_retrieval_data", "tiled_scenes", "evaluate",
           "retrieval_recalls", "TrainingStep", "make_optimizer", "build_adapted", "train", "assemble_heads"]
