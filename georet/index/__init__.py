"""Index: the on-disk tile table (:class:`TileStore`) and the pipeline that fills it (:func:`index_raster`).

raster → tiles → embeddings → table, and the label sets
analysts save beside it (:mod:`georet.index.labels`). Depends on :mod:`georet.geo` and
:mod:`georet.models`; knows nothing of searching.
"""

from georet.index.build import IndexReport, index_raster
from georet.index.export import export_geoparquet
from georet.index.labels import DEFAULT_SET, Label, LabelSet, delete_labels, label_sets, read_labels, save_labels
from georet.index.store import (ANN_NPROBES, ANN_REFINE_FACTOR, AUTO_VECTOR_INDEX_ROWS, MANIFEST_NAME, TileStore,
                                describe_mismatch, optimize_index, remove_sources, sql_string, tile_schema)

__all__ = ["export_geoparquet", "ANN_NPROBES", "ANN_REFINE_FACTOR", "AUTO_VECTOR_INDEX_ROWS", "optimize_index", "IndexReport", "index_raster", "DEFAULT_SET", "Label", "LabelSet", "delete_labels", "label_sets",
           "read_labels", "save_labels", "MANIFEST_NAME", "TileStore", "describe_mismatch", "remove_sources",
           "sql_string", "tile_schema"]
