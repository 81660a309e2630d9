"""Text and example tiles → ranked tiles as a GeoDataFrame: the query side of georet.

A text-only search is a LanceDB vector search. A search with examples ("more
like this", "not this", saved label sets) scores every tile of the in-memory
catalog instead (:mod:`georet.search.feedback`), because its query can be a
classifier rather than one vector. Either result can be cut at a score and
dissolved into regions of touching tiles.

Spatial filters run in two steps because LanceDB has no geometry predicates:
a prefilter on the ``minx/miny/maxx/maxy`` columns inside the vector search,
then an exact shapely intersection test on the footprints. If the exact test
removes candidates, the search is widened until ``k`` hits are found or the
candidates run out.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import geopandas as gpd
import numpy as np
import shapely

from georet.errors import GeoretError, InputError, NotFoundError
from georet.geo.scenes import FewShotMethod
from georet.index import (
    ANN_REFINE_FACTOR,
    AUTO_VECTOR_INDEX_ROWS,
    LabelSet,
    TileStore,
    delete_labels,
    label_sets,
    read_labels,
    save_labels,
    sql_string,
)
from georet.index.scenes import few_shot_labeller, marked_classes, relabel_scenes
from georet.models import QueryTextEncoder
from georet.search.catalog import TileCatalog
from georet.search.feedback import (
    PSEUDO_FEEDBACK_PLACES,
    SCORE_KINDS,
    Examples,
    Scorer,
    pseudo_feedback_query,
    score_tiles,
    touching_groups,
)
from georet.search.filters import TileFilter
from georet.search.imagery import ImageryLayers
from georet.search.nearest import NearestTiles, top_rows
from georet.search.phrase_search import change_frame, relational_frame
from georet.search.query_cache import QueryVectorCache, ResultCache
from georet.search.query_text import QueryEncoder
from georet.search.relations import (
    SCENE_PRIOR_WEIGHT,
    Change,
    parse_query,
    subject_candidates,
)
from georet.search.request import Example, SearchRequest
from georet.search.results import (
    OVERLAP_FETCH,
    REGION_COLUMNS,
    ROW_COLUMNS,
    collapse_overlaps,
    distinct_places,
    to_frame,
)
from georet.search.wording import class_name, names_a_thing

if TYPE_CHECKING:
    from georet.models import EmbeddingModel

#: From this many tiles (with a vector index) relational queries take their subjects from the
#: :data:`RELATIONAL_POOL` nearest tiles to the subject phrase instead of scoring every tile
#: (benchmarks/ann.py serve measures both and their agreement).
RELATIONAL_POOL_ROWS = AUTO_VECTOR_INDEX_ROWS
RELATIONAL_POOL = 1_000
#: Tiles closer than this fraction of a tile side count as touching when hits are dissolved.
_TOUCH_TOLERANCE = 0.01

class GeoIndex:
    """A georet index opened for searching. Get one with :func:`open_index`."""

    def __init__(self, store: TileStore, device: str = "auto", pretrained: str | None = None,
                 checkpoint: str | None = None, model: EmbeddingModel | None = None,
                 query_cache: QueryVectorCache | None = None):
        self.store = store
        #: query words → vectors, with the index's own model (checked against it)
        self.queries = QueryEncoder(store, device, {"pretrained": pretrained, "checkpoint": checkpoint}, model,
                                    query_cache)
        self._results = ResultCache()
        self._catalog: TileCatalog | None = None
        self._imagery = ImageryLayers(store)
        self._nearest = NearestTiles(store, self.catalog, lambda: self._catalog)
        self._info: tuple[tuple, dict[str, Any]] | None = None  # (table version and manifest, what info says)

    @property
    def path(self) -> Path:
        return self.store.path

    def __len__(self) -> int:
        self.store.refresh()
        return self.store.count()

    def __repr__(self) -> str:
        return f"GeoIndex({str(self.path)!r}, tiles={len(self)})"

    @property
    def model(self) -> EmbeddingModel:
        """The model the index was built with, loaded on first use."""
        return self.queries.model

    @property
    def text_model(self) -> EmbeddingModel | QueryTextEncoder:
        """What encodes query text: the torch-free encoder when the index's model has one
        (:mod:`georet.models.text_query`: a cold query skips importing torch), else :attr:`model`."""
        return self.queries.text_model

    def info(self) -> dict[str, Any]:
        """Summary of the index: tile count, model, sources, scenes; counted once per table version and
        manifest (each count scans a column: ~0.2 s at a million tiles, under the server's one lock)."""
        self.store.refresh()
        key = (self.store.version, json.dumps(self.store.manifest, sort_keys=True, default=str))
        if self._info is None or self._info[0] != key:
            self._info = (key, self._count_info())
        return self._info[1]

    def _count_info(self) -> dict[str, Any]:
        manifest = self.store.manifest
        return {
            "path": str(self.path),
            "tiles": self.store.count(),
            "model": {**manifest["model"]["spec"], **manifest["model"]["identity"]},
            "sources": self.store.sources(),
            "scenes": self.store.scenes(),
            "dates": sorted({entry.acquired for entry in self.store.entries().values() if entry.acquired}),
            "created": manifest.get("created"),
            "updated": manifest.get("updated"),
        }

    def search(self, text: str | None = None, k: int = 10, bbox: str | Sequence[float] | None = None,
               bbox_crs: str | None = None, within=None, scene: str | None = None,
               relational: bool = True, near: str | float | None = None,
               scene_prior: float | None = None, *, like: Sequence[Example] | None = None,
               unlike: Sequence[Example] | None = None, labels: str | None = None,
               min_score: float | None = None, dissolve: bool = False, scorer: Scorer = "auto",
               when: str | None = None, from_date: str | None = None, to_date: str | None = None
               ) -> gpd.GeoDataFrame:
        """Tiles ranked by similarity to ``text`` and/or example tiles, optionally inside an area and of one scene.

        The options are those of :class:`~georet.search.request.SearchRequest`
        (checked there); :meth:`run` takes a request made elsewhere. Returns a
        GeoDataFrame in EPSG:4326 with columns :data:`RESULT_COLUMNS` + geometry;
        ``frame.attrs["score_kind"]`` says what ``score`` means. For text alone it
        is the cosine similarity between the query and the tile. A relational
        query ("airport near river", see :mod:`georet.search.relations`) is
        scored on the footprints instead, unless ``relational=False``; its hits
        also carry their partner tiles and distances. With examples the text is
        embedded as one sentence and combined with them (``scorer``: Rocchio or
        a linear probe, see :mod:`georet.search.feedback`); example tiles are
        never returned. ``dissolve`` returns regions (:data:`REGION_COLUMNS`).

        ``when`` keeps tiles acquired then (``2016``, ``2015/2020``). A change query ("farmland that
        became housing", "new houses", "forest that was cleared"; :mod:`georet.search.change`) pairs the
        tiles of one place at two dates, by default its earliest and latest, or the ones of
        ``from_date`` and ``to_date``; its hits are the later tiles, with the earlier one's id and date.
        """
        return self.run(SearchRequest(
            text=text, k=k, bbox=bbox, bbox_crs=bbox_crs, within=within, scene=scene, relational=relational,
            near=near, scene_prior=scene_prior, like=like or (), unlike=unlike or (), labels=labels,
            min_score=min_score, dissolve=dissolve, scorer=scorer, when=when, from_date=from_date, to_date=to_date))

    def run(self, request: SearchRequest) -> gpd.GeoDataFrame:
        """The hits of a checked :class:`SearchRequest` (see :meth:`search`); a request asked before of the
        table as it is now is answered from the result cache."""
        self.store.refresh()  # rows other processes added since this index was opened
        unfinished = self.store.unfinished_sources()  # the manifest is read before the table (filters.py)
        result_key = ResultCache.key(request, (self.store.version, unfinished))
        cached = self._results.get(result_key)
        if cached is not None:
            return cached
        like, unlike = list(request.like), list(request.unlike)
        if request.labels is None and not like and not unlike and request.text:
            like = self._class_examples(request.text)
        if request.labels is not None:
            saved = read_labels(self.path, request.labels)
            like, unlike = like + saved.positives, unlike + saved.negatives
            if request.text is None and not like:
                raise InputError("labels", f"label set {request.labels!r} marks no tile right: nothing to search for")
        fetch_factor = self._overlap_fetch_factor()
        overlapping = fetch_factor > 1
        # neighbours of an overlapping index show the same place: ask for more, keep the best of each place
        fetch = request.k * fetch_factor
        if like or unlike:
            hits = self._example_search(request.text, like, unlike, fetch, TileFilter.of(request, unfinished),
                                        request.scorer)
        else:
            hits = self._text_search(request, fetch, unfinished)
        if overlapping:
            hits = collapse_overlaps(hits, request.k)
        if request.min_score is not None:  # scores fall with rank, so this cuts the tail
            kept = hits[hits["score"] >= request.min_score].reset_index(drop=True)
            kept.attrs = dict(hits.attrs)
            hits = kept
        hits = self._dissolve(hits) if request.dissolve else hits
        self._results.put(result_key, hits)
        return hits

    def similar(self, tile_id: str, k: int = 10, **options: Any) -> gpd.GeoDataFrame:
        """The ``k`` tiles most like one tile of the index (the tile itself is not among them)."""
        return self.search(like=[tile_id], k=k, **options)

    def label(self, name: str, positive: Sequence[str] = (), negative: Sequence[str] = (),
              who: str | None = None) -> LabelSet:
        """Mark tiles right (``positive``) or wrong in label set ``name``; every id must be a tile of the index."""
        known = {row["tile_id"] for row in self.fetch_rows([*positive, *negative])}  # those rows, not the catalog
        unknown = [t for t in [*positive, *negative] if t not in known]
        if unknown:
            raise NotFoundError(f"no tile {unknown[0]!r} in {self.path}")
        return save_labels(self.path, name, positive, negative, who=who)

    def label_sets(self) -> dict[str, LabelSet]:
        """The label sets saved in the index, by name."""
        return {name: read_labels(self.path, name) for name in label_sets(self.path)}

    def clear_labels(self, name: str) -> None:
        delete_labels(self.path, name)

    def relabel(self, sets: Sequence[str], method: FewShotMethod = "prototype",
                lock_timeout: float | None = None) -> dict[str, int]:
        """Relabel every tile's scene from a few marked tiles: each label set in ``sets`` names a class, its
        right-marked tiles are examples of it ("this tile is a forest"). The index's legend (or the default
        tile legend) plus the examples label every zero-shot raster again (:class:`~georet.geo.FewShotScenes`,
        then propagated per raster); a set naming no class of the legend adds that class, in the set's name
        as its words. Returns the tiles per scene.
        """
        labeller, examples = few_shot_labeller(self.store, self.text_model, self.queries.vocabulary, sets, method)
        with self.store.writing(lock_timeout):
            counts = relabel_scenes(self.store, labeller, examples, method)
        self._catalog = None
        return counts

    def mark_scene(self, tile_id: str, scene: str, who: str | None = None,
                   method: FewShotMethod = "prototype") -> dict[str, int]:
        """"This tile is a ``scene``": the tile joins the examples of that class (label set ``scene``) and the
        index is relabelled from every class that has examples (see :meth:`relabel`)."""
        self.label(scene, positive=[tile_id], who=who)
        return self.relabel([*marked_classes(self.store), scene], method=method)

    def _class_examples(self, text: str) -> list[str]:
        """The example tiles of the class a short query names, when :meth:`relabel` was given some ("forest",
        "the sea"): the search is then steered by them as by ``like`` (empty when none)."""
        name = class_name(text)
        if name is None:
            return []
        for label in marked_classes(self.store):
            if label.lower().replace(" ", "").replace("_", "") == name.replace("_", ""):
                with contextlib.suppress(NotFoundError):  # the set was deleted since
                    return read_labels(self.path, label).positives
        return []

    def label_layer(self, name: str) -> gpd.GeoDataFrame:
        """A saved set as a layer: each marked tile's footprint with its mark, who marked it and when."""
        saved = read_labels(self.path, name)
        rows = {r["tile_id"]: r for r in self.fetch_rows([label.tile_id for label in saved.labels])}
        present = [label for label in saved.labels if label.tile_id in rows]  # tiles removed since are left out
        return gpd.GeoDataFrame(
            [{"tile_id": label.tile_id, "mark": label.mark, "who": label.who, "when": label.when,
              "source": rows[label.tile_id]["source"], "scene": rows[label.tile_id]["scene"]} for label in present],
            columns=["tile_id", "mark", "who", "when", "source", "scene"],
            geometry=shapely.from_wkb([rows[label.tile_id]["geometry"] for label in present]) if present else [],
            crs="EPSG:4326")

    def _text_search(self, request: SearchRequest, k: int, unfinished: frozenset[str]) -> gpd.GeoDataFrame:
        """A text query: relational when it reads like one, else the nearest tiles by one of three strategies."""
        text, scene, where = request.text, request.scene, TileFilter.of(request, unfinished)
        relation = parse_query(text) if request.relational else None
        prior = SCENE_PRIOR_WEIGHT if request.scene_prior is None else request.scene_prior
        if (request.from_range or request.to_range) and not isinstance(relation, Change):
            raise InputError("from_date", "{from_date}/{to_date} choose the dates a change query compares "
                             "(\"farmland that became housing\", \"new houses\"); filter any search by date "
                             "with {when}", names=("to_date", "when"))
        if relation is not None and scene is not None:
            self._check_scene(scene)
        if isinstance(relation, Change):
            return change_frame(relation, k, request, prior, where, self.catalog(), self.queries)
        if relation is not None:
            return relational_frame(relation, k, request.near_m, where, prior, self.catalog(), self.queries,
                                    self._subject_pool)
        if where.keeps_none:
            return _with_kind(to_frame([]), "text")
        query = self.queries.embed([text])[0]
        name = names_a_thing(text)
        pool = None
        if name:  # its best places stand in for examples marked right
            pool = self._feedback_pool(query, k, where)
            query = pseudo_feedback_query(query, self._best_places(query, where, pool))
        hits = self._nearest.hits(query, k, where, pool=pool)
        if not hits and scene is not None:  # checked only here: listing scenes reads a whole column
            self._check_scene(scene)
        return _with_kind(to_frame(hits), "pseudo-feedback" if name else "text")

    def _feedback_pool(self, query: np.ndarray, k: int, where: TileFilter) -> np.ndarray | None:
        """Where the vector index answers (warm, no filter): the candidates of one index search that both of
        pseudo-feedback's rankings (the query's best places, then the moved query's hits) re-rank exactly. The
        moved query lies between the query and its best places, so its nearest tiles are among the query's
        candidates: the same top 10 in the same order as a second index search on 30 names at a million tiles
        (``experiments/fast_queries``), one index search fewer. None elsewhere (each ranking is exact)."""
        if not (self._nearest.catalog_is_current() and self._nearest.has_vector_index() and where.keeps_all):
            return None
        wanted = max(k, PSEUDO_FEEDBACK_PLACES * self._overlap_fetch_factor())
        return self.catalog().candidates(query, wanted * ANN_REFINE_FACTOR)

    def _best_places(self, query: np.ndarray, where: TileFilter, pool: np.ndarray | None = None) -> np.ndarray:
        """Vectors (n, dim) of the :data:`PSEUDO_FEEDBACK_PLACES` best eligible places for ``query``: of tiles
        that show one place (overlapping, or of several sizes) only the best counts."""
        tiles = self._nearest.hits(query, PSEUDO_FEEDBACK_PLACES * self._overlap_fetch_factor(), where,
                                   with_vectors=True, pool=pool)
        kept = distinct_places(shapely.from_wkb([tile["geometry"] for tile in tiles]), PSEUDO_FEEDBACK_PLACES)
        return np.array([tiles[i]["vector"] for i in kept], dtype=np.float32).reshape(len(kept), len(query))

    def _example_search(self, text: str | None, like: list, unlike: list, k: int, where: TileFilter,
                        scorer: Scorer) -> gpd.GeoDataFrame:
        """Score every tile of the catalog against the text and the examples; the top ``k`` eligible ones."""
        catalog = self.catalog()
        positives, positive_ids = self._embed_examples(like, catalog)
        negatives, negative_ids = self._embed_examples(unlike, catalog)
        query = self.queries.embed([text])[0] if text else None
        scores, rank_key, kind = score_tiles(catalog.vectors, query, Examples(positives, negatives), scorer)
        eligible = where.mask(catalog)
        for tile_id in positive_ids | negative_ids:
            eligible[catalog.index_of[tile_id]] = False
        return _with_kind(to_frame(top_rows(catalog, scores, rank_key, eligible, k, where)), kind)

    def _embed_examples(self, items: list, catalog: TileCatalog) -> tuple[np.ndarray, set[str]]:
        """Vectors of examples (tile ids from the catalog; images through the model) and the tile ids among them."""
        vectors, tile_ids, pixels = [], set(), []
        for item in items:
            if isinstance(item, str) and item in catalog.index_of:
                vectors.append(catalog.vectors[catalog.index_of[item]])
                tile_ids.add(item)
            elif isinstance(item, (str, Path)):
                if not Path(item).is_file():
                    raise GeoretError(f"{item!r} is neither a tile id of {self.path} nor an image file")
                from georet.geo import RasterSource

                pixels.append(RasterSource.read_image(item))
            else:
                pixels.append(_as_pixels(item))
        for image in pixels:  # one at a time: example images may differ in size
            vectors.append(self.model.encode_images(self.model.preprocess.apply(image[None]))[0])
        dim = catalog.vectors.shape[1] if len(catalog) else self.text_model.dim
        return (np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim), tile_ids)

    def _dissolve(self, hits: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """Touching hits merged into regions: best and mean score, tile count, member ids; best region first."""
        kind = hits.attrs.get("score_kind")
        if hits.empty:
            return _with_kind(gpd.GeoDataFrame(columns=REGION_COLUMNS, geometry=[], crs="EPSG:4326"), kind)
        catalog = self.catalog()
        members = np.array([catalog.index_of[t] for t in hits["tile_id"]])
        side = catalog.geometry.tile_side_m
        subject, other = catalog.geometry.pairs_within(members, _TOUCH_TOLERANCE * side)
        position = {tile: i for i, tile in enumerate(members)}
        pairs = [(position[a], position[b]) for a, b in zip(subject, other) if b in position]
        groups = touching_groups(len(hits), (np.array([a for a, _ in pairs], dtype=int),
                                             np.array([b for _, b in pairs], dtype=int)))
        regions = []
        for group in dict.fromkeys(groups):  # in rank order of each region's best tile
            rows = hits[groups == group]
            regions.append({"best_score": float(rows["score"].max()), "mean_score": float(rows["score"].mean()),
                            "tiles": len(rows), "tile_ids": ",".join(rows["tile_id"]),
                            "geometry": shapely.union_all(rows.geometry.values)})
        regions.sort(key=lambda r: -r["best_score"])
        frame = gpd.GeoDataFrame([{"region": i + 1, **r} for i, r in enumerate(regions)],
                                 columns=[*REGION_COLUMNS, "geometry"], geometry="geometry", crs="EPSG:4326")
        return _with_kind(frame, kind)

    def _overlap_fetch_factor(self) -> int:
        """How many times k hits a search fetches before keeping each place's best: 1 where tiles only touch,
        :data:`OVERLAP_FETCH` where a source was tiled with a stride below its tile size, and that times the
        area ratio of its largest to its smallest tile where it was tiled at several scales (a large tile's
        place holds that many small ones, which may all rank next to it)."""
        factor = 1
        for entry in self.store.entries().values():
            grids = entry.grids
            if len(grids) > 1 or grids[0].overlapping:
                sides = [grid.tile_px for grid in grids]
                factor = max(factor, OVERLAP_FETCH * math.ceil((max(sides) / min(sides)) ** 2))
        return factor

    def _check_scene(self, scene: str) -> None:
        known = self.store.scenes()
        if scene not in known:
            raise GeoretError(f"unknown scene {scene!r}; known scenes: {', '.join(known) or 'none'}")

    def _subject_pool(self, catalog: TileCatalog, subject: np.ndarray, eligible: np.ndarray, k: int
                      ) -> np.ndarray | None:
        """Catalog positions of the subject phrase's nearest tiles by the vector index, in indexes of
        :data:`RELATIONAL_POOL_ROWS` tiles or more; None (score every tile) below that, without an index, or
        when the area/scene leave too few of them eligible."""
        if len(catalog) < RELATIONAL_POOL_ROWS or not self._nearest.has_vector_index():
            return None
        pool, _ = catalog.nearest(subject, RELATIONAL_POOL, refine=False)
        return pool if eligible[pool].sum() >= subject_candidates(k) else None

    def catalog(self) -> TileCatalog:
        """Vectors and footprints of every tile, read once and kept until the table changes; then only the rows
        of the fragments the new version added or changed are read."""
        if self._catalog is None or self._catalog.version != self.store.version:
            self._catalog = TileCatalog.read(self.store, self._catalog)
        return self._catalog

    def fetch_rows(self, tile_ids: Sequence[str]) -> list[dict]:
        """Stored rows (result columns + footprint WKB) of some tiles."""
        if not tile_ids:
            return []
        where = "tile_id IN (" + ", ".join(sql_string(t) for t in dict.fromkeys(tile_ids)) + ")"
        missing = self.store.missing_columns(ROW_COLUMNS)
        columns = [c for c in ROW_COLUMNS if c not in missing]
        return self.store.dataset.to_table(columns=columns, filter=where).to_pylist()

    def imagery(self) -> list[dict[str, Any]]:
        """The index's rasters a map can show under the hits (:meth:`ImageryLayers.layers`)."""
        return self._imagery.layers()

    def map_tile(self, number: int, z: int, x: int, y: int) -> bytes | None:
        """Web-mercator tile z/x/y of source ``number`` (see :meth:`imagery`) as a PNG in the colours the index
        saw, or None outside the raster."""
        return self._imagery.tile(number, z, x, y)

    def close(self) -> None:
        """Close the rasters the web map's imagery opened (the server does on shutdown)."""
        self._imagery.close()

    def thumbnail(self, tile_id: str):
        """The stored thumbnail of one tile as a PIL image."""
        from PIL import Image

        catalog = self.catalog()  # by position: a filter on the tile id scans the table (100+ ms at 1M tiles)
        position = catalog.index_of.get(tile_id)
        if position is None:
            raise NotFoundError(f"no tile {tile_id!r} in {self.path}")
        png = catalog.dataset.take([position], columns=["thumbnail"])["thumbnail"][0].as_py()
        if not png:  # rows written without one (tables made by other tools, synthetic benchmark rows)
            raise NotFoundError(f"tile {tile_id!r} has no thumbnail")
        return Image.open(io.BytesIO(png))


def open_index(path: str | Path, *, device: str = "auto", pretrained: str | None = None,
               checkpoint: str | None = None, model: EmbeddingModel | None = None,
               query_cache: QueryVectorCache | None = None) -> GeoIndex:
    """Open the georet index at ``path`` for searching.

    The index remembers its model; ``pretrained``/``checkpoint`` only say where
    its weight files are now if they moved (their hashes must still match).
    ``query_cache`` keeps query vectors (:mod:`georet.search.query_cache`; in memory by default).
    """
    return GeoIndex(TileStore.open(path), device=device, pretrained=pretrained, checkpoint=checkpoint, model=model,
                    query_cache=query_cache)


def _with_kind(frame: gpd.GeoDataFrame, kind: str | None) -> gpd.GeoDataFrame:
    """Record in the frame what its scores mean (a short key and the sentence the shells print)."""
    frame.attrs["score_kind"] = SCORE_KINDS.get(kind, kind)
    return frame


def _as_pixels(image: Any) -> np.ndarray:
    """A PIL image or an (h, w, 3) uint8 array as the model's input pixels."""
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise GeoretError(f"an example image must be (height, width, 3) uint8 pixels, got {array.dtype} {array.shape}")
    return array
