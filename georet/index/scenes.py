"""Scene labels of indexed tiles, rewritten in place: propagated over each raster, or relabelled from examples.

Both run under the index's writer lock and touch only the ``scene`` and
``scene_score`` columns, so a relabel never re-embeds a tile.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from georet.geo import FewShotScenes, ZeroShotScenes, propagate_labels
from georet.index.store import TileStore, sql_string

#: tiles of one raster refined together; larger rasters are refined in runs of this many tiles, in table order
#: (the order they were written, bands of the raster, until a resume or a refinement rewrites rows), so the cost
#: per tile stays under a millisecond
REFINE_TILES = 20_000


def refine_scenes(store: TileStore, source: str, zero_shot: ZeroShotScenes | FewShotScenes) -> None:
    """Rewrite the zero-shot scenes of ``source``'s tiles after label propagation over their look-alikes
    (:func:`georet.geo.scenes.propagate_labels`): each raster's tiles vote on each other's class (caller holds
    the lock). Done per raster when it is indexed, so adding a raster leaves the others' scenes as they are."""
    rows = store.dataset.to_table(columns=["tile_id", "vector"], filter=f"source = {sql_string(source)}")
    if len(rows) < 2:
        return
    vectors = np.asarray(rows["vector"].combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(len(rows), -1)
    labels = []
    for start in range(0, len(rows), REFINE_TILES):
        chunk = vectors[start:start + REFINE_TILES]
        labels += zero_shot.labels_of(propagate_labels(chunk, zero_shot.probabilities(chunk)))
    store.update_rows(pa.table({"tile_id": rows["tile_id"], "scene": [label.scene for label in labels],
                                "scene_score": pa.array([label.score for label in labels], pa.float32())}))


def relabel_scenes(store: TileStore, labeller: FewShotScenes, examples: dict[str, int], method: str) -> dict[str, int]:
    """Rewrite the scenes of every zero-shot or few-shot source with ``labeller`` (a :class:`FewShotScenes`
    over the index's legend and the marked tiles), propagated per raster as when it was indexed, and record
    the examples in each source's entry (caller holds the lock). Sources labelled by a land-cover layer keep
    their layer's classes. Returns how many tiles each scene now has."""
    for name, entry in store.entries().items():
        if entry.labelled_by_landcover:
            continue
        refine_scenes(store, name, labeller)
        store.record_examples(name, method, examples)
    store.save_manifest()
    return dict(Counter(s for s in store.column("scene").to_pylist() if s).most_common())
