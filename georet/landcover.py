"""Land cover per tile: a scene class and a confidence for every tile.

Two sources, one interface (:class:`SceneLabeler`):

* :class:`ZeroShotScenes` — compares each tile embedding with text prompts for
  a class vocabulary (default: the 30 scene classes of RSICD/AID shipped in
  ``georet/data/scene_classes.txt``); ``scene_score`` is the softmax probability.
* :class:`VectorLandcover` / :class:`RasterLandcover` — the user's own land-cover
  layer; ``scene`` is the class covering most of the tile, ``scene_score`` its
  area fraction, and all class fractions are kept.

Class files hold one class per line, ``label`` or ``label: prompt words``
(``denseresidential: dense residential area``); ``#`` starts a comment.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from georet.errors import GeoretError

DEFAULT_CLASSES_FILE = Path(__file__).parent / "data" / "scene_classes.txt"
PROMPT_TEMPLATE = "an aerial image of {}"


@dataclass(frozen=True)
class SceneClass:
    label: str
    prompt_words: str


@dataclass(frozen=True)
class SceneLabel:
    scene: str
    score: float
    fractions: dict[str, float] | None = None

    def fractions_json(self) -> str:
        return json.dumps(self.fractions, sort_keys=True) if self.fractions else ""


def read_classes(path: str | Path | None = None) -> list[SceneClass]:
    """Parse a class vocabulary file (default: the shipped 30 scene classes)."""
    path = Path(path) if path else DEFAULT_CLASSES_FILE
    if not path.is_file():
        raise GeoretError(f"classes file not found: {path}")
    classes: list[SceneClass] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        label, _, words = line.partition(":")
        classes.append(SceneClass(label.strip(), words.strip() or label.strip()))
    labels = [c.label for c in classes]
    if len(labels) < 2:
        raise GeoretError(f"{path}: a class vocabulary needs at least two classes")
    if len(set(labels)) != len(labels):
        raise GeoretError(f"{path}: duplicate class labels")
    return classes


class SceneLabeler(Protocol):
    """Anything that labels a batch of tiles."""

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]: ...


class ZeroShotScenes:
    """Scene = the class whose prompt embedding is closest to the tile embedding."""

    def __init__(self, model, classes: list[SceneClass]):
        self.labels = [c.label for c in classes]
        self.text_vectors = model.encode_text([PROMPT_TEMPLATE.format(c.prompt_words) for c in classes])
        self.logit_scale = model.logit_scale

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = self.logit_scale * vectors @ self.text_vectors.T
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        probs = self.probabilities(vectors)
        best = probs.argmax(axis=1)
        return [SceneLabel(self.labels[i], float(probs[n, i])) for n, i in enumerate(best)]


def _majority(fractions: dict[str, float]) -> SceneLabel:
    if not fractions:
        return SceneLabel("", 0.0, {})
    scene = max(fractions, key=fractions.get)
    return SceneLabel(scene, fractions[scene], fractions)


class VectorLandcover:
    """Polygons with a class field, reprojected once to the raster's CRS and indexed with an STRtree."""

    def __init__(self, path: str | Path, field: str | None, raster_crs, raster_bounds):
        import geopandas as gpd
        import shapely

        path = Path(path)
        if not path.exists():
            raise GeoretError(f"land-cover file not found: {path}")
        area = gpd.GeoSeries([shapely.box(*raster_bounds)], crs=raster_crs.to_wkt())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = gpd.read_file(path, bbox=area)
        except Exception as exc:
            raise GeoretError(f"{path}: not a readable vector file ({str(exc).splitlines()[0]})") from None
        if frame.crs is None:
            raise GeoretError(f"{path}: land-cover layer has no CRS")
        field = field or _guess_class_field(frame, path)
        if field not in frame.columns:
            raise GeoretError(f"{path}: no field {field!r}; fields are {', '.join(c for c in frame.columns if c != 'geometry')}")
        frame = frame.to_crs(raster_crs.to_wkt())
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        self.geometries = shapely.make_valid(frame.geometry.values)
        self.classes = frame[field].astype(str).to_numpy()
        self.tree = shapely.STRtree(self.geometries)

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        import shapely

        out = []
        for tile in tiles:
            tile_area = tile.footprint_src.area
            hits = self.tree.query(tile.footprint_src, predicate="intersects")
            fractions: dict[str, float] = {}
            if hits.size:
                areas = shapely.area(shapely.intersection(self.geometries[hits], tile.footprint_src))
                for cls, area in zip(self.classes[hits], areas):
                    fractions[cls] = fractions.get(cls, 0.0) + float(area) / tile_area
            out.append(_majority({k: round(min(v, 1.0), 4) for k, v in fractions.items() if v > 0}))
        return out


def _guess_class_field(frame, path: Path) -> str:
    candidates = [c for c in frame.columns if c != "geometry" and frame[c].dtype == object]
    if len(candidates) == 1:
        return candidates[0]
    raise GeoretError(f"{path}: name the class field with --landcover-field (text fields: {', '.join(candidates) or 'none'})")


class RasterLandcover:
    """A classified raster, warped on the fly onto the tiled raster's pixel grid (nearest neighbour)."""

    def __init__(self, path: str | Path, raster_dataset, raster_crs):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        path = Path(path)
        try:
            self._src = rasterio.open(path)
        except Exception:
            raise GeoretError(f"{path}: not a readable land-cover raster") from None
        if self._src.crs is None:
            self._src.close()
            raise GeoretError(f"{path}: land-cover raster has no CRS")
        self._nodata = self._src.nodata
        self._vrt = WarpedVRT(self._src, crs=raster_crs, transform=raster_dataset.transform,
                              width=raster_dataset.width, height=raster_dataset.height,
                              resampling=Resampling.nearest, nodata=self._nodata)

    def close(self) -> None:
        self._vrt.close()
        self._src.close()

    def label(self, tiles: list, vectors: np.ndarray) -> list[SceneLabel]:
        out = []
        for tile in tiles:
            values = self._vrt.read(1, window=tile.window)
            total = float(values.size)
            if self._nodata is not None:
                values = values[values != self._nodata]
            classes, counts = np.unique(values, return_counts=True)
            fractions = {_class_name(c): round(float(n) / total, 4) for c, n in zip(classes, counts)}
            out.append(_majority(fractions))
        return out


def _class_name(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
