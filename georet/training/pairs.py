"""The rows a training run works on: every image and every text once, the train pairs and the validation set.

Both model families train from the same table. Its row order is the row
order of the feature caches (:mod:`georet.training.feature_cache`), so a cache
is tied to the table it was made for by :meth:`PairTable.fingerprint`.
Scene label augmentation (CMER) is a second text row per caption, the caption
prefixed with its image's scene; a training batch swaps the plain row for it
with probability ``scene_aug.train_p``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from georet.geo import default_prompt_words
from georet.training.data import SCENE_TEMPLATE, RetrievalSplit


@dataclass(frozen=True)
class Pairs:
    """Training pairs: caption ``j`` shows image row ``image[j]``; its text row is ``text[j]``, and
    ``scene_text[j]`` the same caption with its scene prefixed (``text[j]`` where the scene is unknown)."""

    image: np.ndarray
    text: np.ndarray
    scene_text: np.ndarray

    def __len__(self) -> int:
        return len(self.image)


@dataclass(frozen=True)
class EvalSet:
    """Images and captions to rank: image rows, text rows, and each caption's image (0-based in ``image``)."""

    image: np.ndarray
    text: np.ndarray
    caption_image: np.ndarray


def scene_texts(split: RetrievalSplit) -> list[str]:
    """Each caption of ``split`` prefixed with its image's scene; captions of unlabelled images unchanged."""
    words = default_prompt_words()
    scenes = (split.scenes[i] for i in split.caption_image)
    return [SCENE_TEMPLATE.format(words.get(s, s), c) if s else c for c, s in zip(split.captions, scenes)]


@dataclass(frozen=True)
class PairTable:
    """Every image path and text of a run, each once, with the splits they came from."""

    paths: tuple[Path, ...]
    texts: tuple[str, ...]
    train: RetrievalSplit
    val: RetrievalSplit
    #: how many of ``paths``, in order, each source holds (the main data first, then each extra source), so
    #: feature caches are kept per source and a run that adds or drops one computes only that one's images
    parts: tuple[int, ...] = ()

    @classmethod
    def build(cls, train: RetrievalSplit, val: RetrievalSplit, extra: Sequence[RetrievalSplit] = ()) -> "PairTable":
        """The rows of ``train`` and ``val`` (the main data), then the ``extra`` sources' training images."""
        paths = list(dict.fromkeys([*train.images, *val.images]))
        seen, parts = set(paths), [len(paths)]
        for split in extra:
            new = [p for p in dict.fromkeys(split.images) if p not in seen]
            seen.update(new)
            paths += new
            parts.append(len(new))
        train = train.concat(*extra)
        texts = tuple(dict.fromkeys([*train.captions, *scene_texts(train), *val.captions]))
        return cls(tuple(paths), texts, train, val, tuple(parts))

    def part_paths(self) -> list[tuple[Path, ...]]:
        """``paths`` cut into :attr:`parts` (one part when the table was built without extra sources)."""
        bounds = np.cumsum([0, *(self.parts or (len(self.paths),))])
        return [self.paths[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def rows(self, split: RetrievalSplit) -> EvalSet:
        image_row = {p: i for i, p in enumerate(self.paths)}
        text_row = {t: i for i, t in enumerate(self.texts)}
        return EvalSet(np.array([image_row[p] for p in split.images]),
                       np.array([text_row[c] for c in split.captions]), np.asarray(split.caption_image))

    def pairs(self, distinct: bool = False) -> Pairs:
        """The train pairs; ``distinct``: each (image, caption) pair once, not an image's identical captions
        five times (half the RSICD images repeat one caption)."""
        rows = self.rows(self.train)
        text_row = {t: i for i, t in enumerate(self.texts)}
        pairs = Pairs(rows.image[rows.caption_image], rows.text,
                      np.array([text_row[t] for t in scene_texts(self.train)]))
        if not distinct:
            return pairs
        _, first = np.unique(np.stack([pairs.image, pairs.text]), axis=1, return_index=True)
        keep = np.sort(first)
        return Pairs(pairs.image[keep], pairs.text[keep], pairs.scene_text[keep])

    def fingerprint(self, what: str) -> str:
        """A short hash of the image paths (``what="images"``) or texts, in row order."""
        return self.fingerprint_of(self.paths if what == "images" else self.texts)

    @staticmethod
    def fingerprint_of(items: Sequence) -> str:
        return hashlib.sha1("\n".join(map(str, items)).encode()).hexdigest()[:16]
