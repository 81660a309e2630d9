"""Training images beyond one caption file: scene folders, land-cover masks and tiles a person labelled.

georet-base's heads first learnt from AID chips alone, and on a user's own
imagery it showed: Sentinel-2 sea was read as forest, and no caption ever said
"the sea", "a marsh" or "shrubland". These readers turn three other kinds of
real labelled imagery into image–caption pairs (captions written from the
class, in the wordings :data:`~georet.training.data.TILE_CAPTION_TEMPLATES`):

* ``scene_folders``: one folder per class (UC Merced); the place of an image is
  its scene group from ``manifest.csv`` where there is one (an augmented copy
  repeats scenes), else the file.
* ``landcover_masks``: images with a pixel mask per image (``images/`` +
  ``masks/``, the Dubai land-cover set); each image is cut into square crops
  captioned with the classes covering them. The place is the mosaic tile.
* ``labelled_tiles``: a CSV of raster tiles labelled by eye
  (``raster,col_off,row_off,label,also``, as ``experiments/real_tiles``
  writes), read with georet's own band stretch; the place is the raster.

Every source is split by place, never by image: ``hold_out`` names places kept
out of training (to validate on), ``hold_out_fraction`` holds out that share of
places by a stable hash of their names. :func:`read_source` gives either side.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from georet.errors import InputError, NotFoundError
from georet.training.data import TILE_CAPTION_TEMPLATES, RetrievalSplit

SourceKind = Literal["scene_folders", "landcover_masks", "labelled_tiles"]

#: the words a caption uses for each class label of the sources above (a label not listed is its own words)
CLASS_WORDS = {
    # UC Merced
    "agricultural": "farmland", "airplane": "airplanes at an airport", "buildings": "buildings",
    "chaparral": "shrubland", "freeway": "a freeway", "harbor": "a harbour with boats",
    "parkinglot": "a parking lot",
    # Dubai land cover
    "building": "buildings", "land": "bare land", "road": "roads", "vegetation": "vegetation", "water": "water",
    # labels of experiments/real_tiles
    "sea": "the sea", "lake": "a lake", "wetland": "a marsh", "island": "an island", "cloud": "clouds",
    "sparseresidential": "houses", "mediumresidential": "houses", "denseresidential": "a dense town",
    "unclear": "",
}
#: Dubai mask values → class (0 unlabelled and 6 unannotated are ignored)
MASK_CLASSES = {1: "building", 2: "land", 3: "road", 4: "vegetation", 5: "water"}
#: a class is named in a crop's caption when it covers at least this share of it
MASK_MIN_SHARE = 0.15


@dataclass(frozen=True)
class LabelledImage:
    """One training image: where it is, its classes (main first) and the place it comes from."""

    path: Path
    classes: tuple[str, ...]
    place: str


def captions_for(classes: tuple[str, ...]) -> list[str]:
    """Five captions naming the main class (and the others after it, "farmland and a lake")."""
    words = [w for w in (CLASS_WORDS.get(c, c) for c in classes) if w]
    if not words:
        return []
    named = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return [template.format(named) for template in TILE_CAPTION_TEMPLATES]


def held_out(place: str, hold_out: tuple[str, ...], fraction: float) -> bool:
    """Whether ``place`` is kept out of training: named, or in the ``fraction`` its stable hash draws."""
    if place in hold_out:
        return True
    draw = int(hashlib.sha1(place.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return draw < fraction


def scene_folders(root: Path) -> list[LabelledImage]:
    groups: dict[str, str] = {}
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with manifest.open() as f:
            groups = {row["file"]: row["group"] for row in csv.DictReader(f)}
    images = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png")) + sorted(folder.glob("*.tif")):
            relative = f"{folder.name}/{path.name}"
            images.append(LabelledImage(path, (folder.name,), groups.get(relative, relative)))
    return images


def landcover_masks(root: Path, out_dir: Path, crop_px: int = 300) -> list[LabelledImage]:
    """Square crops (``crop_px``, non-overlapping) of each image, written once under ``out_dir``."""
    images = []
    for image_path in sorted((root / "images").glob("*.jpg")):
        mask = np.asarray(Image.open(root / "masks" / f"{image_path.stem}.png"))
        place = image_path.stem.split("_part")[0]
        pixels = None
        for row in range(0, mask.shape[0] - crop_px + 1, crop_px):
            for col in range(0, mask.shape[1] - crop_px + 1, crop_px):
                window = mask[row:row + crop_px, col:col + crop_px]
                counts = np.bincount(window.ravel(), minlength=8)
                labelled = sum(counts[v] for v in MASK_CLASSES)
                if labelled < 0.8 * window.size:
                    continue
                shares = {name: counts[v] / labelled for v, name in MASK_CLASSES.items()}
                classes = tuple(n for n, s in sorted(shares.items(), key=lambda kv: -kv[1]) if s >= MASK_MIN_SHARE)
                path = out_dir / f"{image_path.stem}_{row}_{col}.png"
                if not path.is_file():
                    if pixels is None:
                        pixels = np.asarray(Image.open(image_path).convert("RGB"))
                    Image.fromarray(pixels[row:row + crop_px, col:col + crop_px]).save(path)
                images.append(LabelledImage(path, classes, place))
    return images


def labelled_tiles(table: Path, data_root: Path, out_dir: Path, tile_px: int = 150) -> list[LabelledImage]:
    """The tiles ``table`` labels, cut from their rasters as ``georet index`` reads them (band stretch, and
    R, G, B of a four-band raster), written once under ``out_dir``."""
    from georet.geo import RasterSource, TilingParams

    with table.open() as f:
        rows = list(csv.DictReader(f))
    by_raster: dict[str, dict[tuple[int, int], tuple[str, ...]]] = {}
    for row in rows:
        also = tuple(filter(None, row.get("also", "").split(";")))
        by_raster.setdefault(row["raster"], {})[(int(row["col_off"]), int(row["row_off"]))] = (row["label"], *also)
    images = []
    for raster, labels in by_raster.items():
        path = data_root / raster
        if not path.is_file():
            raise NotFoundError(f"{table}: raster not found: {path}")
        stem = raster.replace("/", "_").rsplit(".", 1)[0]
        wanted = {key: out_dir / f"{stem}_{key[0]}_{key[1]}.png" for key in labels}
        if not all(p.is_file() for p in wanted.values()):
            import rasterio

            with rasterio.open(path) as dataset:
                bands = (1, 2, 3) if dataset.count >= 3 else (1,)
            with RasterSource(path, TilingParams(tile_size=tile_px, stride=tile_px, bands=bands)) as source:
                for tile in source.iter_tiles():
                    key = (tile.window.col_off, tile.window.row_off)
                    if key in wanted:
                        Image.fromarray(tile.pixels).save(wanted[key])
        images += [LabelledImage(wanted[key], classes, raster) for key, classes in labels.items()]
    return images


@dataclass(frozen=True)
class SourceSpec:
    """One extra training source of a recipe (``data.extra``): what it is, where, and which places stay out."""

    kind: SourceKind
    path: str
    #: the folder the table's raster paths are relative to (labelled_tiles)
    root: str | None = None
    #: places kept out of training, by name (a raster, a mosaic tile, a scene group)
    hold_out: tuple[str, ...] = ()
    #: share of the other places kept out too, drawn by a stable hash of their names
    hold_out_fraction: float = 0.0
    #: captions per image (1-5 of the wordings): fewer keep template captions from outweighing real ones
    captions: int = 5


def read_source(spec: SourceSpec, work_dir: Path, side: Literal["train", "held_out"] = "train") -> RetrievalSplit:
    """The ``side`` of ``spec``'s images as image–caption pairs; crops and tiles are written to ``work_dir``."""
    if not Path(spec.path).expanduser().exists():
        raise NotFoundError(f"data.extra: {spec.kind} source not found: {spec.path}")
    if not 0.0 <= spec.hold_out_fraction < 1.0:
        raise InputError("hold_out_fraction", f"must be in [0, 1); got {spec.hold_out_fraction}")
    if not 1 <= spec.captions <= len(TILE_CAPTION_TEMPLATES):
        raise InputError("captions", f"must be 1 to {len(TILE_CAPTION_TEMPLATES)}; got {spec.captions}")
    images = source_places(spec, work_dir)
    keep = [im for im in images
            if held_out(im.place, spec.hold_out, spec.hold_out_fraction) == (side == "held_out")]
    paths, captions, owners, scenes = [], [], [], []
    for image in keep:
        texts = captions_for(image.classes)
        start = len(paths) % len(texts) if texts else 0  # the wordings taken turn about from image to image
        texts = (texts[start:] + texts[:start])[:spec.captions]
        if not texts:
            continue
        captions += texts
        owners += [len(paths)] * len(texts)
        paths.append(image.path)
        scenes.append(CLASS_WORDS.get(image.classes[0], image.classes[0]))
    return RetrievalSplit(paths, captions, np.array(owners, dtype=np.int64), scenes)


def source_places(spec: SourceSpec, work_dir: Path) -> list[LabelledImage]:
    """Every image of ``spec`` with its classes and place, both sides (for studies that split further)."""
    path = Path(spec.path).expanduser()
    out_dir = work_dir / f"{spec.kind}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind == "scene_folders":
        return scene_folders(path)
    if spec.kind == "landcover_masks":
        return landcover_masks(path, out_dir)
    return labelled_tiles(path, Path(spec.root).expanduser() if spec.root else path.parent, out_dir)
