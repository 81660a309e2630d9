"""Synthetic tile tables: index rows at any scale without embedding a pixel, and latency percentiles."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import shapely

from georet.index import tile_schema


def synthetic_rows(n: int, dim: int, scenes: list[str], seed: int = 0, vectors: np.ndarray | None = None,
                   first_id: int = 0, grid_side: int | None = None, acquired: str | None = None,
                   id_prefix: str = "tile") -> pa.Table:
    """n tiles on a 1°×1° area, random scenes; random unit vectors unless ``vectors`` are given.

    Tiles are ~0.01° at random places (overlapping at random), or, with ``grid_side``, the cells
    ``first_id…`` of a ``grid_side``² mosaic of 1/grid_side° tiles, as a tiled raster gives
    (each tile has eight neighbours). ``acquired`` dates every tile; ``id_prefix`` keeps the ids of two
    dates of one grid apart.
    """
    rng = np.random.default_rng(seed)
    if vectors is None:
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if grid_side:
        cell = np.arange(first_id, first_id + n)
        side = 1.0 / grid_side
        minx, miny = 4.0 + (cell % grid_side) * side, 51.0 + (cell // grid_side) * side
    else:
        side = 0.01
        minx, miny = rng.uniform(4.0, 5.0, n), rng.uniform(51.0, 52.0, n)
    boxes = shapely.box(minx, miny, minx + side, miny + side)
    return pa.table({
        "tile_id": [f"{id_prefix}-{i:07d}" for i in range(first_id, first_id + n)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "geometry": shapely.to_wkb(boxes).tolist(),
        "minx": minx, "miny": miny, "maxx": minx + side, "maxy": miny + side,
        "source": ["synthetic.tif"] * n, "source_crs": ["EPSG:4326"] * n,
        "col_off": np.zeros(n, np.int32), "row_off": np.zeros(n, np.int32),
        "width": np.full(n, 256, np.int32), "height": np.full(n, 256, np.int32),
        "scene": rng.choice(scenes, n), "scene_score": rng.uniform(0, 1, n).astype(np.float32),
        "landcover_fractions": [""] * n, "valid_fraction": np.ones(n, np.float32), "thumbnail": [b""] * n,
        "acquired": [acquired] * n,
    }, schema=tile_schema(dim))


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}
