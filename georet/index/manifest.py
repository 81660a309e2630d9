"""A raster's record in an index's manifest (``georet.json``), typed: :class:`SourceEntry` and its :class:`Grid`.

The manifest stays plain JSON on disk (one flat object per source, readable by
anyone), but nothing outside :mod:`georet.index.store` reads its keys: indexing,
search, the web map's imagery and repair all go through these types, so a key
is spelt in one place and an entry with a key this georet does not know is
refused, not half-read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from georet.errors import GeoretError

COMPLETE, INCOMPLETE = "complete", "incomplete"
#: an entry's reason while its raster is being written (or after a writer died mid-raster)
IN_PROGRESS = "indexing started but did not finish (interrupted?); re-run `georet index` to resume"
#: how a source's scenes were labelled: by the legend, by the legend and marked examples, or by a user layer
ZERO_SHOT, FEW_SHOT, LANDCOVER_PREFIX = "zero-shot", "few-shot", "landcover:"


@dataclass(frozen=True)
class Grid:
    """A raster's tile grid at one scale: its shape and CRS, the bands read, tile and stride in pixels, and
    the tile's ground size."""

    crs: str
    width: int
    height: int
    bands: tuple[int, ...]
    tile_px: int
    stride_px: int
    #: None in entries written before georet recorded it
    tile_m: float | None = None

    @property
    def overlapping(self) -> bool:
        """Tiles closer than their size: one place is covered by several tiles."""
        return self.stride_px < self.tile_px

    def to_dict(self) -> dict[str, Any]:
        return {"crs": self.crs, "width": self.width, "height": self.height, "bands": list(self.bands),
                "tile_px": self.tile_px, "stride_px": self.stride_px, "tile_m": self.tile_m}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Grid":
        return cls(crs=raw["crs"], width=int(raw["width"]), height=int(raw["height"]),
                   bands=tuple(int(b) for b in raw["bands"]), tile_px=int(raw["tile_px"]),
                   stride_px=int(raw["stride_px"]),
                   tile_m=float(raw["tile_m"]) if raw.get("tile_m") is not None else None)


@dataclass(frozen=True, kw_only=True)
class SourceEntry:
    """One raster in the index: how it was tiled (``grid``, its first scale, and every scale when there are
    several), labelled (``scenes``, ``classes``, ``scene_examples``) and dated, where it came from (``href``
    when not its name, its STAC item, the ``area`` it was limited to, as WKT) and whether it is wholly
    written (``state``; ``rows`` counted when it was)."""

    grid: Grid
    #: the TilingParams it was tiled with (:meth:`georet.geo.TilingParams.to_dict`)
    tiling: dict[str, Any] = field(default_factory=dict)
    scales: tuple[Grid, ...] = ()
    scenes: str = ZERO_SHOT
    classes: tuple[str, ...] | None = None
    #: the few-shot relabelling it last had: {"method": ..., "examples": {class: count}}
    scene_examples: dict[str, Any] | None = None
    acquired: str | None = None
    acquired_from: str | None = None
    area: str | None = None
    href: str | None = None
    stac: dict[str, Any] | None = None
    #: manifests written before states existed hold only complete rasters
    state: str = COMPLETE
    reason: str | None = None
    rows: int | None = None

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def grids(self) -> tuple[Grid, ...]:
        """Every scale it was tiled at (one grid for a single scale)."""
        return self.scales or (self.grid,)

    @property
    def labelled_by_landcover(self) -> bool:
        return self.scenes.startswith(LANDCOVER_PREFIX)

    @property
    def example_classes(self) -> tuple[str, ...]:
        """The classes (label sets) it was last relabelled from."""
        return tuple((self.scene_examples or {}).get("examples", {}))

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object the manifest keeps (the grid's keys at the top level, as format 1 has them)."""
        out: dict[str, Any] = {**self.grid.to_dict(), "tiling": self.tiling,
                               "scenes": self.scenes, "classes": list(self.classes) if self.classes is not None else None,
                               "acquired": self.acquired, "acquired_from": self.acquired_from, "area": self.area,
                               "state": self.state, "reason": self.reason}
        if self.scales:
            out["scales"] = [g.to_dict() for g in self.scales]
        for name in ("href", "stac", "rows", "scene_examples"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "the manifest") -> "SourceEntry":
        """The entry of a manifest's JSON object; a key it does not know, or a grid it lacks, is a one-line
        :class:`GeoretError` naming ``where``."""
        unknown = sorted(set(raw) - _KEYS - _RETIRED_KEYS)
        if unknown:
            raise GeoretError(f"{where}: unknown key {unknown[0]!r} in a source entry (written by a newer georet?)")
        try:
            grid = Grid.from_dict(raw)
            scales = tuple(Grid.from_dict(g) for g in raw.get("scales") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise GeoretError(f"{where}: a source entry's grid is incomplete or malformed ({exc})") from None
        classes = raw.get("classes")
        return cls(grid=grid, tiling=dict(raw.get("tiling") or {}), scales=scales,
                   scenes=str(raw.get("scenes") or ZERO_SHOT),
                   classes=tuple(classes) if classes is not None else None,
                   scene_examples=raw.get("scene_examples"), acquired=raw.get("acquired"),
                   acquired_from=raw.get("acquired_from"), area=raw.get("area"), href=raw.get("href"),
                   stac=raw.get("stac"), state=raw.get("state", COMPLETE), reason=raw.get("reason"),
                   rows=raw.get("rows"))


_KEYS = ({f.name for f in fields(SourceEntry)} - {"grid"}) | {f.name for f in fields(Grid)}
#: keys format-1 entries once held and no longer mean anything: read past, never written (``tiles``: the tile
#: count, which the table keeps since 2026-11)
_RETIRED_KEYS = {"tiles"}
