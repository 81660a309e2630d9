"""raster → tiles → embeddings → table: the ``georet index`` pipeline.

A reader thread cuts windows, reads and preprocesses batches while the model
embeds the previous batch (rasterio and torch both release the GIL), through a
bounded queue, so reading overlaps the model and memory stays flat. Rows are
committed to LanceDB every ``write_every`` tiles; each commit is atomic, so a
killed run resumes from the tiles already in the table.
"""

from __future__ import annotations

import contextlib
import importlib.util
import queue
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from georet.errors import DISK_FULL, ConflictError, GeoretError, InputError, NotFoundError, disk_full
from georet.geo import (
    DEFAULT_GROUND_SCALE,
    TILE_LABEL_TEMPLATES,
    BandStretch,
    GroundScale,
    RasterRef,
    RasterSource,
    SceneVocabulary,
    Tile,
    TilingParams,
    ZeroShotScenes,
    discover_rasters,
    foreign_classes,
    is_url,
    open_landcover,
    read_classes,
    tile_legend,
)
from georet.geo.dates import acquisition_date
from georet.index.job import IndexJob
from georet.index.manifest import LANDCOVER_PREFIX, ZERO_SHOT, Grid, SourceEntry
from georet.index.rows import Labels, tile_rows
from georet.index.scenes import refine_scenes
from georet.index.store import TileStore, describe_mismatch, sql_string
from georet.models import ModelSpec, cache_dir, load_model

if TYPE_CHECKING:
    from georet.models import EmbeddingModel

_PREFETCH_BATCHES = 3


@dataclass
class IndexReport:
    """What one ``index`` run did."""

    db: str
    sources: list[str] = field(default_factory=list)
    indexed: int = 0
    already_indexed: int = 0
    below_min_valid: int = 0
    seconds: float = 0.0

    @property
    def tiles_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"indexed {self.indexed} tiles from {len(self.sources)} raster(s) into {self.db} "
                f"in {self.seconds:.1f} s ({self.tiles_per_second:.1f} tiles/s); "
                f"{self.already_indexed} already indexed, {self.below_min_valid} below --min-valid")


@dataclass
class _Batch:
    tiles: list[Tile]
    images: object  # torch.Tensor, preprocessed
    windows_done: int


def _batches(source: RasterSource, model: EmbeddingModel, windows: list[Window], batch_size: int,
             min_valid: float, report: IndexReport) -> Iterator[_Batch]:
    tiles: list[Tile] = []
    windows_done = 0
    for tile in source.iter_tiles(windows):
        windows_done += 1
        if tile.valid_fraction < min_valid or tile.valid_fraction == 0.0:
            report.below_min_valid += 1
        else:
            tiles.append(tile)
        if len(tiles) == batch_size:
            yield _Batch(tiles, model.preprocess.apply(np.stack([t.pixels for t in tiles])), windows_done)
            tiles, windows_done = [], 0
    if tiles or windows_done:
        images = model.preprocess.apply(np.stack([t.pixels for t in tiles])) if tiles else None
        yield _Batch(tiles, images, windows_done)


