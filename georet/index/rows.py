"""Embedded tiles → rows of the index table: one definition for every engine (local, Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from georet.geo import Tile
from georet.index.store import tile_schema


@dataclass(frozen=True)
class Labels:
    """How the Ray engine's actors label tiles: the driver's zero-shot labeler (picklable), or a land-cover
    layer each actor opens itself."""

    zero_shot: Any = None
    landcover: str | None = None
    landcover_field: str | None = None


def vector_matrix(rows: pa.Table) -> np.ndarray:
    """The ``vector`` column of index rows as one (rows, dim) float32 matrix ((0, 0) for no rows)."""
    if not len(rows):
        return np.zeros((0, 0), np.float32)
    return np.asarray(rows["vector"].combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(len(rows), -1)


def tile_rows(tiles: list[Tile], vectors: np.ndarray, labels, source_crs: str, dim: int,
              acquired: str | None = None) -> pa.Table:
    """Index rows (:func:`tile_schema`) for embedded, labelled tiles of one raster acquired on ``acquired``
    (an ISO date, or None when unknown): the same for every engine."""
    polys = [t.footprint for t in tiles]
    bounds = shapely.bounds(np.array(polys, dtype=object))
    return pa.table({
        "tile_id": [t.tile_id for t in tiles],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dim),
        "geometry": shapely.to_wkb(np.array(polys, dtype=object)).tolist(),
        "minx": bounds[:, 0], "miny": bounds[:, 1], "maxx": bounds[:, 2], "maxy": bounds[:, 3],
        "source": [t.source for t in tiles],
        "source_crs": [source_crs] * len(tiles),
        "col_off": [int(t.window.col_off) for t in tiles],
        "row_off": [int(t.window.row_off) for t in tiles],
        "width": [int(t.window.width) for t in tiles],
        "height": [int(t.window.height) for t in tiles],
        "scene": [lab.scene for lab in labels],
        "scene_score": [lab.score for lab in labels],
        "landcover_fractions": [lab.fractions_json() for lab in labels],
        "valid_fraction": [t.valid_fraction for t in tiles],
        "thumbnail": [t.thumbnail_png() for t in tiles],
        "acquired": [acquired] * len(tiles),
    }, schema=tile_schema(dim))
