"""Search results: the columns every shell shows and the GeoDataFrame they come in."""

from __future__ import annotations

import json
from typing import Any, Sequence

import geopandas as gpd
import shapely

#: Columns of every result, in order (plus ``geometry``); relational results add ``RELATION_COLUMNS``.
RESULT_COLUMNS = ["rank", "score", "tile_id", "scene", "scene_score", "source", "source_crs",
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


def to_geojson(hits: gpd.GeoDataFrame, query: str) -> dict[str, Any]:
    """Hits (or regions) as the GeoJSON FeatureCollection every shell returns.

    The foreign member ``georet`` carries the query and what the scores mean.
    """
    collection = json.loads(hits.to_json(drop_id=True))
    collection["georet"] = {"query": query, "score": hits.attrs.get("score_kind")}
    return collection