def _prefetch(iterator: Iterator[_Batch]) -> Iterator[_Batch]:
    """Run ``iterator`` in a thread, at most a few batches ahead; re-raise its errors here."""
    slots: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
    done = object()
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterator:
                if not hand_over(item):
                    return
            hand_over(done)
        except BaseException as exc:  # handed to the consumer
            hand_over(exc)

    worker = threading.Thread(target=produce, name="georet-reader", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tile", disable=not enabled, dynamic_ncols=True, leave=False)


def index_raster(
    paths: str | Path | RasterRef | Sequence[str | Path | RasterRef],
    db: str | Path,
    job: IndexJob | None = None,
    *,
    model: EmbeddingModel | ModelSpec | None = None,
    device: str = "auto",
    on_progress: Callable[[str, int, int], None] | None = None,
    **settings: Any,
) -> IndexReport:
    """Tile, embed and store rasters in the index at ``db`` (created if needed).

    How is an :class:`IndexJob`: pass one, or its settings as keywords (``tiling=``, ``area=``, …: a
    misspelt one is a ``TypeError``), or both (the keywords replace the job's).

    ``paths`` are files, folders, URLs of (cloud-optimised) GeoTIFFs and STAC
    Item/ItemCollection JSON (``asset`` picks the items' asset); ``area`` (a
    lon/lat geometry, see :func:`georet.geo.search_area`) keeps only the tiles
    that touch it, and a remote raster is then read only there.

    Tiles already in the index are skipped (resume after interruption) unless
    ``reindex`` is set, in which case they are recomputed and upserted.
    Scenes come from zero-shot ``classes`` (default vocabulary if None; each
    raster's labels refined over its look-alike tiles once it is indexed, see
    :func:`refine_scenes`) or from a ``landcover`` layer, never both.
    ``tiling`` may name several tile sizes: every raster is then tiled at each.
    ``progress=None`` shows a bar only when stderr is a terminal;
    ``on_progress(source, done, total)`` is called after every batch (for GUIs).

    ``engine="ray"`` reads and embeds on a Ray cluster (``ray_address``, or
    Ray started on this machine) and writes Lance fragments from the workers
    (:mod:`georet.index.ray_engine`); the rows are the same as the local engine's.

    Every tile carries its raster's acquisition date: ``acquired`` (an ISO
    date, for all ``paths``), else the STAC item's datetime, the raster's date
    tags or a date in its file name (:func:`georet.geo.dates.acquisition_date`);
    null when none says. A new date for a raster already indexed is written to
    its rows without re-embedding them.

    ``image_runtime`` says what runs the image side of a model loaded here
    (:func:`georet.models.load_model`): ``openvino-bf16`` is about twice as fast
    as the float32 default on CPUs with bfloat16, at cosine ~0.9998 to it. A
    model passed loaded already has its runtime: naming another is an error.

    Inputs are all validated before the index is touched. One writer at a
    time: a run waits for another run on the same ``db`` (up to
    ``lock_timeout`` seconds; None waits as long as it takes). If a raster
    fails while it is read, the rasters completed before it stay, the failing
    one stays listed as incomplete with the reason (its committed tiles kept,
    so a re-run resumes it), and a :class:`GeoretError` says so.
    """
    started = time.perf_counter()
    job = replace(job or IndexJob(), **settings)
    for setting, value in (("image_runtime", job.image_runtime != "auto"), ("threads", job.threads is not None)):
        if value and not (model is None or isinstance(model, ModelSpec)):
            raise InputError(setting, "applies to a model loaded by index_raster; this model is loaded already "
                             "(load it with the runtime and threads you want)")
    if job.engine == "ray":
        if not all(importlib.util.find_spec(m) for m in ("ray", "lance_ray")):
            raise InputError("engine", "ray needs Ray on this machine: pip install 'georet[ray]'")
        from georet.index.ray_engine import connect

        connect(job.ray_address)  # before the index is touched
    rasters = discover_rasters([paths] if isinstance(paths, (str, Path, RasterRef)) else paths, job.asset)
    area = job.area
    touched = 0
    dates: dict[str, tuple[str | None, str | None]] = {}
    stretches: dict[str, BandStretch | None] = {}  # estimated once a raster, here, for every scale and worker
    for ref in rasters:  # validate every input before touching the index
        with RasterSource(ref, job.tiling.scales()[0], area) as source:
            touched += len(source.windows()) if area is not None else 1
            dates[ref.name] = acquisition_date(ref, source.dataset.tags(), job.acquired)
            stretches[ref.name] = source.band_stretch
    if not touched:
        raise GeoretError("the area ({bbox}/{within}) touches none of the rasters; nothing to index", names=("bbox", "within"))
    landcover = job.landcover
    scene_classes = None if landcover else (read_classes(job.classes) if job.classes else tile_legend())
    if landcover and not Path(landcover).exists():
        raise NotFoundError(f"land-cover file not found: {landcover}")
    if model is None or isinstance(model, ModelSpec):
        model = load_model(model, device=device, image_runtime=job.image_runtime, threads=job.threads)
    if "auto" in job.tiling.tile_sizes and job.tiling.scale is None:
        job = replace(job, tiling=replace(job.tiling, scale=model_scale(model)))
    tiling, reindex = job.tiling, job.reindex
    spec = {"arch": model.spec.arch,
            "pretrained": _absolute_if_file(model.spec.pretrained),
            "checkpoint": _absolute_if_file(model.spec.checkpoint)}
    db = db if is_url(str(db)) else Path(db).expanduser()
    report = IndexReport(db=str(db))
    if _nothing_to_do(db, rasters, tiling, area, reindex, model, dates, report):
        report.seconds = time.perf_counter() - started  # a no-op re-run writes nothing: fine on a read-only index
        return report
    zero_shot = None
    if scene_classes:  # a legend in other words is anchored to the classes the model knows
        vocabulary = SceneVocabulary.of(model, cache_dir("vocabulary")) if foreign_classes(scene_classes) else None
        zero_shot = ZeroShotScenes(model, scene_classes, TILE_LABEL_TEMPLATES, vocabulary)

    with TileStore.open_for_writing(db, model.identity, spec, lock_timeout=job.lock_timeout,
                                    on_wait=lambda message: print(message, file=sys.stderr)) as store:
        report.db = str(store.path)
        for position, ref in enumerate(rasters):
            entry = store.entry(ref.name)
            if _source_is_complete(entry, tiling, area, reindex):  # done before, or meanwhile
                if _redated(entry, dates[ref.name]):
                    store.set_acquired(ref.name, *dates[ref.name])
                report.already_indexed += store.count(f"source = {sql_string(ref.name)}")
                report.sources.append(ref.name)
                continue
            if reindex and entry is not None and _tiling_changed(entry, tiling):  # a new grid: the old one goes
                store.remove_source(ref.name)
            with contextlib.ExitStack() as opened:  # one grid per scale (their tile ids name their size)
                sources = [opened.enter_context(RasterSource(ref, scale, area, stretches[ref.name]))
                           for scale in tiling.scales()]
                grids = tuple(_grid(source) for source in sources)
                store.begin_source(ref.name, SourceEntry(
                    grid=grids[0], tiling=tiling.to_dict(), scales=grids if len(grids) > 1 else (),
                    scenes=f"{LANDCOVER_PREFIX}{Path(landcover).resolve()}" if landcover else ZERO_SHOT,
                    classes=tuple(c.label for c in scene_classes) if scene_classes else None,
                    acquired=dates[ref.name][0], acquired_from=dates[ref.name][1],
                    area=area.wkt if area is not None else None, href=ref.href if ref.href != ref.name else None,
                    stac=ref.metadata or None))
                if not reindex and store.count(f"source = {sql_string(ref.name)}"):  # resumed: one date for all
                    store.set_acquired(ref.name, *dates[ref.name])
                if reindex and job.engine == "ray":  # appended fragments cannot replace rows: they go first (the
                    store.delete_rows(ref.name)  # entry says incomplete meanwhile)
                try:
                    for source in sources:
                        _index_scale(Scale(source, store, dates[ref.name][0], report, on_progress), model,
                                     job, zero_shot)
                    if zero_shot is not None:
                        refine_scenes(store, ref.name, zero_shot)
                except (Exception, KeyboardInterrupt) as exc:
                    reason = _one_line(exc)
                    try:
                        store.end_source(ref.name, failure=reason)
                    except OSError:  # the manifest cannot be rewritten either: it says incomplete already
                        pass
                    if not isinstance(exc, GeoretError) and not disk_full(exc):
                        raise
                    raise GeoretError(
                        f"{reason} — {ref.display_name} is marked incomplete in {store.path} (re-run to resume it, "
                        f"or `georet remove` it); {position} raster(s) completed before it are kept") from None
                store.end_source(ref.name)
            report.sources.append(ref.name)
        if report.indexed:
            store.optimize()
            if store.wants_vector_index():
                print(f"building an approximate vector index over {store.count():,} tiles…", file=sys.stderr)
                store.build_vector_index()
    report.seconds = time.perf_counter() - started
    return report


def _grid(source: RasterSource) -> Grid:
    """What the manifest keeps of a raster's grid at one scale: shape, CRS, bands, tile and stride."""
    return Grid(crs=source.crs.to_string(), width=source.dataset.width, height=source.dataset.height,
                bands=tuple(source.bands), tile_px=source.grid.tile_px, stride_px=source.grid.stride_px,
                tile_m=round(source.grid.tile_px * source.metres_per_pixel, 2))


@dataclass
class Scale:
    """One raster at one tile scale, on its way into ``store``: what every step of indexing it shares."""

    source: RasterSource
    store: TileStore
    #: the raster's acquisition date (ISO), or None when unknown
    acquired: str | None
    report: IndexReport
    on_progress: Callable[[str, int, int], None] | None = None

    def progressed(self, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(self.source.ref.name, done, total)


def _index_scale(scale: Scale, model: EmbeddingModel, job: IndexJob, zero_shot: ZeroShotScenes | None) -> None:
    """Embed and store one raster's tiles at one scale, on the local engine or on Ray."""
    if job.engine == "ray":
        _index_source_on_ray(scale, model, job, job.labels(zero_shot))
        return
    source = scale.source
    layer = open_landcover(job.landcover, job.landcover_field, source.dataset, source.crs) if job.landcover else None
    try:
        _index_source(scale, model, job, layer or zero_shot)
    finally:
        if layer is not None:
            layer.close()


def model_scale(model: EmbeddingModel) -> GroundScale:
    """The ground scale ``tile_size="auto"`` cuts tiles at for ``model``: its declared ground size (else the
    scene-chip default), never fewer pixels than its input, the default share of a tile apart."""
    return replace(DEFAULT_GROUND_SCALE, metres=model.tile_ground_m or DEFAULT_GROUND_SCALE.metres,
                   min_px=max(model.preprocess.size))


def _source_is_complete(entry: SourceEntry | None, tiling: TilingParams, area: BaseGeometry | None,
                        reindex: bool) -> bool:
    """Complete with this tiling, over an area that covers the one asked for (no area: the whole raster)."""
    if reindex or entry is None or not entry.complete:
        return False
    if _tiling_changed(entry, tiling):
        return False
    return entry.area is None or (area is not None and shapely.from_wkt(entry.area).covers(area))


def _tiling_changed(entry: SourceEntry, tiling: TilingParams) -> bool:
    """Whether a source's manifest entry was tiled otherwise than ``tiling`` asks.

    Sources indexed before ``stretch`` existed kept their uint8 colours, as "auto"
    keeps well-exposed ones: a plain re-run does not redo them (--reindex does).
    """
    return {"stretch": "auto", **entry.tiling} != tiling.to_dict()


def _check_same_tiling(entries: dict[str, SourceEntry], rasters: list[RasterRef], tiling: TilingParams) -> None:
    """A raster is tiled one way in one index: adding another grid's tiles to its own would mix two grids
    under one manifest entry (its counts, resume and overlap rules would all be wrong)."""
    for ref in rasters:
        entry = entries.get(ref.name)
        if entry is not None and _tiling_changed(entry, tiling):
            old = entry.tiling
            stride = f", stride {old['stride']}" if old.get("stride") is not None else ""
            size = old.get("tile_size")
            size = ",".join(map(str, size)) if isinstance(size, list) else size
            raise ConflictError(
                f"{ref.display_name} is indexed with other tiling ({entry.grid.tile_px} px tiles every "
                f"{entry.grid.stride_px} px, from tile size {size}{stride}); repeat those options "
                "to add to this index, or re-tile it with {reindex}", names=("reindex",))


def _redated(entry: SourceEntry, date: tuple[str | None, str | None]) -> bool:
    """Whether an indexed raster's acquisition date is now another one (its rows are re-dated, not re-embedded)."""
    return entry.acquired != date[0]


def _nothing_to_do(db: Path | str, rasters: list[RasterRef], tiling: TilingParams, area: BaseGeometry | None,
                   reindex: bool, model: EmbeddingModel, dates: dict[str, tuple[str | None, str | None]],
                   report: IndexReport) -> bool:
    """True when every raster is already complete in ``db`` with this tiling, model and acquisition date
    (counted into ``report``)."""
    if not TileStore.exists(db):
        return False
    store = TileStore.open(db)
    if not store.has_table():  # lost: its sources must be rebuilt, under the writer lock
        return False
    problem = describe_mismatch(store.model_identity, model.identity)
    if problem:
        raise ConflictError(f"cannot add to {db}: {problem}; use a new {{db}}", names=("db",))
    entries = store.entries()
    if not reindex:
        _check_same_tiling(entries, rasters, tiling)
    if not all(_source_is_complete(entries.get(ref.name), tiling, area, reindex)
               and not _redated(entries[ref.name], dates[ref.name]) for ref in rasters):
        return False
    counts = store.source_counts()
    report.already_indexed = sum(counts.get(ref.name, 0) for ref in rasters)
    report.sources = [ref.name for ref in rasters]
    return True


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})"
    if disk_full(exc):
        return f"{DISK_FULL}: free space, then re-run to resume"
    first = (str(exc).strip().splitlines() or [""])[0]
    return first if isinstance(exc, GeoretError) else f"{type(exc).__name__}: {first}"


