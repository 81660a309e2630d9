"""Every tile of an index in memory: vectors, footprints as metric rectangles, scenes.

Relational scoring needs all tiles at once (z-scores over the whole index,
partners anywhere on the map), which a vector search cannot give; the catalog
is read once and kept until the table's version changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import shapely

from georet.geo import SceneClass, classes_for_labels
from georet.index import TileStore

EARTH_RADIUS_M = 6_371_008.8
#: Tiles whose scores estimate a phrase's mean and standard deviation in very large indexes: the
#: estimates' standard errors are then ~1 % of a standard deviation, far below what reorders hits.
STATS_SAMPLE = 16_384


class TileGeometry:
    """Every tile's footprint as a metric rectangle, with a spatial index over them.

    Distances are metres in a sinusoidal projection centred on the index: exact
    along parallels and meridians, and within a fraction of a percent for
    neighbouring tiles of one region (not meant for indexes spanning continents).
    """

    def __init__(self, minx: np.ndarray, miny: np.ndarray, maxx: np.ndarray, maxy: np.ndarray):
        lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
        lon0 = np.degrees(np.angle(np.exp(1j * np.radians(lon)).mean())) if len(lon) else 0.0
        coslat = np.cos(np.radians(lat))
        scale = np.pi / 180 * EARTH_RADIUS_M
        self.x = ((lon - lon0 + 180) % 360 - 180) * coslat * scale
        self.y = lat * scale
        self.half_w = (maxx - minx) / 2 * coslat * scale
        self.half_h = (maxy - miny) / 2 * scale
        self.tree = shapely.STRtree(shapely.box(self.x - self.half_w, self.y - self.half_h,
                                                self.x + self.half_w, self.y + self.half_h))

    @cached_property
    def tile_side_m(self) -> float:
        """Median tile side in metres (the default "near" distance is a fraction of it)."""
        return float(np.median(np.concatenate([2 * self.half_w, 2 * self.half_h]))) if len(self.x) else 0.0

    def gap(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Distance in metres between the footprints of tiles i and j (0 when they touch or overlap)."""
        dx = np.maximum(0.0, np.abs(self.x[i] - self.x[j]) - self.half_w[i] - self.half_w[j])
        dy = np.maximum(0.0, np.abs(self.y[i] - self.y[j]) - self.half_h[i] - self.half_h[j])
        return np.hypot(dx, dy)

    def pairs_within(self, subjects: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
        """(subject, other) index pairs whose footprints lie within ``distance`` metres.

        The tree returns envelope hits of the subject boxes grown by ``distance``
        (no GEOS predicate, which is the slow part); the exact rectangle gap
        then decides.
        """
        grown = shapely.box(self.x[subjects] - self.half_w[subjects] - distance,
                            self.y[subjects] - self.half_h[subjects] - distance,
                            self.x[subjects] + self.half_w[subjects] + distance,
                            self.y[subjects] + self.half_h[subjects] + distance)
        hit_query, other = self.tree.query(grown)
        subject = subjects[hit_query]
        keep = self.gap(subject, other) <= distance
        return subject[keep], other[keep]


@dataclass
class TileCatalog:
    """All vectors and footprints of an index in memory, for relational scoring."""

    version: int
    tile_ids: list[str]
    vectors: np.ndarray  # (n, dim) float32, unit length
    bounds: np.ndarray  # (n, 4) minx, miny, maxx, maxy in EPSG:4326
    scenes: np.ndarray  # (n,) object: scene label or "" / None
    geometry: TileGeometry
    dataset: object = None  # the Lance dataset at ``version``: row i of the catalog is its row i

    def positions(self, tile_ids: Sequence[str]) -> np.ndarray:
        """Catalog positions of tiles by id (ids a search of the same table version returned)."""
        return np.array([self.index_of[t] for t in tile_ids], dtype=int)

    def rows(self, positions: Sequence[int], columns: Sequence[str]) -> dict[int, dict]:
        """Stored columns of some catalog rows, by position: a random-access read of k rows, where a
        filter on tile ids would scan the whole id column (100+ ms at a million tiles)."""
        wanted = sorted({int(p) for p in positions})
        if not wanted:
            return {}
        table = self.dataset.take(wanted, columns=list(columns))
        return dict(zip(wanted, table.to_pylist()))

    def __len__(self) -> int:
        return len(self.tile_ids)

    @cached_property
    def index_of(self) -> dict[str, int]:
        """Row of each tile id in the catalog."""
        return {tile_id: i for i, tile_id in enumerate(self.tile_ids)}

    @cached_property
    def stats_vectors(self) -> np.ndarray:
        """The vectors of a fixed random sample of at most :data:`STATS_SAMPLE` tiles, to estimate the mean and
        spread of a phrase's scores (kept: gathering them costs more than scoring them)."""
        n = len(self)
        if n <= STATS_SAMPLE:
            return self.vectors
        return self.vectors[np.sort(np.random.default_rng(0).choice(n, STATS_SAMPLE, replace=False))]

    @cached_property
    def scene_classes(self) -> list[SceneClass]:
        """The distinct scene labels of the tiles, sorted, with their prompt words."""
        return classes_for_labels(self.scenes)

    @cached_property
    def scene_codes(self) -> np.ndarray:
        """Each tile's position in :attr:`scene_classes`; -1 for a tile without scene."""
        column = {c.label: i for i, c in enumerate(self.scene_classes)}
        return np.array([column.get(str(s), -1) if s else -1 for s in self.scenes], dtype=int)

    @classmethod
    def read(cls, store: TileStore) -> "TileCatalog":
        """Read the catalog of the table's current version."""
        version = store.table.version
        dataset = store.table.to_lance()
        table = dataset.to_table(columns=["tile_id", "vector", "minx", "miny", "maxx", "maxy", "scene"])
        ids = table["tile_id"].to_pylist()
        vectors = np.asarray(table["vector"].combine_chunks().flatten().to_numpy(), dtype=np.float32)
        bounds = np.column_stack([table[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy")]).reshape(len(ids), 4)
        return cls(version, ids, vectors.reshape(len(ids), -1) if len(ids) else np.zeros((0, 0), np.float32),
                   bounds, np.asarray(table["scene"].to_pylist(), dtype=object), TileGeometry(*bounds.T), dataset)
