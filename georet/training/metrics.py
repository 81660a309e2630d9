"""Text–image retrieval recall, exactly as the RS retrieval literature computes it.

(docs/methods.md, "Protocol": HVSA/GaLR ``acc_i2t``/``acc_t2i``.) ``similarity`` is
N_images × N_captions; ``caption_image[j]`` is the image index of caption j.

* i2t: each image ranks all captions; its rank is the best (lowest) rank among
  its own captions. R@K = % of images with rank < K.
* t2i: each caption ranks all images. R@K = % of captions whose image is in the top K.
* mR = mean of the six recalls.

Ties count against the query, so a collapsed model is not rewarded.
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)


def retrieval_recalls(similarity: np.ndarray, caption_image: np.ndarray,
                      caption_query_similarity: np.ndarray | None = None) -> dict[str, float]:
    """``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mR"}`` in percent.

    ``caption_query_similarity`` (same shape) scores the t2i direction when the
    score depends on which side is the query, as a query-time prior does.
    """
    sims = _scores(similarity)
    caption_image = np.asarray(caption_image)
    n_images, n_captions = sims.shape
    if caption_image.shape != (n_captions,):
        raise ValueError("caption_image needs one image index per caption")
    caption_sims = sims if caption_query_similarity is None else _scores(caption_query_similarity)
    if caption_sims.shape != sims.shape:
        raise ValueError("caption_query_similarity needs the shape of similarity")

    # Ties count against the query (pessimistic): a model that maps many items to the same
    # embedding must not be rewarded for it. Without ties this is the usual argsort rank.
    own = caption_image[None, :] == np.arange(n_images)[:, None]
    best_own = np.where(own, sims, -np.inf).max(axis=1)
    i2t_rank = ((sims >= best_own[:, None]) & ~own).sum(axis=1)

    true_sim = caption_sims[caption_image, np.arange(n_captions)]
    t2i_rank = (caption_sims.T >= true_sim[:, None]).sum(axis=1) - 1  # minus the true image itself

    out = {}
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in KS:
            out[f"{name}_r{k}"] = float(100.0 * np.mean(ranks < k))
    out["mR"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in KS]))
    return out


def _scores(similarity: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(similarity, dtype=np.float64), nan=-np.inf)  # a NaN score is the worst score