def _plan(source: RasterSource, store: TileStore, reindex: bool, report: IndexReport) -> list[Window]:
    """The windows of ``source`` still to embed (all of them with ``reindex``); the rest count as already indexed.

    Both engines plan here, so they skip, resume and report alike.
    """
    skip = set() if reindex else store.existing_ids(source.ref.name)
    windows = source.windows()
    todo = [w for w in windows if source.grid.tile_id(w) not in skip]
    report.already_indexed += len(windows) - len(todo)
    return todo


def _index_source(scale: Scale, model: EmbeddingModel, job: IndexJob, labeler) -> None:
    source, store, report = scale.source, scale.store, scale.report
    todo = _plan(source, store, job.reindex, report)
    pending: list[pa.Table] = []
    pending_rows = 0
    source_crs = source.crs.to_string()
    total, done = len(todo), 0
    with _progress(total, source.ref.display_name, job.show_progress) as bar:
        for batch in _prefetch(_batches(source, model, todo, job.batch_size, source.params.min_valid, report)):
            if batch.tiles:
                vectors = model.encode_images(batch.images)
                labels = labeler.label(batch.tiles, vectors)
                pending.append(tile_rows(batch.tiles, vectors, labels, source_crs, model.dim, scale.acquired))
                pending_rows += len(batch.tiles)
                report.indexed += len(batch.tiles)
            if pending_rows >= job.write_every:
                store.upsert(pa.concat_tables(pending))
                pending, pending_rows = [], 0
            bar.update(batch.windows_done)
            done += batch.windows_done
            scale.progressed(done, total)
        if pending:
            store.upsert(pa.concat_tables(pending))


def _index_source_on_ray(scale: Scale, model: EmbeddingModel, job: IndexJob, labels: Labels) -> None:
    """Ray appends fragments and cannot replace rows: a re-index removed the raster's rows before its first
    scale (:func:`index_raster`), so the plan skips only what this run wrote."""
    from georet.index.ray_engine import WorkerModel, index_source_on_ray

    report = scale.report
    todo = _plan(scale.source, scale.store, False, report)
    done = 0

    def committed(planned: int, written: int, total: int) -> None:
        nonlocal done
        done += planned
        report.indexed += written
        report.below_min_valid += planned - written
        scale.progressed(done, total)

    worker_model = WorkerModel(model.spec, model.identity, model.dim, job.image_runtime)
    index_source_on_ray(scale.source, scale.store, todo, worker_model, labels, job, scale.acquired, committed)


def _absolute_if_file(value: str | None) -> str | None:
    if value and Path(value).expanduser().is_file():
        return str(Path(value).expanduser().resolve())
    return value
