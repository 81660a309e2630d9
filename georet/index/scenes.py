"""Scene labels of indexed tiles, rewritten in place: propagated over each raster, or relabelled from examples.

Both run under the index's writer lock and touch only the ``scene`` and
``scene_score`` columns, so a relabel never re-embeds a tile.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa

from georet.errors import InputError, NotFoundError
from georet.geo import (
    TILE_LABEL_TEMPLATES,
    FewShotScenes,
    SceneClass,
    SceneExamples,
    SceneVocabulary,
    ZeroShotScenes,
    propagate_labels,
    tile_legend,
)
from georet.geo.scenes import FewShotMethod, TextEncoder
from georet.index.labels import read_labels
from georet.index.rows import vector_matrix
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
    vectors = vector_matrix(rows)
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


def index_legend(store: TileStore) -> list[SceneClass]:
    """The zero-shot classes the index's rasters were labelled with (the default tile legend if none say)."""
    labels = [c for entry in store.entries().values() if not entry.labelled_by_landcover for c in entry.classes or ()]
    if not labels:
        return tile_legend()
    words = {c.label: c.prompt_words for c in tile_legend()}
    return [SceneClass(label, words.get(label, label)) for label in dict.fromkeys(labels)]


def marked_classes(store: TileStore) -> list[str]:
    """The classes (label set names) the index was last relabelled from, as its manifest records them."""
    return list(dict.fromkeys(name for entry in store.entries().values() for name in entry.example_classes))


def few_shot_labeller(store: TileStore, text_model: TextEncoder, vocabulary: SceneVocabulary | None,
                      sets: Sequence[str], method: FewShotMethod) -> tuple[FewShotScenes, dict[str, int]]:
    """The labeller a relabel from the label sets ``sets`` uses, and the examples per class it found: the
    index's legend plus a class for each set it lacks (the set's name as its words), moved by the sets'
    right-marked tiles still in the index."""
    if not sets:
        raise InputError("sets", "name at least one label set: its right-marked tiles are examples of a class")
    examples = {name: read_labels(store.path, name).positives for name in dict.fromkeys(sets)}
    empty = [name for name, ids in examples.items() if not ids]
    if empty:
        raise InputError("sets", f"label set {empty[0]!r} marks no tile right: no example of that class")
    ids = [t for tiles in examples.values() for t in tiles]
    rows = store.dataset.to_table(columns=["tile_id", "vector"], filter="tile_id IN (" + ", ".join(
        sql_string(t) for t in dict.fromkeys(ids)) + ")")
    vectors = dict(zip(rows["tile_id"].to_pylist(), rows["vector"].to_pylist()))
    known = [(name, t) for name, tiles in examples.items() for t in tiles if t in vectors]
    if not known:
        raise NotFoundError(f"none of the marked tiles is in {store.path} any more")
    legend = index_legend(store)
    legend += [SceneClass(name, name) for name in examples if name not in {c.label for c in legend}]
    labeller = FewShotScenes(
        ZeroShotScenes(text_model, legend, TILE_LABEL_TEMPLATES, vocabulary),
        SceneExamples(tuple(n for n, _ in known), np.array([vectors[t] for _, t in known], np.float32)), method)
    return labeller, dict(Counter(n for n, _ in known))
