"""Image–caption data for training and evaluation.

Three sources, one shape (:class:`RetrievalSplit`):

* Karpathy-style JSON (RSICD/RSITMD/UCM releases, ``rsicd_aid``): ``images[*]``
  with ``filename``, ``split``, ``sentences[*].raw`` and optionally ``scene``.
* GaLR/AMFMN "precomp" folders: ``{split}_caps.txt`` (5 lines per image) and
  ``{split}_filename.txt`` (one line per image, or repeated per caption).
* Tiled scenes: a georeferenced raster plus a land-cover layer → tiles saved as
  PNG with template captions naming their majority class, so a GIS user can
  adapt a model to their own region (:func:`tiled_scenes`).

Scene labels: the ``scene`` field when present, else the file-name prefix
(``airport_12.jpg`` → ``airport``). Images without one (RSICD's numbered
``00001.jpg``…) get ``None``: they train and evaluate normally but are never
scene-augmented, and their scene in the gallery is predicted zero-shot when a
scene prior needs it.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from georet.errors import GeoretError, NotFoundError
from georet.geo import RasterSource, TilingParams, open_landcover

SCENE_TEMPLATE = "an aerial image of {}. {}"
TILE_CAPTION_TEMPLATES = ("an aerial image of {}.", "a satellite view of {}.", "{} seen from above.",
                          "a remote sensing image showing {}.", "an overhead photo of {}.")
_SCENE_PREFIX = re.compile(r"^([A-Za-z][A-Za-z\- ]*?)_?\d+$")


def scene_from_filename(name: str) -> str | None:
    match = _SCENE_PREFIX.match(Path(name).stem)
    return match.group(1).lower() if match else None


@dataclass
class RetrievalSplit:
    images: list[Path]
    captions: list[str]
    caption_image: np.ndarray  # image index of each caption
    scenes: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        if not self.scenes:
            self.scenes = [scene_from_filename(p.name) for p in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, image_indices) -> "RetrievalSplit":
        image_indices = [int(i) for i in image_indices]
        remap = {old: new for new, old in enumerate(image_indices)}
        keep = [j for j, i in enumerate(self.caption_image) if int(i) in remap]
        return RetrievalSplit([self.images[i] for i in image_indices], [self.captions[j] for j in keep],
                              np.array([remap[int(self.caption_image[j])] for j in keep]),
                              [self.scenes[i] for i in image_indices])

    def concat(self, *others: "RetrievalSplit") -> "RetrievalSplit":
        """This split followed by ``others`` (their captions' image indices shifted after this one's)."""
        images, captions, owners, scenes = list(self.images), list(self.captions), [self.caption_image], list(self.scenes)
        for other in others:
            owners.append(other.caption_image + len(images))
            images += other.images
            captions += other.captions
            scenes += other.scenes
        return RetrievalSplit(images, captions, np.concatenate(owners), scenes)

    def where_scene(self, allowed: set[str]) -> "RetrievalSplit":
        return self.subset([i for i, s in enumerate(self.scenes) if s in allowed])

    def split_validation(self, fraction: float, seed: int, min_distinct_captions: int = 1
                         ) -> tuple["RetrievalSplit", "RetrievalSplit"]:
        """Random image-level train/val split (GaLR/HVSA protocol).

        ``min_distinct_captions`` > 1 draws the validation images only among
        those with at least that many different captions. RSICD's test split
        (AMFMN) is almost only such images (99.8 % on rsicd_aid, and 10 % of its
        captions occur in train), while half the train images carry 5
        identical captions: a validation set drawn from all of them (42 % of
        its captions occur in train) rewards memorised captions and ranks
        models unlike the test does (docs/research/georet-base-selection.md).
        """
        n_val = max(1, int(round(fraction * len(self.images)))) if fraction > 0 else 0
        if min_distinct_captions <= 1:
            order = np.random.default_rng(seed).permutation(len(self.images))
            return self.subset(sorted(order[n_val:])), self.subset(sorted(order[:n_val]))
        captions: list[set[str]] = [set() for _ in self.images]
        for image, caption in zip(self.caption_image.tolist(), self.captions):
            captions[image].add(caption)
        eligible = np.flatnonzero([len(c) >= min_distinct_captions for c in captions])
        if len(eligible) < n_val:
            raise GeoretError(f"only {len(eligible)} images have {min_distinct_captions} distinct captions; "
                              f"validation needs {n_val}")
        val = set(np.random.default_rng(seed).permutation(eligible)[:n_val].tolist())
        return self.subset([i for i in range(len(self.images)) if i not in val]), self.subset(sorted(val))


def load_karpathy(path: Path, split: str, image_root: Path | None = None) -> RetrievalSplit:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise GeoretError(f"{path}: not a readable Karpathy-style JSON file") from None
    root = image_root or path.parent / "images"
    splits = {split, "restval"} if split == "train" else {split}
    images, captions, owners, scenes = [], [], [], []
    for record in data.get("images", []):
        if record.get("split") not in splits:
            continue
        index = len(images)
        images.append(root / record.get("filepath", "") / record["filename"])
        scenes.append(record.get("scene") or scene_from_filename(record["filename"]))
        for sentence in record["sentences"]:
            captions.append(sentence["raw"].strip())
            owners.append(index)
    if not images:
        raise GeoretError(f"{path}: no images in split {split!r}")
    return RetrievalSplit(images, captions, np.array(owners), scenes)


def load_precomp(folder: Path, split: str, image_root: Path | None = None) -> RetrievalSplit:
    caps_file, names_file = folder / f"{split}_caps.txt", folder / f"{split}_filename.txt"
    if not caps_file.is_file() or not names_file.is_file():
        raise GeoretError(f"{folder}: no {caps_file.name} / {names_file.name}")
    captions = [c.strip() for c in caps_file.read_text(encoding="utf-8").splitlines() if c.strip()]
    names = [n.strip() for n in names_file.read_text(encoding="utf-8").splitlines() if n.strip()]
    if len(names) == len(captions):  # test files repeat the image name per caption
        names = names[::5]
    per_image = len(captions) // len(names)
    if per_image * len(names) != len(captions):
        raise GeoretError(f"{folder}: {len(captions)} captions do not divide over {len(names)} images")
    root = image_root or folder / "images"
    return RetrievalSplit([root / n for n in names], captions, np.repeat(np.arange(len(names)), per_image))


def load_retrieval_data(path: str | Path, split: str, image_root: str | Path | None = None) -> RetrievalSplit:
    """Karpathy JSON file or precomp folder → :class:`RetrievalSplit`."""
    path = Path(path).expanduser()
    root = Path(image_root).expanduser() if image_root else None
    if path.is_file() and path.suffix == ".json":
        data = load_karpathy(path, split, root)
    elif path.is_dir():
        data = load_precomp(path, split, root)
    else:
        raise NotFoundError(f"no dataset at {path} (a Karpathy-style .json file or a precomp folder)")
    missing = [p for p in data.images[:50] if not p.is_file()]
    if missing:
        raise NotFoundError(f"image not found: {missing[0]} (pass the image folder with {{image_root}})", names=("image_root",))
    return data


def tiled_scenes(raster: str | Path, landcover: str | Path, out_dir: str | Path, tile_size: int | str = 128,
                 landcover_field: str | None = None, min_fraction: float = 0.5) -> RetrievalSplit:
    """Cut ``raster`` into tiles labelled by ``landcover``; captions are templates naming the class.

    Tiles whose majority class covers less than ``min_fraction`` are left out
    (mixed tiles make poor training pairs).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, captions, owners, scenes = [], [], [], []
    with RasterSource(Path(raster).resolve(), TilingParams(tile_size=tile_size)) as source, \
            contextlib.closing(open_landcover(landcover, landcover_field, source.dataset, source.crs)) as labeler:
        for tile in source.iter_tiles():
            (label,) = labeler.label([tile], np.zeros((1, 1)))
            if not label.scene or label.score < min_fraction or tile.valid_fraction < 0.5:
                continue
            path = out_dir / f"{label.scene.replace(' ', '')}_{len(images)}.png"
            Image.fromarray(tile.pixels).save(path)
            for template in TILE_CAPTION_TEMPLATES:
                captions.append(template.format(label.scene))
                owners.append(len(images))
            images.append(path)
            scenes.append(label.scene)
    if not images:
        raise GeoretError(f"no tile of {raster} has a land-cover class covering ≥{min_fraction:.0%}")
    return RetrievalSplit(images, captions, np.array(owners), scenes)


def load_image(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def same_size(pixels: list[np.ndarray]) -> list[np.ndarray]:
    """Images of one batch at one size, the batch's most common (a few UC Merced scenes keep odd sizes, and
    a batch is stacked into one array)."""
    shapes = [p.shape[:2] for p in pixels]
    height, width = max(set(shapes), key=shapes.count)
    return [p if p.shape[:2] == (height, width) else
            np.asarray(Image.fromarray(p).resize((width, height), Image.BICUBIC)) for p in pixels]
