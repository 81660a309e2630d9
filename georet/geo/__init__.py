"""Geo: rasters (local, remote, STAC), their tile grids, areas, land cover and the scene vocabulary.

Public surface: :class:`TilingParams`, :class:`TileGrid`, :class:`RasterSource`
(+ :class:`Tile`), where rasters live (:class:`RasterRef`, :func:`discover_rasters`,
:func:`gdal_env`, STAC: :func:`search_stac_api`), areas (:func:`search_area`),
land cover (:func:`open_landcover`), scenes (:func:`read_classes`,
:class:`ZeroShotScenes`) and the demo mosaic writer (:mod:`georet.geo.mosaic`).
Depends on nothing else in georet but :mod:`georet.errors`; models are passed in, never imported.
"""

from georet.geo.areas import parse_bbox, search_area
from georet.geo.grid import (
    DEFAULT_GROUND_SCALE,
    GroundScale,
    TileGrid,
    TilingParams,
    grid_offsets,
    parse_bands,
    parse_stride,
    parse_tile_size,
    parse_tile_sizes,
)
from georet.geo.landcover import open_landcover
from georet.geo.scenes import (
    TILE_LABEL_TEMPLATES,
    UNKNOWN,
    FewShotScenes,
    SceneClass,
    SceneExamples,
    SceneLabel,
    SceneVocabulary,
    ZeroShotScenes,
    classes_for_labels,
    default_prompt_words,
    foreign_classes,
    propagate_labels,
    read_classes,
    tile_legend,
)
from georet.geo.sources import RasterRef, as_ref, gdal_env, is_url
from georet.lazy import lazy_exports

# reading rasters (GDAL, 0.2 s to import) loads on first use: searching an index never opens one
_RASTER_MODULES = {"georet.geo.raster": ("BandStretch", "RasterSource", "Tile"),
                   "georet.geo.discover": ("discover_rasters",),
                   "georet.geo.stac": ("search_stac_api",)}
__getattr__ = lazy_exports(__name__, _RASTER_MODULES)

__all__ = ["parse_bbox", "search_area", "DEFAULT_GROUND_SCALE", "GroundScale", "TileGrid", "TilingParams", "parse_stride", "grid_offsets", "parse_bands", "parse_tile_size", "parse_tile_sizes",
           "open_landcover", "BandStretch", "RasterSource", "Tile", "RasterRef", "as_ref", "discover_rasters", "gdal_env", "is_url",
           "search_stac_api", "SceneClass", "SceneLabel", "TILE_LABEL_TEMPLATES", "SceneVocabulary", "ZeroShotScenes", "classes_for_labels", "foreign_classes",
           "default_prompt_words", "propagate_labels", "read_classes", "tile_legend", "FewShotScenes", "SceneExamples", "UNKNOWN"]
