"""``georet demo``: the whole job on real imagery, offline, in one command.

Indexes the bundled demo mosaic (real AID aerial chips from the rsicd_aid test
split on a synthetic georeference, see ``georet/data/make_demo_mosaic.py``)
with the default model, runs a few queries and writes what a GIS user would
look at: the hits as GeoJSON, a contact sheet of the top tiles per query and a
map of the hit footprints over the raster. Because every chip's true scene
class is known, the demo also reports how many hits are right.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from PIL import Image, ImageDraw
from rasterio.enums import Resampling
from rasterio.windows import Window

from georet.errors import GeoretError
from georet.geo import TilingParams
from georet.geo.mosaic import mosaic_cells
from georet.index import TileStore, describe_mismatch, index_raster
from georet.models import ModelSpec, load_model

if TYPE_CHECKING:
    from georet.models import EmbeddingModel
from georet.search import GeoIndex, open_index

DEMO_RASTER = Path(__file__).parent / "data" / "demo_mosaic.tif"
#: query → the chip classes that count as a right answer
DEMO_QUERIES: dict[str, tuple[str, ...]] = {
    "airport": ("airport",),
    "a river": ("river", "bridge"),
    "beach with waves": ("beach",),
    "dense residential area": ("denseresidential",),
    "storage tanks": ("storagetanks", "industrial"),
}
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
_SHEET_TILE = 150
_LABEL_W = 190


@dataclass
class DemoReport:
    """What the demo wrote and how right its hits were."""

    out_dir: Path
    index: Path
    hits_geojson: Path
    contact_sheet: Path
    map_png: Path
    hits: gpd.GeoDataFrame = field(repr=False)
    #: query → (hits that are a right chip, right chips in the raster); empty if the truth is unknown
    found: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "index": str(self.index), "hits_geojson": str(self.hits_geojson),
                "contact_sheet": str(self.contact_sheet), "map": str(self.map_png),
                "found": {q: {"right": r, "relevant": n} for q, (r, n) in self.found.items()}, "hits": len(self.hits)}


def _drop_index_of_another_model(db: Path, model: EmbeddingModel) -> None:
    """Delete the demo's own index when another model built it (only a georet index of the demo raster)."""
    if not TileStore.exists(db):
        return
    store = TileStore.open(db)
    sources = {Path(name).name for name in store.manifest.get("sources", {})}
    if describe_mismatch(store.model_identity, model.identity) and sources <= {DEMO_RASTER.name}:
        print(f"the demo index {db} was built with another model; rebuilding it", file=sys.stderr)
        shutil.rmtree(db)


