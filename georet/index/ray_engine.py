"""``georet index --engine ray``: read and embed tiles on a Ray cluster, write Lance fragments in place.

The driver plans (which windows of which raster are still missing), exactly as
the local engine does, so tile ids, footprints and resume are the same. Ray
Data then streams the plan through map tasks on worker processes that each
keep a model (one GPU each where the cluster has GPUs) and open the raster
themselves, reading their windows by range, and lance-ray's ``write_lance``
appends the rows to the index's own Lance table as new fragments: the driver
never sees a pixel or a vector.

Rows are committed every :data:`COMMIT_TILES` planned tiles, so a killed run
keeps what was committed and a re-run plans only the rest. georet writes no
scheduler of its own: placement, back-pressure and retries are Ray's.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
from rasterio.windows import Window

from georet.errors import GeoretError, InputError
from georet.geo import BandStretch, RasterRef, RasterSource, TilingParams, open_landcover
from georet.index.rows import Labels, tile_rows
from georet.index.store import TileStore, sql_string, tile_schema
from georet.models import ModelSpec

if TYPE_CHECKING:
    from georet.index.job import IndexJob

#: Tiles per Lance commit: what a killed run can lose (and one Ray Data execution each).
COMMIT_TILES = 20_000
#: Windows per Ray Data block: how finely the plan spreads over workers.
WINDOWS_PER_BLOCK = 64
_CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class WorkerModel:
    """The driver's model as a worker rebuilds it: its spec and image runtime, and the identity and width the
    rebuilt one must have."""

    spec: ModelSpec
    identity: dict
    dim: int
    image_runtime: str = "auto"


@dataclass(frozen=True)
class RasterTask:
    """What a worker needs to embed windows of one raster: the model, where it runs, the raster as the
    driver opened it (bands, band stretch) and how its tiles are labelled."""

    model: WorkerModel
    device: str
    threads: int
    ref: RasterRef
    tiling: TilingParams
    labels: Labels
    stretch: BandStretch | None

    def key(self) -> tuple:
        """What a kept model and raster serve: a task with another key builds its own."""
        return (self.model.spec, self.device, self.ref.name, json.dumps(self.tiling.to_dict()),
                self.model.image_runtime)


class _Worker:
    """What one Ray worker process keeps between tasks: a model, one open raster and its labeler.

    Ray reuses worker processes, so each builds its model once per raster (the
    actor pattern) while map tasks stay plain tasks: Ray Data's restartable
    map actors make the driver log an error line on every run
    (ray-project/ray#53727), and the knobs that would turn that off are deprecated.
    """

    current: "_Worker | None" = None

    def __init__(self, task: RasterTask):
        from georet.models import has_torch, load_model

        self.key = task.key()
        if has_torch():  # for image_runtime torch; the ONNX image side is told its share below
            import torch

            torch.set_num_threads(task.threads)
        wanted = task.model
        self.model = load_model(wanted.spec, device=task.device, image_runtime=wanted.image_runtime,
                                threads=task.threads)
        if self.model.identity != wanted.identity:
            raise GeoretError("a Ray worker built another model than the driver (different weights on that node?)")
        # the driver's bands and stretch: not sampled again
        self.source = RasterSource(task.ref, task.tiling, stretch=task.stretch).__enter__()
        labels = task.labels
        self.labeler = labels.zero_shot or open_landcover(labels.landcover, labels.landcover_field,
                                                          self.source.dataset, self.source.crs)

    @classmethod
    def for_task(cls, task: RasterTask) -> "_Worker":
        """The worker state for a task's raster: kept from the last task, or built (once per raster)."""
        if cls.current is None or cls.current.key != task.key():
            if cls.current is not None:
                cls.current.close()
            cls.current = None  # drop the old model before building the next
            cls.current = cls(task)
        return cls.current

    def close(self) -> None:
        if hasattr(self.labeler, "close"):  # a land-cover layer; the zero-shot labeler holds no files
            self.labeler.close()
        self.source.__exit__(None, None, None)

    def rows(self, batch: dict[str, np.ndarray], acquired: str | None) -> pa.Table:
        # each read enters GDAL's options in the thread Ray runs it on (RasterSource keeps none open)
        tiles = [self.source.read(Window(int(c), int(r), int(w), int(h)))
                 for c, r, w, h in zip(batch["col"], batch["row"], batch["width"], batch["height"])]
        min_valid = self.source.params.min_valid
        tiles = [t for t in tiles if t.valid_fraction >= min_valid and t.valid_fraction > 0.0]
        if not tiles:
            return tile_schema(self.model.dim).empty_table()
        vectors = self.model.encode_images(self.model.preprocess.apply(np.stack([t.pixels for t in tiles])))
        return tile_rows(tiles, vectors, self.labeler.label(tiles, vectors), self.source.crs.to_string(),
                         self.model.dim, acquired)


def _embed_windows(batch: dict[str, np.ndarray], task: RasterTask, acquired: str | None) -> pa.Table:
    """Ray map task: planned windows of a raster acquired on ``acquired`` → index rows."""
    return _Worker.for_task(task).rows(batch, acquired)


def connect(address: str | None) -> dict[str, float]:
    """Join the Ray cluster at ``address`` (or start Ray on this machine) and say what it offers."""
    import ray

    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise GeoretError(f"cannot reach the Ray cluster at {address}: {first}") from None
    return ray.cluster_resources()


def index_source_on_ray(source: RasterSource, store: TileStore, windows: list[Window], model: WorkerModel,
                        labels: Labels, job: IndexJob, acquired: str | None,
                        on_committed: Callable[[int, int, int], None]) -> None:
    """Embed the planned ``windows`` of ``source`` (tiles not in the table yet, of a raster acquired on
    ``acquired``) with ``model`` as ``job`` says, on Ray, and append them to ``store``'s table.

    ``on_committed(planned, written, total)`` is called after every commit.
    """
    resources = connect(job.ray_address)
    import lance_ray
    import ray.data

    threads = _threads_per_worker(resources.get("CPU", 1.0))
    name = source.ref.name
    gpus = resources.get("GPU", 0.0)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = job.show_progress
    context.print_on_execution_start = False
    total = len(windows)
    task = RasterTask(model, "cuda" if gpus >= 1 else "cpu", threads, source.ref, source.params, labels,
                      source.band_stretch)
    for start in range(0, total, COMMIT_TILES):
        chunk = windows[start:start + COMMIT_TILES]
        plan = ray.data.from_items(
            [{"col": int(w.col_off), "row": int(w.row_off), "width": int(w.width), "height": int(w.height)}
             for w in chunk], override_num_blocks=max(1, len(chunk) // WINDOWS_PER_BLOCK))
        rows = plan.map_batches(
            _embed_windows, batch_size=job.batch_size, batch_format="numpy",
            num_gpus=1 if gpus >= 1 else 0, num_cpus=1 if gpus >= 1 else threads,
            fn_kwargs={"task": task, "acquired": acquired})
        before = store.count(f"source = {sql_string(name)}")
        lance_ray.write_lance(rows, store.table_uri, schema=tile_schema(model.dim), mode="append")
        store.refresh()
        written = store.count(f"source = {sql_string(name)}") - before
        on_committed(len(chunk), written, total)


def _check_reachable(address: str | None) -> None:
    """Fail in seconds, not never: Ray waits for an unreachable cluster indefinitely."""
    if not address or address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except ValueError:
        raise InputError("ray_address", f"must look like HOST:PORT, ray://HOST:PORT or auto; got {address!r}") from None
    except OSError as exc:
        raise GeoretError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _threads_per_worker(cpus: float) -> int:
    """CPU workers get a few cores each (``GEORET_RAY_THREADS``, default 2): torch spreads one batch over
    them, and fewer model copies fit in memory than one per core."""
    return max(1, min(int(cpus), int(os.environ.get("GEORET_RAY_THREADS", "2"))))
