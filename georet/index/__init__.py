"""Index: the on-disk tile table (:class:`TileStore`) and the pipeline that fills it (:func:`index_raster`).

raster → tiles → embeddings → table, and the label sets
analysts save beside it (:mod:`georet.index.labels`). Depends on :mod:`georet.geo` and
:mod:`georet.models`; knows nothing of searching. The pipeline (which needs the
torch models) and the GeoParquet export load on first use, so searching an
index does not import them.
"""

from georet.index.labels import DEFAULT_SET, Label, LabelSet, delete_labels, label_sets, read_labels, save_labels
from georet.index.manifest import Grid, SourceEntry
from georet.index.store import (
                                ANN_NPROBES,
                                ANN_REFINE_FACTOR,
                                AUTO_VECTOR_INDEX_ROWS,
                                MANIFEST_NAME,
                                TileStore,
                                describe_mismatch,
                                optimize_index,
                                remove_sources,
                                sql_string,
                                tile_schema,
)
from georet.lazy import lazy_exports

_HEAVY_MODULES = {"georet.index.build": ("IndexReport", "index_raster"), "georet.index.job": ("IndexJob",),
                  "georet.index.export": ("export_geoparquet",)}
__getattr__ = lazy_exports(__name__, _HEAVY_MODULES)

__all__ = ["Grid", "SourceEntry", "ANN_NPROBES", "ANN_REFINE_FACTOR", "AUTO_VECTOR_INDEX_ROWS", "optimize_index", "DEFAULT_SET", "Label",
           "LabelSet", "delete_labels", "label_sets", "read_labels", "save_labels", "MANIFEST_NAME", "TileStore",
           "describe_mismatch", "remove_sources", "sql_string", "tile_schema",
           *(n for names in _HEAVY_MODULES.values() for n in names)]
