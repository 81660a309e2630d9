"""Text → ranked tiles as a GeoDataFrame: the query side of georet.

Spatial filters run in two steps because LanceDB has no geometry predicates:
a prefilter on the ``minx/miny/maxx/maxy`` columns inside the vector search,
then an exact shapely intersection test on the footprints. If the exact test
removes candidates, the search is widened until ``k`` hits are found or the
candidates run out.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import geopandas as gpd
import numpy as np
import shapely

from georet.errors import GeoretError
from georet.geo import ZeroShotScenes
from georet.index import TileStore, describe_mismatch, sql_string
from georet.models import EmbeddingModel, ModelSpec, load_model
from georet.search.areas import search_area
from georet.search.catalog import TileCatalog
from georet.search.relations import (RELATION_COLUMNS, SCENE_PRIOR_WEIGHT, Relation, parse_distance, parse_query,
                                     rank_relational, scene_prior_boost)
from georet.search.results import ROW_COLUMNS, to_frame

_WIDEN_FACTOR = 4


class GeoIndex:
    """A georet index opened for searching. Get one with :func:`open_index`."""

    def __init__(self, store: TileStore, device: str = "auto", pretrained: str | None = None,
                 checkpoint: str | None = None, model: EmbeddingModel | None = None):
        self.store = store
        self._device = device
        self._overrides = {"pretrained": pretrained, "checkpoint": checkpoint}
        self._model = model
        self._catalog: TileCatalog | None = None
        self._zero_shot: dict[tuple[str, ...], ZeroShotScenes] = {}
        if model is not None:
            self._check_model(model)

    @property
    def path(self) -> Path:
        return self.store.path

    def __len__(self) -> int:
        self.store.refresh()
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
        self.store.refresh()
        manifest = self.store.manifest
        return {
            "path": str(self.path),
            "tiles": self.store.count(),
            "model": {**manifest["model"]["spec"], **manifest["model"]["identity"]},
            "sources": self.store.sources(),
            "scenes": self.store.scenes(),
            "created": manifest.get("created"),
            "updated": manifest.get("updated"),
        }

    def search(self, text: str, k: int = 10, bbox: str | Sequence[float] | None = None,
               bbox_crs: str | None = None, within=None, scene: str | None = None,
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
        self.store.refresh()  # rows other processes added since this index was opened
        if k < 1:
            raise GeoretError(f"-k must be at least 1, got {k}")
        near_m = parse_distance(near) if isinstance(near, str) else near
        area = search_area(bbox, bbox_crs, within)
        relation = parse_query(text) if relational else None
        if relation is not None:
            if scene is not None:
                self._check_scene(scene)
            return self._relational_search(relation, k, near_m, area, scene,
                                           SCENE_PRIOR_WEIGHT if scene_prior is None else scene_prior)
        clauses = []
        if scene is not None:
            clauses.append(f"scene = {sql_string(scene)}")
        if area is not None:
            if area.is_empty:
                return to_frame([])
            minx, miny, maxx, maxy = area.bounds
            clauses.append(f"maxx >= {minx!r} AND minx <= {maxx!r} AND maxy >= {miny!r} AND miny <= {maxy!r}")
        where = " AND ".join(clauses) or None
        query = self.model.encode_text([text])[0]

        limit = k
        while True:
            search = self.store.table.search(query).distance_type("cosine").limit(limit).select(
                [*ROW_COLUMNS, "_distance"])
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
        return to_frame([{**h, "score": 1.0 - h["_distance"]} for h in kept[:k]])

    def _check_scene(self, scene: str) -> None:
        known = self.store.scenes()
        if scene not in known:
            raise GeoretError(f"unknown scene {scene!r}; known scenes: {', '.join(known) or 'none'}")

    def _relational_search(self, relation: Relation, k: int, near_m: float | None, area, scene: str | None,
                           prior_weight: float) -> gpd.GeoDataFrame:
        """Top ``k`` subject tiles for ``relation``: encode the phrases, rank on the catalog, fetch the rows.

        ``area`` and ``scene`` restrict the subject tiles; partners may lie anywhere.
        """
        def result(hits: list[dict], used_near_m: float) -> gpd.GeoDataFrame:
            frame = to_frame(hits, extra_columns=RELATION_COLUMNS)
            frame.attrs.update({"relation": relation.describe(), "near_m": used_near_m, "scene_prior": prior_weight})
            return frame

        catalog = self.catalog()
        if len(catalog) == 0 or (area is not None and area.is_empty):
            return result([], near_m or 0.0)
        phrases = self.model.encode_text([relation.subject, relation.partner, relation.text])
        boost = prior_weight * self._scene_prior(phrases[:2], catalog) if prior_weight else None
        eligible = np.ones(len(catalog), dtype=bool)
        if scene is not None:
            eligible &= catalog.scenes == scene
        if area is not None:
            minx, miny, maxx, maxy = area.bounds
            b = catalog.bounds
            eligible &= (b[:, 2] >= minx) & (b[:, 0] <= maxx) & (b[:, 3] >= miny) & (b[:, 1] <= maxy)
        ranking = rank_relational(relation, catalog, phrases, k, near_m, eligible, boost)

        wanted = [*ranking.tiles.tolist(), *(int(p[0]) for p in ranking.partners[: 4 * k] if len(p))]
        rows = {r["tile_id"]: r for r in self.fetch_rows([catalog.tile_ids[t] for t in wanted])}
        hits = []
        for i, tile in enumerate(ranking.tiles):
            row = rows[catalog.tile_ids[tile]]
            if area is not None and not shapely.intersects(shapely.from_wkb(row["geometry"]), area):
                continue
            partners = ranking.partners[i]
            partner_row = rows.get(catalog.tile_ids[partners[0]]) if len(partners) else None
            hits.append({**row, "score": float(ranking.scores[i]), "relation": relation.kind,
                         "subject_score": round(float(ranking.subject_z[i]), 4),
                         "partner_score": round(float(ranking.partner_z[i]), 4) if len(partners) else None,
                         "whole_score": round(float(ranking.whole_z[i]), 4),
                         "partners": ",".join(catalog.tile_ids[u] for u in partners),
                         "partner_distance_m": round(float(ranking.partner_gap_m[i]), 1) if len(partners) else None,
                         "partner_wkt": shapely.from_wkb(partner_row["geometry"]).wkt if partner_row else None})
            if len(hits) == k:
                break
        return result(hits, ranking.near_m)

    def _scene_prior(self, phrases: np.ndarray, catalog: TileCatalog) -> np.ndarray:
        """(phrases, tiles) scene prior over the index's scene labels; zero when fewer than two labels exist."""
        classes = catalog.scene_classes
        if len(classes) < 2:
            return np.zeros((len(phrases), len(catalog)))
        key = tuple(c.label for c in classes)
        if key not in self._zero_shot:  # class prompts are encoded once per model and label set
            self._zero_shot[key] = ZeroShotScenes(self.model, classes)
        return scene_prior_boost(self._zero_shot[key].probabilities(phrases), catalog.scene_codes)

    def catalog(self) -> TileCatalog:
        """Vectors and footprints of every tile, read once and cached until the table changes."""
        if self._catalog is None or self._catalog.version != self.store.table.version:
            self._catalog = TileCatalog.read(self.store)
        return self._catalog

    def fetch_rows(self, tile_ids: Sequence[str]) -> list[dict]:
        """Stored rows (result columns + footprint WKB) of some tiles."""
        if not tile_ids:
            return []
        where = "tile_id IN (" + ", ".join(sql_string(t) for t in dict.fromkeys(tile_ids)) + ")"
        return self.store.table.search().where(where).select(ROW_COLUMNS).limit(len(tile_ids)).to_arrow().to_pylist()

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
