"""Training objectives: in-batch InfoNCE, negative sample recycling (feature queues)
and PE-RSITR's HMMC.

All functions take L2-normalised features and a logit scale (1/temperature).
``image_ids`` name the image each row comes from: captions of the same image
(siblings), and identical captions of other images, are never used as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_cross_entropy(logits: torch.Tensor, false_negatives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the positive on the diagonal; ``false_negatives`` entries are removed."""
    logits = logits.masked_fill(false_negatives, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


#: Cosine above which two captions count as the same text (identical captions embed identically).
DUPLICATE_COSINE = 1.0 - 1e-5


def _false_negatives(ids_a: torch.Tensor, ids_b: torch.Tensor, text_a: torch.Tensor,
                     text_b: torch.Tensor) -> torch.Tensor:
    """(A, B) True where b must not serve as a negative for a: same image, or the very same caption.

    RS caption sets repeat sentences across images (RSICD; land-cover templates);
    pushing a caption away from its own duplicate teaches nothing but noise.
    """
    with torch.no_grad():
        return (ids_a[:, None] == ids_b[None, :]) | (text_a @ text_b.T > DUPLICATE_COSINE)


def info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
             image_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric in-batch InfoNCE; row i of ``image`` and ``text`` form a positive pair."""
    logits = logit_scale * image @ text.T
    false_negatives = _false_negatives(image_ids, image_ids, text, text)
    false_negatives &= ~torch.eye(len(image_ids), dtype=torch.bool, device=image_ids.device)
    return 0.5 * (_masked_cross_entropy(logits, false_negatives) + _masked_cross_entropy(logits.T, false_negatives))


def intra_modal_nce(clean: torch.Tensor, augmented: torch.Tensor, logit_scale: torch.Tensor | float,
                    image_ids: torch.Tensor) -> torch.Tensor:
    """SimCSE-style term: a feature must find its own dropout-augmented view among the batch."""
    return info_nce(clean, augmented, logit_scale, image_ids)


def hmmc_loss(image: torch.Tensor, text: torch.Tensor, image_aug: torch.Tensor, text_aug: torch.Tensor,
              logit_scale: torch.Tensor | float, image_ids: torch.Tensor,
              weight_image: float = 1.0, weight_text: float = 1.0) -> torch.Tensor:
    """HMMC as re-implemented here (the paper's formula is not public; docs/methods.md, "PE-RSITR"):

        L = L_cm(I, T) + λ_v · L_intra(I, I_aug) + λ_t · L_intra(T, T_aug)

    every term a symmetric InfoNCE over in-batch cosine similarities, with
    captions of the same image masked out as negatives. The intra-modal terms
    push apart the very similar images (and captions) of RS datasets.
    """
    return (info_nce(image, text, logit_scale, image_ids)
            + weight_image * intra_modal_nce(image, image_aug, logit_scale, image_ids)
            + weight_text * intra_modal_nce(text, text_aug, logit_scale, image_ids))


class FeatureQueues(torch.nn.Module):
    """Negative sample recycling: FIFO queues of past image and text features.

    Features are stored detached (no extra encoder, no gradient into the past),
    with their image ids so that sibling captions are masked as negatives. The
    pool size is independent of the batch size.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, dim))
        self.register_buffer("texts", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))

    @property
    def filled(self) -> int:
        return int((self.ids >= 0).sum())

    @torch.no_grad()
    def push(self, image: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor) -> None:
        n = min(len(image_ids), self.size)
        slots = (self.cursor + torch.arange(n, device=self.ids.device)) % self.size
        self.images[slots] = image[-n:].detach().to(self.images.dtype)
        self.texts[slots] = text[-n:].detach().to(self.texts.dtype)
        self.ids[slots] = image_ids[-n:].to(self.ids.device)
        self.cursor.copy_((self.cursor + n) % self.size)

    def loss(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
             image_ids: torch.Tensor) -> torch.Tensor:
        """InfoNCE of each in-batch pair against the queued features of the other modality."""
        valid = self.ids >= 0
        if not bool(valid.any()):
            return image.new_zeros(())
        positive = (image * text).sum(-1, keepdim=True)
        # the anchor's own image, its sibling captions, or a duplicate of its caption
        false_negatives = _false_negatives(image_ids, self.ids[valid], text, self.texts[valid])
        mask = torch.cat([torch.zeros_like(false_negatives[:, :1]), false_negatives], dim=1)

        def term(anchor: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
            # Mask after scaling: -inf before a learnable scale gives it a 0·(-inf) = NaN gradient.
            logits = (logit_scale * torch.cat([positive, anchor @ negatives.T], dim=1)).masked_fill(mask, float("-inf"))
            return F.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))

        return 0.5 * (term(image, self.texts[valid]) + term(text, self.images[valid]))
