"""Search results: the columns every shell shows and the GeoDataFrame they come in."""

from __future__ import annotations

import json
from typing import Any, Sequence

import geopandas as gpd
import numpy as np
import shapely

#: Columns of every result, in order (plus ``geometry``); relational results add ``RELATION_COLUMNS``.
RESULT_COLUMNS = ["rank", "score", "tile_id", "acquired", "scene", "scene_score", "source", "source_crs",
                  "col_off", "row_off", "width", "height", "valid_fraction"]
#: Columns of dissolved results (touching hits merged), plus ``geometry``.
REGION_COLUMNS = ["region", "best_score", "mean_score", "tiles", "tile_ids"]
#: Stored columns a result row is built from.
ROW_COLUMNS = [c for c in RESULT_COLUMNS if c not in ("rank", "score")] + ["geometry"]


def to_frame(hits: list[dict], extra_columns: Sequence[str] = ()) -> gpd.GeoDataFrame:
    """Ranked rows (stored columns + ``score``, best first) → the result GeoDataFrame in EPSG:4326."""
    columns = [*RESULT_COLUMNS, *extra_columns]
    records = [{**{c: h.get(c) for c in columns}, "rank": i + 1, "score": float(h["score"])}
               for i, h in enumerate(hits)]
    geometry = shapely.from_wkb([h["geometry"] for h in hits]) if hits else []
    return gpd.GeoDataFrame(records, columns=columns, geometry=geometry, crs="EPSG:4326")


#: an index with overlapping tiles is asked for this many times k hits before each place's best is kept (and
#: a search limited to an area for this many more candidates, before the exact area test)
OVERLAP_FETCH = 4
#: a hit sharing at least this share of its footprint (or of a better hit's) with a better hit shows the
#: same place: an index tiled with overlap (a stride below the tile size) would return one place several times
SAME_PLACE_OVERLAP = 0.25


def collapse_overlaps(hits: gpd.GeoDataFrame, k: int) -> gpd.GeoDataFrame:
    """Best-first non-maximum suppression over footprints: of hits showing the same place (see
    :data:`SAME_PLACE_OVERLAP`) only the best stays; then the first ``k``, ranks renumbered.

    Tiles of a grid without overlap only touch, so this changes nothing there.
    """
    if len(hits) < 2:
        return hits.head(k)
    out = hits.iloc[distinct_places(hits.geometry.values, k)].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    out.attrs = dict(hits.attrs)
    return out


def distinct_places(geometry: np.ndarray, k: int) -> list[int]:
    """Positions of the first ``k`` footprints (best first) that show no place a better one kept shows: the
    selection :func:`collapse_overlaps` makes, for callers that need no frame."""
    if len(geometry) < 2:
        return list(range(min(k, len(geometry))))
    first, second = shapely.STRtree(geometry).query(geometry, predicate="intersects")
    pairs = first < second  # each intersecting pair once, the better (earlier) hit first
    first, second = first[pairs], second[pairs]
    shared = shapely.area(shapely.intersection(geometry[first], geometry[second]))
    smaller = np.minimum(shapely.area(geometry[first]), shapely.area(geometry[second]))
    same = shared >= SAME_PLACE_OVERLAP * smaller
    better_of: dict[int, list[int]] = {}
    for a, b in zip(first[same], second[same]):
        better_of.setdefault(int(b), []).append(int(a))
    kept: list[int] = []
    for i in range(len(geometry)):  # best first: a hit goes when a better one of the same place stays
        if set(kept).isdisjoint(better_of.get(i, ())):
            kept.append(i)
            if len(kept) == k:
                break
    return kept


def to_geojson(hits: gpd.GeoDataFrame, query: str) -> dict[str, Any]:
    """Hits (or regions) as the GeoJSON FeatureCollection every shell returns.

    The foreign member ``georet`` carries the query and what the scores mean.
    """
    collection = json.loads(hits.to_json(drop_id=True))
    collection["georet"] = {"query": query, "score": hits.attrs.get("score_kind")}
    return collection
