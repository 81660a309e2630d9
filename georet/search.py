"""Text → ranked tiles as a GeoDataFrame: the query side of georet.

Spatial filters run in two steps because LanceDB has no geometry predicates:
a prefilter on the ``minx/miny/maxx/maxy`` columns inside the vector search,
then an exact shapely intersection test on the footprints. If the exact test
removes candidates, the search is widened until ``k`` hits are found or the
candidates run out.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from georet.errors import GeoretError
from georet.model import EmbeddingModel, ModelSpec, load_model
from georet.relations import SCENE_PRIOR_WEIGHT, TileGeometry, parse_distance, parse_query, relational_search
from georet.store import TileStore, describe_mismatch, sql_string

RESULT_COLUMNS = ["rank", "score", "tile_id", "scene", "scene_score", "source", "source_crs",
                  "col_off", "row_off", "width", "height", "valid_fraction"]
_FETCH_COLUMNS = [c for c in RESULT_COLUMNS if c not in ("rank", "score")] + ["geometry", "_distance"]
_WIDEN_FACTOR = 4


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"minx,miny,maxx,maxy"`` (or a 4-sequence) → floats, checked for order."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise GeoretError(f"--bbox must be minx,miny,maxx,maxy numbers; got {text!r}") from None
    if len(values) != 4 or not all(np.isfinite(values)):
        raise GeoretError(f"--bbox must be four numbers minx,miny,maxx,maxy; got {text!r}")
    minx, miny, maxx, maxy = values
    if minx >= maxx or miny >= maxy:
        raise GeoretError(f"--bbox must have minx < maxx and miny < maxy; got {text!r}")
    return minx, miny, maxx, maxy


def _crs(value: str) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError:
        raise GeoretError(f"not a CRS: {value!r} (use e.g. EPSG:3857)") from None


def search_area(bbox: str | Sequence[float] | None = None, bbox_crs: str = "EPSG:4326",
                within: str | Path | BaseGeometry | gpd.GeoDataFrame | None = None) -> BaseGeometry | None:
    """The area to search in, as one EPSG:4326 geometry (None = everywhere)."""
    areas: list[BaseGeometry] = []
    if bbox is not None:
        box = shapely.box(*parse_bbox(bbox))
        crs = _crs(bbox_crs)
        if crs.is_geographic:
            minx, miny, maxx, maxy = box.bounds
            if not (-180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90):
                raise GeoretError(f"--bbox {bbox!r} is outside lon/lat range; for projected coordinates pass --bbox-crs")
        areas.append(_to_lonlat(box, crs))
    if within is not None:
        areas.append(_read_area(within))
    if not areas:
        return None
    return shapely.intersection_all(areas) if len(areas) > 1 else areas[0]


def _to_lonlat(geom: BaseGeometry, crs: pyproj.CRS) -> BaseGeometry:
    lonlat = pyproj.CRS.from_epsg(4326)
    if crs == lonlat:
        return geom
    transformer = pyproj.Transformer.from_crs(crs, lonlat, always_xy=True)
    minx, miny, maxx, maxy = geom.bounds
    dense = shapely.segmentize(geom, max(maxx - minx, maxy - miny) / 16)
    return shapely.transform(dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _read_area(within) -> BaseGeometry:
    if isinstance(within, BaseGeometry):
        return within
    if isinstance(within, gpd.GeoDataFrame):
        frame = within
    else:
        path = Path(within).expanduser()
        if not path.exists():
            raise GeoretError(f"--within: no such file: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = gpd.read_file(path)
        except Exception:
            raise GeoretError(f"--within: {path} is not a readable vector file") from None
    if frame.crs is None:
        raise GeoretError("--within: the vector layer has no CRS")
    if frame.empty:
        raise GeoretError("--within: the vector layer has no features")
    return shapely.make_valid(frame.to_crs(4326).geometry.union_all())


@dataclass
class TileCatalog:
    """All vectors and footprints of an index in memory, for relational scoring."""

    version: int
    tile_ids: list[str]
    position: dict[str, int]
    vectors: np.ndarray  # (n, dim) float32, unit length
    bounds: np.ndarray  # (n, 4) minx, miny, maxx, maxy in EPSG:4326
    scenes: np.ndarray
    geometry: TileGeometry


class GeoIndex:
    """A georet index opened for searching. Get one with :func:`open_index`."""

    def __init__(self, store: TileStore, device: str = "auto", pretrained: str | None = None,
                 checkpoint: str | None = None, model: EmbeddingModel | None = None):
        self.store = store
        self._device = device
        self._overrides = {"pretrained": pretrained, "checkpoint": checkpoint}
        self._model = model
        self._catalog: TileCatalog | None = None
        if model is not None:
            self._check_model(model)

    @property
    def path(self) -> Path:
        return self.store.path

    def __len__(self) -> int:
        return self.store.count()

    def __repr__(self) -> str:
        return f"GeoIndex({str(self.path)!r}, tiles={len(self)})"

    @property
    def model(self) -> EmbeddingModel:
        """The model the index was built with, loaded on first use."""
        if self._model is None:
            spec = dict(self.store.model_spec)
            spec.update({k: v for k, v in self._overrides.items() if v})
            for key in ("pretrained", "checkpoint"):
                value = spec.get(key)
                if value and Path(value).suffix and not Path(value).is_file():
                    raise GeoretError(f"this index was built with {key} file {value}, which is gone; "
                                      f"pass its new location (--{key} FILE)")
            model = load_model(ModelSpec(**spec), device=self._device)
            self._check_model(model)
            self._model = model
        return self._model

    def _check_model(self, model: EmbeddingModel) -> None:
        problem = describe_mismatch(self.store.model_identity, model.identity)
        if problem:
            raise GeoretError(f"cannot query {self.path}: {problem}")

    def info(self) -> dict[str, Any]:
        """Summary of the index: tile count, model, sources, scenes."""
        manifest = self.store.manifest
        return {
            "path": str(self.path),
            "tiles": self.store.count(),
            "model": {**manifest["model"]["spec"], **manifest["model"]["identity"]},
            "sources": manifest["sources"],
            "scenes": self.store.scenes(),
            "created": manifest.get("created"),
            "updated": manifest.get("updated"),
        }

    def search(self, text: str, k: int = 10, bbox: str | Sequence[float] | None = None,
               bbox_crs: str = "EPSG:4326", within=None, scene: str | None = None,
               relational: bool = True, near: str | float | None = None,
               scene_prior: float | None = None) -> gpd.GeoDataFrame:
        """Tiles ranked by similarity to ``text``, optionally inside an area and of one scene class.

        Returns a GeoDataFrame in EPSG:4326 with columns :data:`RESULT_COLUMNS` + geometry;
        ``score`` is the cosine similarity between the query and the tile. A
        relational query ("airport near river", see :mod:`georet.relations`) is
        scored on the footprints instead, unless ``relational=False``; its hits
        also carry their partner tiles and distances. ``near`` ("500m", or
        metres) overrides the default "near" distance (half a tile side: the neighbouring tiles);
        ``scene_prior`` the weight of the scene prior on its phrases (default 1, 0 = off).
        """
        text = (text or "").strip()
        if not text:
            raise GeoretError("the query text is empty")
        if k < 1:
            raise GeoretError(f"-k must be at least 1, got {k}")
        near_m = parse_distance(near) if isinstance(near, str) else near
        area = search_area(bbox, bbox_crs, within)
        relation = parse_query(text) if relational else None
        if relation is not None:
            if scene is not None:
                self._check_scene(scene)
            if area is not None and area.is_empty:
                return self.frame([])
            return relational_search(self, relation, k, near_m, area, scene,
                                     prior_weight=SCENE_PRIOR_WEIGHT if scene_prior is None else scene_prior)
        clauses = []
        if scene is not None:
            clauses.append(f"scene = {sql_string(scene)}")
        if area is not None:
            if area.is_empty:
                return self.frame([])
            minx, miny, maxx, maxy = area.bounds
            clauses.append(f"maxx >= {minx!r} AND minx <= {maxx!r} AND maxy >= {miny!r} AND miny <= {maxy!r}")
        where = " AND ".join(clauses) or None
        query = self.model.encode_text([text])[0]

        limit = k
        while True:
            search = self.store.table.search(query).distance_type("cosine").limit(limit).select(_FETCH_COLUMNS)
            if where:
                search = search.where(where, prefilter=True)
            hits = search.to_arrow().to_pylist()
            if area is not None:
                geoms = shapely.from_wkb([h["geometry"] for h in hits])
                keep = shapely.intersects(geoms, area) if hits else []
                kept = [h for h, ok in zip(hits, keep) if ok]
            else:
                kept = hits
            if len(kept) >= k or len(hits) < limit:
                break
            limit *= _WIDEN_FACTOR
        if not kept and scene is not None:  # checked only here: listing scenes reads a whole column
            self._check_scene(scene)
        return self.frame([{**h, "score": 1.0 - h["_distance"]} for h in kept[:k]])

    def _check_scene(self, scene: str) -> None:
        known = self.store.scenes()
        if scene not in known:
            raise GeoretError(f"unknown scene {scene!r}; known scenes: {', '.join(known) or 'none'}")

    @staticmethod
    def frame(hits: list[dict], extra_columns: Sequence[str] = ()) -> gpd.GeoDataFrame:
        """Ranked rows (store columns + ``score``, best first) → the result GeoDataFrame."""
        columns = [*RESULT_COLUMNS, *extra_columns]
        records = [{**{c: h.get(c) for c in columns}, "rank": i + 1, "score": float(h["score"])}
                   for i, h in enumerate(hits)]
        geometry = shapely.from_wkb([h["geometry"] for h in hits]) if hits else []
        return gpd.GeoDataFrame(records, columns=columns, geometry=geometry, crs="EPSG:4326")

    def catalog(self) -> TileCatalog:
        """Vectors and footprints of every tile, read once and cached until the table changes."""
        version = self.store.table.version
        if self._catalog is None or self._catalog.version != version:
            table = self.store.table.to_lance().to_table(
                columns=["tile_id", "vector", "minx", "miny", "maxx", "maxy", "scene"])
            ids = table["tile_id"].to_pylist()
            vectors = table["vector"].combine_chunks()
            bounds = np.column_stack([table[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy")])
            self._catalog = TileCatalog(
                version, ids, {t: i for i, t in enumerate(ids)},
                np.asarray(vectors.flatten().to_numpy(), dtype=np.float32).reshape(len(ids), -1),
                bounds, np.asarray(table["scene"].to_pylist(), dtype=object), TileGeometry(*bounds.T))
        return self._catalog

    def fetch_rows(self, tile_ids: Sequence[str]) -> list[dict]:
        """Stored rows (result columns + footprint WKB) of some tiles."""
        if not tile_ids:
            return []
        where = "tile_id IN (" + ", ".join(sql_string(t) for t in dict.fromkeys(tile_ids)) + ")"
        return self.store.table.search().where(where).select(_FETCH_COLUMNS[:-1]).limit(len(tile_ids)).to_arrow().to_pylist()

    def thumbnail(self, tile_id: str):
        """The stored thumbnail of one tile as a PIL image."""
        from PIL import Image

        rows = self.store.column("thumbnail", f"tile_id = {sql_string(tile_id)}").to_pylist()
        if not rows:
            raise GeoretError(f"no tile {tile_id!r} in {self.path}")
        return Image.open(io.BytesIO(rows[0]))


def open_index(path: str | Path, *, device: str = "auto", pretrained: str | None = None,
               checkpoint: str | None = None, model: EmbeddingModel | None = None) -> GeoIndex:
    """Open the georet index at ``path`` for searching.

    The index remembers its model; ``pretrained``/``checkpoint`` only say where
    its weight files are now if they moved (their hashes must still match).
    """
    return GeoIndex(TileStore.open(path), device=device, pretrained=pretrained, checkpoint=checkpoint, model=model)
