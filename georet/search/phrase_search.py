"""Searches of several phrases: relations in space ("airport near river") and change in time ("farmland
that became housing"), from the ranking of :mod:`georet.search.relations` and :mod:`georet.search.change`
to the result frame with each hit's partner or earlier tile and the phrases' scores.
"""

from __future__ import annotations

import base64
from typing import Callable

import geopandas as gpd
import numpy as np
import shapely

from georet.search.catalog import TileCatalog
from georet.search.change import CHANGE_COLUMNS, rank_change
from georet.search.filters import TileFilter
from georet.search.query_text import QueryEncoder
from georet.search.relations import RELATION_COLUMNS, Change, Relation, rank_relational
from georet.search.request import SearchRequest
from georet.search.results import OVERLAP_FETCH, to_frame


def relational_frame(relation: Relation, k: int, near_m: float | None, where: TileFilter, prior_weight: float,
                     catalog: TileCatalog, queries: QueryEncoder,
                     subject_pool: Callable[[TileCatalog, np.ndarray, np.ndarray, int], np.ndarray | None]
                     ) -> gpd.GeoDataFrame:
    """Top ``k`` subject tiles for ``relation``: encode the phrases, rank on the catalog, fetch the rows.

    ``where`` restricts the subject tiles; partners may lie anywhere. ``subject_pool`` names the subject
    tiles worth ranking where the index is large (None: every tile).
    """
    def result(hits: list[dict], used_near_m: float) -> gpd.GeoDataFrame:
        frame = to_frame(hits, extra_columns=RELATION_COLUMNS)
        frame.attrs.update({"relation": relation.describe(), "near_m": used_near_m, "scene_prior": prior_weight,
                            "score_kind": "relational: z-scores of subject, partner and sentence, combined"})
        return frame

    if len(catalog) == 0 or where.keeps_none:
        return result([], near_m or 0.0)
    phrases = queries.embed([relation.subject, relation.partner, relation.text])
    prior = queries.scene_prior(phrases[:2], catalog, prior_weight) if prior_weight else None
    eligible = where.mask(catalog)
    ranking = rank_relational(relation, catalog, phrases, k, near_m, eligible, prior,
                              subject_pool=subject_pool(catalog, phrases[0], eligible, k))

    rows: dict[int, dict] = {}
    hits = []
    for i, tile in enumerate(ranking.tiles):
        if int(tile) not in rows:  # footprints are read from disk: k tiles and their partners at a time
            chunk = slice(i, i + k)
            rows.update(catalog.rows([*ranking.tiles[chunk].tolist(),
                                      *(int(p[0]) for p in ranking.partners[chunk] if len(p))]))
        row = rows[int(tile)]
        if not where.keeps(row):
            continue
        partners = ranking.partners[i]
        partner_row = rows.get(int(partners[0])) if len(partners) else None
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


def change_frame(change: Change, k: int, request: SearchRequest, prior_weight: float, where: TileFilter,
                 catalog: TileCatalog, queries: QueryEncoder) -> gpd.GeoDataFrame:
    """Top ``k`` places for ``change``: the later tile of each with its earlier tile and their scores
    (:mod:`georet.search.change`). ``where`` (the request's area, dates and finished sources) restricts
    both tiles; the request's scene the later."""
    dates, codes = catalog.date_codes
    frame_attrs = {"change": change.describe(), "scene_prior": prior_weight,
                   "dates": f"{request.from_date or 'earliest'} → {request.to_date or 'latest'}",
                   "score_kind": "change: z-scores of each phrase among its date's tiles, combined"}
    if len(dates) < 2 or where.keeps_none:
        frame = to_frame([], extra_columns=CHANGE_COLUMNS)
        frame.attrs.update(frame_attrs, acquisitions=len(dates))
        return frame
    earlier = where.without_scene().mask(catalog) \
        & (catalog.dated_within(request.from_range) if request.from_range else True)
    later = where.mask(catalog) & (catalog.dated_within(request.to_range) if request.to_range else True)
    phrases = queries.embed([change.before or change.after, change.after or change.before, change.text])
    prior = queries.scene_prior(phrases[:2], catalog, prior_weight) if prior_weight else None
    ranking = rank_change(change, catalog, phrases, k * (OVERLAP_FETCH if where.area is not None else 1),
                          earlier, later, prior)
    rows = catalog.rows(ranking.after.tolist())  # the hits are the later tiles: only their rows are read
    hits, befores = [], []
    for i, (after, before) in enumerate(zip(ranking.after.tolist(), ranking.before.tolist())):
        row = rows[after]
        if not where.keeps(row):
            continue
        befores.append(before)
        hits.append({**row, "score": float(ranking.scores[i]), "change": change.kind,
                     "before_tile_id": catalog.tile_ids[before], "before_acquired": dates[codes[before]],
                     **{name: None if np.isnan(value) else round(float(value), 4) for name, value in (
                         ("before_score", ranking.before_z[i]), ("after_score", ranking.after_z[i]),
                         ("stay_score", ranking.stay_z[i]), ("whole_score", ranking.whole_z[i]))}})
        if len(hits) == k:
            break
    thumbnails = catalog.dataset.take(befores, columns=["thumbnail"])["thumbnail"].to_pylist() if hits else []
    for hit, png in zip(hits, thumbnails):  # the place before, in every format a hit goes out in
        hit["before_thumbnail"] = "data:image/png;base64," + base64.b64encode(png or b"").decode("ascii")
    frame = to_frame(hits, extra_columns=CHANGE_COLUMNS)
    frame.attrs.update(frame_attrs, acquisitions=len(dates))
    return frame
