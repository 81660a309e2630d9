"""Retrieval evaluation of a model on an image–caption split (``georet eval``).

Optional *scene prior* (scene label augmentation at query time): each caption's
scene distribution is predicted from its text alone (zero-shot against the
class prompts), and an (image, caption) pair's score gains ``β · P_caption(scene
of the image)``. Which scene the image has depends on its side: as a gallery
item (text→image) it carries its scene as metadata (file-name label; a
zero-shot prediction when unlabelled), as a query (image→text) its scene is
predicted from its pixels. The ground-truth scene of a query is never used
(docs/methods.md, "Protocol": that leaks and inflates recall; before this was split, the
image→text half used it, worth +0.6 mR on the georet-base test split).
"""

from __future__ import annotations

import numpy as np
import torch

from georet.geo import ZeroShotScenes, classes_for_labels
from georet.training.data import RetrievalSplit, load_image, same_size
from georet.training.metrics import retrieval_recalls


def embed_split(model, split: RetrievalSplit, batch_size: int = 64, progress: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image features (one per image) and caption features."""
    from tqdm.auto import tqdm

    images = []
    for start in tqdm(range(0, len(split.images), batch_size), desc="images", disable=not progress, leave=False):
        pixels = np.stack(same_size([load_image(p) for p in split.images[start:start + batch_size]]))
        images.append(model.encode_images(model.preprocess.apply(pixels)))
    texts = [model.encode_text(split.captions[s:s + batch_size]) for s in range(0, len(split.captions), batch_size)]
    return np.concatenate(images), np.concatenate(texts)


def scene_prior_matrices(model, split: RetrievalSplit, image_feats: np.ndarray, text_feats: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(image_queries, caption_queries)``: P[i, j] = probability, predicted from the text, that caption j
    is about the scene of image i — predicted from image i's pixels when it is the query, its metadata
    label when it is the gallery."""
    classes = classes_for_labels(split.scenes)
    if len(classes) < 2:
        none = np.zeros((len(image_feats), len(text_feats)))
        return none, none
    zero_shot = ZeroShotScenes(model, classes)
    caption_probs = zero_shot.probabilities(text_feats)  # (captions, classes)
    index = {c.label: k for k, c in enumerate(classes)}
    predicted = zero_shot.probabilities(image_feats).argmax(axis=1)
    labelled = np.array([index.get(s, predicted[i]) if s else predicted[i] for i, s in enumerate(split.scenes)])
    return caption_probs[:, predicted].T, caption_probs[:, labelled].T


def retrieval_scores(image_feats: np.ndarray, text_feats: np.ndarray, split: RetrievalSplit, scene_prior: float = 0.0,
                     text_model=None) -> dict[str, float]:
    """i2t/t2i R@1/5/10 and mR (percent) of unit-length embeddings of ``split``'s images and captions.

    With ``scene_prior`` > 0, ``text_model`` (``encode_text`` and ``logit_scale``)
    scores the zero-shot scene prompts. The one scoring of ``georet eval`` and of
    validation during training.
    """
    sims = image_feats @ text_feats.T
    if not scene_prior:
        return retrieval_recalls(sims, split.caption_image)
    image_queries, caption_queries = scene_prior_matrices(text_model, split, image_feats, text_feats)
    return retrieval_recalls(sims + scene_prior * image_queries, split.caption_image,
                             caption_query_similarity=sims + scene_prior * caption_queries)


def evaluate(model, split: RetrievalSplit, scene_prior: float = 0.0, batch_size: int = 64,
             progress: bool = False) -> dict[str, float]:
    """i2t/t2i R@1/5/10 and mR (percent) of an embedding model on ``split``."""
    with torch.inference_mode():
        image_feats, text_feats = embed_split(model, split, batch_size, progress)
    return retrieval_scores(image_feats, text_feats, split, scene_prior, model)
