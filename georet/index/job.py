"""One indexing run's settings as one typed object: :class:`IndexJob`.

``georet index`` has many knobs (tiling, area, labels, engine, batch sizes,
dates, the image runtime and its cores). They are checked once, when the job is made, and
the job travels whole through the pipeline and to the Ray workers, so no step
takes a dozen positional arguments and none can drop one on the way.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from georet.errors import InputError
from georet.geo import TilingParams
from georet.geo.dates import parse_date
from georet.index.rows import Labels

ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class IndexJob:
    """How to tile, label, embed and write rasters (see :func:`georet.index.index_raster` for each setting).

    Made with keywords only; a misspelt one is a ``TypeError``, a bad value an :class:`InputError`.
    """

    tiling: TilingParams = field(default_factory=TilingParams)
    #: lon/lat geometry: only the tiles that touch it (a remote raster is read only there)
    area: BaseGeometry | None = None
    #: the STAC items' asset to index
    asset: str | None = None
    batch_size: int = 32
    #: zero-shot legend file (None: the tile legend); or a land-cover layer and its class field, never both
    classes: str | Path | None = None
    landcover: str | Path | None = None
    landcover_field: str | None = None
    #: recompute tiles already in the index (and re-tile a raster indexed with other tiling)
    reindex: bool = False
    #: progress bar: None shows one when stderr is a terminal
    progress: bool | None = None
    #: rows per commit: a killed run resumes from the last one
    write_every: int = 256
    #: seconds to wait for another writer of the same index (None: as long as it takes)
    lock_timeout: float | None = None
    engine: str = "local"
    ray_address: str | None = None
    #: ISO acquisition date for every raster of the run (None: each raster's own, or unknown)
    acquired: str | None = None
    #: what runs the image side of a model loaded for this job (:func:`georet.models.load_model`)
    image_runtime: str = "auto"
    #: cores that image side's compiled graph may use (None: all): leave some to a server on the same machine
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError("batch_size", f"must be positive, got {self.batch_size}")
        if self.write_every < 1:
            raise InputError("write_every", f"must be positive, got {self.write_every}")
        if self.classes and self.landcover:
            raise InputError("classes", "use either {classes} (zero-shot) or {landcover} (your layer), not both",
                             names=("landcover",))
        if self.landcover_field and not self.landcover:
            raise InputError("landcover_field", "needs {landcover}", names=("landcover",))
        if self.engine not in ENGINES:
            raise InputError("engine", f"must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.ray_address and self.engine != "ray":
            raise InputError("ray_address", "needs {engine} ray", names=("engine",))
        if self.threads is not None and self.threads < 1:
            raise InputError("threads", f"must be positive, got {self.threads}")
        if self.threads is not None and self.engine == "ray":
            raise InputError("threads", "applies to the local {engine}: Ray gives each worker its share of cores",
                             names=("engine",))
        if self.threads is not None and self.image_runtime == "torch":
            raise InputError("threads", "applies to the compiled image side (openvino, onnxruntime), not "
                             "{image_runtime} torch", names=("image_runtime",))
        if self.acquired is not None:
            object.__setattr__(self, "acquired", parse_date(self.acquired))

    @property
    def show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else self.progress

    def labels(self, zero_shot) -> Labels:
        """How this job's tiles are labelled: by ``zero_shot`` classes, or by its land-cover layer."""
        return Labels(zero_shot, str(self.landcover) if self.landcover else None, self.landcover_field)
