"""``georet export``: the index as GeoParquet, for geopandas, DuckDB, QGIS and other embedding tools.

Written batch by batch from the Lance dataset (memory stays at one batch for
any index size) into a temporary file that replaces the target at the end, so
a failed export never leaves half a file under the real name. The geometry is
WKB in lon/lat (GeoParquet's default CRS, OGC:CRS84), the embeddings a
fixed-size float32 list column, and the model identity rides along in the
file's metadata so a reader knows which model the vectors belong to.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from georet.errors import GeoretError
from georet.files import atomic_write
from georet.index.store import TileStore

GEOPARQUET_VERSION = "1.1.0"
_COLUMNS = ["tile_id", "geometry", "minx", "miny", "maxx", "maxy", "source", "source_crs", "acquired", "col_off",
            "row_off", "width", "height", "scene", "scene_score", "valid_fraction", "landcover_fractions", "vector"]


def export_geoparquet(db: str | Path, out: str | Path, thumbnails: bool = False) -> int:
    """Write every tile of ``db`` to ``out`` (.parquet); returns the number of rows."""
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise GeoretError(f"the export is GeoParquet: the file name must end in .parquet, got {out.name}")
    store = TileStore.open(db)
    if store.count() == 0:
        raise GeoretError(f"{store.path} has no tiles to export")
    columns = _COLUMNS + (["thumbnail"] if thumbnails else [])
    missing = store.missing_columns(columns)  # an index from before them: exported as nulls
    geo = {"version": GEOPARQUET_VERSION, "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}}}
    metadata = {b"geo": json.dumps(geo).encode(),
                b"georet": json.dumps({"model": store.model_identity, "embedding_column": "embedding"}).encode()}
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with contextlib.ExitStack() as stack:
            writer = None
            for batch in store.table.to_lance().to_batches(columns=[c for c in columns if c not in missing],
                                                           batch_size=65_536):
                table = pa.Table.from_batches([batch])
                for name in missing:
                    table = table.add_column(columns.index(name), name, pa.nulls(len(table), pa.string()))
                table = table.rename_columns(["embedding" if c == "vector" else c for c in table.schema.names])
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(tmp, table.schema.with_metadata(metadata),
                                                                  compression="zstd"))
                writer.write_table(table.replace_schema_metadata(metadata))
                rows += table.num_rows

    atomic_write(out, write)
    return rows
