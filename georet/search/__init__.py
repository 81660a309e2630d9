"""Search: text (and relations between phrases) → ranked tiles as a GeoDataFrame.

Public surface: :func:`open_index` → :class:`GeoIndex` (``search``, ``run``, ``info``,
``thumbnail``), :class:`SearchRequest` (one search, validated once), relational parsing (:func:`parse_query`, :func:`parse_distance`,
:func:`explain`), query text to vectors (:func:`embed_queries`) and search areas (:func:`search_area`, from :mod:`georet.geo`). Depends on
:mod:`georet.index`, :mod:`georet.geo` and :mod:`georet.models`.
"""

from georet.geo import parse_bbox, search_area
from georet.search.geoindex import GeoIndex, open_index
from georet.search.relations import Relation, explain, parse_distance, parse_query
from georet.search.request import SearchRequest
from georet.search.results import REGION_COLUMNS, RESULT_COLUMNS, to_geojson
from georet.search.wording import embed_queries

__all__ = ["parse_bbox", "search_area", "GeoIndex", "open_index", "Relation", "explain", "parse_distance",
           "parse_query", "SearchRequest", "REGION_COLUMNS", "RESULT_COLUMNS", "to_geojson",
           "embed_queries"]
