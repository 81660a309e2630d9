"""Geo: rasters, their tile grids, land cover and the scene vocabulary.

Public surface: :class:`TilingParams`, :class:`TileGrid`, :class:`RasterSource`
(+ :class:`Tile`, :func:`discover_rasters`, :func:`gdal_env`), land cover
(:func:`open_landcover`), scenes (:func:`read_classes`, :class:`ZeroShotScenes`)
and the demo mosaic writer (:mod:`georet.geo.mosaic`). Depends on nothing else
in georet but :mod:`georet.errors`; models are passed in, never imported.
"""

from georet.geo.grid import TileGrid, TilingParams, grid_offsets, parse_bands, parse_tile_size
from georet.geo.landcover import open_landcover
from georet.geo.raster import RasterSource, Tile, discover_rasters, gdal_env
from georet.geo.scenes import (SceneClass, SceneLabel, ZeroShotScenes, classes_for_labels, default_prompt_words,
                               read_classes)

__all__ = ["TileGrid", "TilingParams", "grid_offsets", "parse_bands", "parse_tile_size", "open_landcover",
           "RasterSource", "Tile", "discover_rasters", "gdal_env", "SceneClass", "SceneLabel", "ZeroShotScenes",
           "classes_for_labels", "default_prompt_words", "read_classes"]