def run_demo(out_dir: str | Path = "georet-demo", *, raster: str | Path = DEMO_RASTER, k: int = 5,
             queries: dict[str, Sequence[str]] | None = None, model: EmbeddingModel | ModelSpec | None = None,
             device: str = "auto", progress: bool | None = None) -> DemoReport:
    """Index ``raster`` into ``out_dir/index``, search ``queries`` and draw the results.

    Tiles are 150 px so that they line up with the mosaic's chips. Re-running
    reuses the index (indexing is idempotent); an index the demo built with
    another model (an earlier georet) is its own scratch data, rebuilt rather
    than refused.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    queries = dict(queries or DEMO_QUERIES)
    if model is None or isinstance(model, ModelSpec):
        model = load_model(model or ModelSpec(), device=device)
    db = out_dir / "index"
    _drop_index_of_another_model(db, model)
    index_raster([raster], db, tiling=TilingParams(tile_size=150), model=model, progress=progress)
    index = open_index(db, model=model)

    frames = []
    for query in queries:
        hits = index.search(query, k=k)
        hits.insert(0, "query", query)
        frames.append(hits)
    hits = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    found = _found(hits, Path(raster), queries)
    if found:
        hits["chip"] = _chip_names(hits, Path(raster))

    hits_path = out_dir / "hits.geojson"
    hits.to_file(hits_path, driver="GeoJSON")
    sheet = _contact_sheet(hits, index, list(queries), k)
    sheet_path = out_dir / "contact_sheet.png"
    sheet.save(sheet_path)
    map_path = out_dir / "map.png"
    _hit_map(hits, Path(raster), list(queries)).save(map_path)
    return DemoReport(out_dir, db, hits_path, sheet_path, map_path, hits, found)


def _chip_names(hits: gpd.GeoDataFrame, raster: Path) -> list[str]:
    cells = mosaic_cells(raster)
    with rasterio.open(raster) as src:
        size = src.width // len(cells[0])
    return [cells[int(r) // size][int(c) // size] for r, c in zip(hits["row_off"], hits["col_off"])]


def _scene_of(chip: str) -> str:
    return re.sub(r"_\d+\.\w+$", "", chip)


def _found(hits: gpd.GeoDataFrame, raster: Path, queries: dict[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    """Per query: how many hits show a right chip, and how many right chips the raster has.

    Empty when the raster is not a georet mosaic (no known truth).
    """
    try:
        chips = _chip_names(hits, raster)
        cells = [_scene_of(c) for row in mosaic_cells(raster) for c in row]
    except GeoretError:
        return {}
    right = [_scene_of(chip) in queries[q] for chip, q in zip(chips, hits["query"])]
    frame = pd.DataFrame({"query": hits["query"], "right": right})
    return {q: (int(g["right"].sum()), sum(c in queries[q] for c in cells))
            for q, g in frame.groupby("query", sort=False)}


def _contact_sheet(hits: gpd.GeoDataFrame, index: GeoIndex, queries: list[str], k: int) -> Image.Image:
    """One row per query: the query, then its top ``k`` tiles with rank and score."""
    width, height = _LABEL_W + k * (_SHEET_TILE + 6), len(queries) * (_SHEET_TILE + 24) + 6
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for row, query in enumerate(queries):
        top = 6 + row * (_SHEET_TILE + 24)
        draw.text((8, top + _SHEET_TILE // 2 - 6), f'"{query}"', fill="black")
        for col, hit in enumerate(hits[hits["query"] == query].itertuples()):
            left = _LABEL_W + col * (_SHEET_TILE + 6)
            tile = _read_tile(hit.source, hit.col_off, hit.row_off, hit.width, hit.height)
            sheet.paste(tile if tile is not None else index.thumbnail(hit.tile_id).resize((_SHEET_TILE,) * 2),
                        (left, top))
            label = f"#{hit.rank}  {hit.score:.3f}" + (f"  {hit.chip.rsplit('_', 1)[0]}" if "chip" in hits else "")
            draw.text((left, top + _SHEET_TILE + 4), label, fill="black")
    return sheet


def _read_tile(source: str, col: int, row: int, width: int, height: int) -> Image.Image | None:
    """Full-resolution pixels of a hit from its raster (None if the raster moved)."""
    if not Path(source).is_file():
        return None
    with rasterio.open(source) as src:
        pixels = src.read([1, 2, 3], window=Window(col, row, width, height),
                          out_shape=(3, _SHEET_TILE, _SHEET_TILE), resampling=Resampling.average)
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))


def _hit_map(hits: gpd.GeoDataFrame, raster: Path, queries: list[str], max_side: int = 900) -> Image.Image:
    """The raster (downsampled) with each query's hit footprints outlined in its colour, plus a legend."""
    with rasterio.open(raster) as src:
        scale = min(1.0, max_side / max(src.width, src.height))
        shape = (3, max(1, round(src.height * scale)), max(1, round(src.width * scale)))
        pixels = src.read([1, 2, 3], out_shape=shape, resampling=Resampling.average)
    base = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    legend_h = 22 * len(queries) + 10
    canvas = Image.new("RGB", (base.width, base.height + legend_h), "white")
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, query in enumerate(queries):
        colour = PALETTE[i % len(PALETTE)]
        inset = 2 + 3 * i  # hits of several queries on one tile stay visible side by side
        for hit in hits[hits["query"] == query].itertuples():
            box = [hit.col_off * scale + inset, hit.row_off * scale + inset,
                   (hit.col_off + hit.width) * scale - inset, (hit.row_off + hit.height) * scale - inset]
            draw.rectangle(box, outline=colour, width=3)
            draw.text((box[0] + 4, box[1] + 2), str(hit.rank), fill=colour)
        y = base.height + 6 + 22 * i
        draw.rectangle([8, y, 26, y + 14], fill=colour)
        draw.text((34, y + 1), f'"{query}"', fill="black")
    return canvas


def summary_table(report: DemoReport) -> str:
    """Readable per-query lines for the terminal."""
    lines = []
    for query, group in report.hits.groupby("query", sort=False):
        found = report.found.get(query)
        head = f'"{query}"' + (f"  {found[0]} of the top {len(group)} right ({found[1]} right chips in the raster)"
                               if found else "")
        lines.append(head)
        for hit in group.itertuples():
            chip = f"  chip {hit.chip}" if "chip" in report.hits else ""
            lines.append(f"  {hit.rank:>2}  {hit.score:.3f}  {hit.scene:<18}{chip}")
    return "\n".join(lines)

