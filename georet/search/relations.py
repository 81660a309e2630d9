"""Relational queries: "airport near river" means an airport tile with a river close by.

A single sentence embedding of such a query mostly finds tiles that look like
either phrase. Here the query is parsed into *subject* (A), *relation* and
*partner* (B); A and B are embedded separately and the relation is checked on
the tile footprints.

Parsing (deterministic, English, the phrase table :data:`RELATION_PHRASES` is
the only place to extend):

    A within 2 km of B · A not near / far from B · A near / next to / beside /
    adjacent to / close to B · A north|south|east|west of B · A and B

Scoring. With ``s_X(t)`` the cosine similarity of tile ``t`` to phrase ``X``
and ``z_X = (s_X - mean_X) / std_X`` its z-score over the whole index (cosines
of different phrases are not comparable; z-scores are), and ``W`` the whole
query sentence:

* positive relations (near, within, direction, and):
  ``score(t) = (z_A(t) + max_{u ∈ R(t)} z_B(u)) / 2 + λ · z_W(t)``,
  where ``R(t)`` are the tiles satisfying the relation with ``t``: footprint
  gap ≤ d (near/within), gap ≤ d and lying in the named direction (within ±45°)
  for north/south/east/west, and ``t`` itself or a touching tile for "and".
  Tiles without any such ``u`` are no hit.
* "not near": ``score(t) = z_A(t) - max(0, max_{u: gap ≤ d} z_B(u)) + λ · z_W(t)``:
  a B-like tile close by pulls the subject down, a clear neighbourhood costs
  nothing.

Scene prior: when tiles carry scene labels (zero-shot or from a land-cover
layer), each phrase also gets the CMER query-time scene prior,
``z_X(t) += β · P_X(scene(t)) / max_c P_X(c)`` with ``P_X`` the softmax over
the index's scene classes of the phrase's similarity to "an aerial image of
{class}" (β = 1 by default, 0 turns it off). It sharpens the
phrases where the embedding alone confuses classes (river vs farmland).

``λ = 0.25`` keeps the wording of the whole sentence in play. ``d`` defaults
to half a tile side — the ring of neighbouring tiles — or ``--near 500m``.
Only the top subject candidates are checked, against an STR-tree of all
footprints, so a query over 100k tiles costs one matrix product and a few
hundred tree lookups.

Distances are metres between footprint rectangles
(:class:`~georet.search.catalog.TileGeometry`).

Everything here is a pure function of a :class:`~georet.search.catalog.TileCatalog`
and phrase vectors: encoding text and fetching rows is
:class:`~georet.search.geoindex.GeoIndex`'s job.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Callable

import geopandas as gpd
import numpy as np

from georet.errors import InputError
from georet.search.catalog import TileCatalog, TileGeometry

#: relation → the English phrases that express it, tried in this order
RELATION_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("not_near", ("not near", "not close to", "not next to", "far from", "away from")),
    ("near", ("near", "next to", "beside", "adjacent to", "close to", "alongside")),
    ("north_of", ("north of",)),
    ("south_of", ("south of",)),
    ("east_of", ("east of",)),
    ("west_of", ("west of",)),
    ("and", ("and",)),
)
#: change in time → the English forms that express it, tried in this order before the spatial relations
#: (:mod:`georet.search.change` scores them). ``a``: what the place was at the earlier date, ``b``: what it is
#: at the later one.
CHANGE_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("became", (r"(?P<b>.+?) where there used to be (?P<a>.+)",
                r"(?P<b>.+?) where (?P<a>.+?) used to be",
                r"(?P<b>.+?) (?:that|which) used to be (?P<a>.+)",
                r"(?P<a>.+?) (?:that |which )?(?:became|turned into|was turned into|were turned into|changed into"
                r"|was converted to|were converted to|gave way to) (?P<b>.+)")),
    ("new", (r"(?:new|newly built) (?P<b>.+)",
             r"(?P<b>.+?) (?:that |which )?(?:appeared|was built|were built)")),
    ("gone", (r"(?P<a>.+?) (?:that |which )?(?:disappeared|vanished|was cleared|were cleared|was removed"
              r"|were removed|was demolished|were demolished|is gone|are gone)",
              r"(?:lost|former) (?P<a>.+)")),
)
_CHANGE_PATTERNS = [(kind, re.compile("^" + pattern.replace(" ", r"\s+") + "$", re.IGNORECASE))
                    for kind, patterns in CHANGE_PHRASES for pattern in patterns]
_WITHIN = re.compile(r"^(?P<a>.+?)\s+within\s+(?P<d>\d+(?:\.\d+)?\s*(?:km|m))\s+of\s+(?P<b>.+)$", re.IGNORECASE)
_PATTERNS = [(kind, re.compile(r"^(?P<a>.+?)\s+(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in phrases)
                               + r")\s+(?P<b>.+)$", re.IGNORECASE)) for kind, phrases in RELATION_PHRASES]
_DIRECTIONS = {"north_of": (0.0, 1.0), "south_of": (0.0, -1.0), "east_of": (1.0, 0.0), "west_of": (-1.0, 0.0)}
WHOLE_QUERY_WEIGHT = 0.25
SCENE_PRIOR_WEIGHT = 1.0
#: default "near": footprints less than half a tile apart, i.e. the 8 neighbouring tiles on a grid
NEAR_TILE_FRACTION = 0.5
RELATION_COLUMNS = ["relation", "subject_score", "partner_score", "whole_score", "partners",
                    "partner_distance_m", "partner_wkt"]


@dataclass(frozen=True)
class Relation:
    """A parsed relational query: ``subject`` <kind> ``partner`` (within ``distance_m``)."""

    kind: str
    subject: str
    partner: str
    text: str  # the whole query, still embedded as a sentence
    distance_m: float | None = None

    def describe(self) -> str:
        words = self.kind.replace("_", " ")
        limit = f" {self.distance_m:g} m of" if self.kind == "within" else ""
        return f"subject {self.subject!r} · relation {words}{limit} · partner {self.partner!r}"


@dataclass(frozen=True)
class Change:
    """A parsed change query: the place showed ``before`` at the earlier date and shows ``after`` at the later.

    ``kind`` is "became" (both phrases), "new" (``after`` only: it was not there before) or "gone"
    (``before`` only: it is not there any more).
    """

    kind: str
    before: str | None
    after: str | None
    text: str  # the whole query, still embedded as a sentence

    def describe(self) -> str:
        if self.kind == "became":
            return f"change: {self.before!r} at the earlier date, {self.after!r} at the later"
        if self.kind == "new":
            return f"change: {self.after!r} at the later date, not at the earlier"
        return f"change: {self.before!r} at the earlier date, not at the later"


def parse_distance(text: str, param: str = "near") -> float:
    """``"500m"``, ``"2 km"``, ``"1.5km"`` → metres; errors name ``param``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(km|m)\s*", str(text), re.IGNORECASE)
    if not match:
        raise InputError(param, f"not a distance: {text!r} (use e.g. 500m or 2km)")
    value = float(match.group(1)) * (1000.0 if match.group(2).lower() == "km" else 1.0)
    if not 0 < value < math.inf:
        raise InputError(param, f"a distance must be positive and finite, got {text!r}")
    return value


def parse_query(text: str) -> Relation | Change | None:
    """The relation in space (:class:`Relation`) or time (:class:`Change`) in ``text``, or None for a plain
    query. Change forms are tried first: "farmland that became houses near a river" is a change whose
    phrases may read like relations."""
    text = " ".join(text.split())
    for kind, pattern in _CHANGE_PATTERNS:
        match = pattern.match(text)
        if match:
            found = match.groupdict()
            return Change(kind, found.get("a"), found.get("b"), text)
    match = _WITHIN.match(text)
    if match:
        return Relation("within", match["a"], match["b"], text, parse_distance(match["d"], "text"))
    for kind, pattern in _PATTERNS:
        match = pattern.match(text)
        if match:
            return Relation(kind, match["a"], match["b"], text)
    return None


def _zscore(scores: np.ndarray) -> np.ndarray:
    std = float(scores.std())
    return (scores - scores.mean()) / (std if std > 0 else 1.0)


class SampledZ:
    """z-scores of one phrase computed for the tiles asked for, with mean and std from a fixed sample.

    The candidate stage of very large indexes: scoring every tile costs one
    pass over all vectors (~60 ms per million on 2 cores), while a query needs
    z-scores of a few hundred subjects and their neighbours only. Indexing
    (``z[i]``, ``z[array]``) works as on the full array; each tile's score is
    computed once, when first asked for.
    """

    def __init__(self, vectors: np.ndarray, phrase: np.ndarray, sample_vectors: np.ndarray,
                 boost: Callable[[np.ndarray], np.ndarray] | None):
        self.vectors, self.phrase, self.boost = vectors, phrase, boost
        cosines = sample_vectors @ phrase
        self.mean, self.std = float(cosines.mean()), float(cosines.std()) or 1.0
        self.values = np.zeros(len(vectors))
        self.known = np.zeros(len(vectors), dtype=bool)

    def __getitem__(self, index):
        if np.ndim(index) == 0:  # one tile, as the per-candidate loop asks: mostly known already
            if not self.known[index]:
                self._score(np.array([index]))
            return self.values[index]
        positions = np.asarray(index)
        missing = positions[~self.known[positions]]
        if len(missing):
            self._score(np.unique(missing))
        return self.values[positions]

    def _score(self, positions: np.ndarray) -> None:
        z = (self.vectors[positions] @ self.phrase - self.mean) / self.std
        self.values[positions] = z + self.boost(positions) if self.boost is not None else z
        self.known[positions] = True


def score_relation(relation: Relation, z_subject: np.ndarray, z_partner: np.ndarray, z_whole: np.ndarray,
                   geometry: TileGeometry, candidates: np.ndarray, near_m: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Score ``candidates`` (tile indices) for ``relation``; see the module docstring.

    Returns (candidates kept, their scores, best partner z-scores, partner
    indices per kept candidate, best first). Candidates with no valid partner
    under a positive relation are dropped.
    """
    distance = relation.distance_m if relation.kind == "within" else near_m
    touching = 0.01 * geometry.tile_side_m
    subject, other = geometry.pairs_within(candidates, touching if relation.kind == "and" else distance)
    if relation.kind != "and" and relation.kind != "not_near":
        keep = subject != other  # the partner is another tile
        subject, other = subject[keep], other[keep]
    if relation.kind in _DIRECTIONS:
        ux, uy = _DIRECTIONS[relation.kind]
        # "A north of B": A lies north of B, i.e. B→A points north within ±45°
        along = (geometry.x[subject] - geometry.x[other]) * ux + (geometry.y[subject] - geometry.y[other]) * uy
        across = np.abs((geometry.x[subject] - geometry.x[other]) * uy - (geometry.y[subject] - geometry.y[other]) * ux)
        keep = along > across
        subject, other = subject[keep], other[keep]

    # group pairs by subject, partners sorted best first
    order = np.lexsort((-z_partner[other], subject))
    subject, other = subject[order], other[order]
    starts = np.flatnonzero(np.r_[True, subject[1:] != subject[:-1]]) if len(subject) else np.array([], int)
    groups = {int(subject[s]): other[s:e] for s, e in zip(starts, np.r_[starts[1:], len(subject)])}

    kept, scores, best_partner, partners = [], [], [], []
    for tile in candidates:
        others = groups.get(int(tile), np.array([], dtype=int))
        if relation.kind == "not_near":
            best = float(z_partner[others[0]]) if len(others) else float("-inf")
            score = z_subject[tile] - max(0.0, best) + WHOLE_QUERY_WEIGHT * z_whole[tile]
        elif len(others):
            best = float(z_partner[others[0]])
            score = (z_subject[tile] + best) / 2 + WHOLE_QUERY_WEIGHT * z_whole[tile]
        else:
            continue
        kept.append(int(tile))
        scores.append(float(score))
        best_partner.append(best)
        partners.append(others[:3])
    return np.array(kept, dtype=int), np.array(scores), np.array(best_partner), partners


@dataclass(frozen=True)
class ScenePrior:
    """The scene prior of some phrases, kept per class and looked up per tile when read.

    For phrase p and a tile of class c it is ``P_p(c) / max_c' P_p(c')`` (times a weight): 1 for the phrase's
    most likely class whatever the number of classes, 0 for unlabelled tiles. The whole (phrases, tiles)
    table is a gather over every tile (~10 ms a phrase at a million tiles); the candidate stage of relational
    search reads a few thousand tiles (:meth:`at`).
    """

    per_class: np.ndarray  # (phrases, classes + 1); the last column, for tiles without a scene, is 0
    codes: np.ndarray  # (tiles,) each tile's class column, -1 (the zero column) for none

    @classmethod
    def of(cls, phrase_probs: np.ndarray, tile_classes: np.ndarray, weight: float = 1.0) -> "ScenePrior":
        """From the phrases' zero-shot class probabilities (phrases, classes) and each tile's column in them
        (:attr:`TileCatalog.scene_codes`, -1 when the tile has no scene)."""
        probs = (weight * phrase_probs / phrase_probs.max(axis=1, keepdims=True)).astype(np.float32)
        return cls(np.concatenate([probs, np.zeros((len(probs), 1), np.float32)], axis=1), tile_classes)

    def at(self, phrase: int, positions: np.ndarray) -> np.ndarray:
        return self.per_class[phrase, self.codes[positions]]

    def table(self) -> np.ndarray:
        """(phrases, tiles): one gather per phrase."""
        return self.per_class[:, self.codes]


@dataclass(frozen=True)
class RelationalRanking:
    """Subject tiles ranked for a relation, best first, with what explains each score."""

    relation: Relation
    near_m: float
    tiles: np.ndarray  # catalog indices of the subject tiles
    scores: np.ndarray
    subject_z: np.ndarray
    whole_z: np.ndarray
    partner_z: np.ndarray  # best partner's z-score; NaN where there is none (not near)
    partners: list[np.ndarray]  # up to 3 partner indices per tile, best first
    partner_gap_m: np.ndarray  # footprint gap to the best partner; NaN where there is none


def subject_candidates(k: int) -> int:
    """How many of the best subject tiles are checked for partners when ``k`` hits are asked for."""
    return max(200, 20 * k)


def rank_relational(relation: Relation, catalog: TileCatalog, phrase_vectors: np.ndarray, k: int,
                    near_m: float | None = None, eligible: np.ndarray | None = None,
                    prior: ScenePrior | None = None, candidates: int | None = None,
                    subject_pool: np.ndarray | None = None) -> RelationalRanking:
    """Rank the subject tiles of ``catalog`` for ``relation`` (see the module docstring).

    ``phrase_vectors`` are the unit vectors of (subject, partner, whole sentence);
    ``eligible`` (bool per tile) restricts the subjects, partners may lie anywhere;
    ``prior`` (of the two phrases) is added to the subject and partner z-scores. Only the best ``candidates`` subjects (default
    :func:`subject_candidates`) are scored. ``subject_pool`` (tile positions, e.g. a vector
    index's nearest tiles to the subject phrase) limits the subjects considered,
    and then z-scores are computed only where needed, normalised over
    :attr:`TileCatalog.stats_vectors` (:class:`SampledZ`).
    """
    n = len(catalog)
    near_m = near_m if near_m is not None else NEAR_TILE_FRACTION * catalog.geometry.tile_side_m
    phrases = np.asarray(phrase_vectors, dtype=catalog.vectors.dtype)
    if subject_pool is not None:
        z_subject, z_partner = (SampledZ(catalog.vectors, phrases[i], catalog.stats_vectors,
                                         None if prior is None else functools.partial(prior.at, i))
                                for i in (0, 1))
        z_whole = SampledZ(catalog.vectors, phrases[2], catalog.stats_vectors, None)
    else:
        # one pass over the vectors for the three phrases: at a million tiles the scan is memory-bound
        z_subject, z_partner, z_whole = (_zscore(column) for column in (catalog.vectors @ phrases.T).T)
        if prior is not None:
            boost = prior.table()
            z_subject, z_partner = z_subject + boost[0], z_partner + boost[1]
    pool = np.arange(n) if subject_pool is None else np.unique(subject_pool)
    if eligible is not None:
        pool = pool[eligible[pool]]
    limit = min(len(pool), candidates or subject_candidates(k))
    pool_z = z_subject[pool]
    if limit < len(pool):  # a partial sort: at a million tiles a full one costs ~100 ms
        best = np.argpartition(-pool_z, limit - 1)[:limit]
        pool, pool_z = pool[best], pool_z[best]
    top = pool[np.lexsort((pool, -pool_z))]  # best first; ties by tile position, as a stable sort
    z_whole[top]  # scored together now, not one by one as each candidate asks (SampledZ)
    kept, scores, partner_z, partners = score_relation(relation, z_subject, z_partner, z_whole, catalog.geometry,
                                                       top, near_m)
    order = np.argsort(-scores, kind="stable")
    tiles = kept[order]
    ranked_partners = [partners[i] for i in order]
    gaps = np.array([catalog.geometry.gap(np.array([t]), p[:1])[0] if len(p) else np.nan
                     for t, p in zip(tiles, ranked_partners)], dtype=float)
    best_z = partner_z[order].astype(float)
    best_z[~np.isfinite(best_z)] = np.nan  # "not near" subjects with no B tile close by
    return RelationalRanking(relation, float(near_m), tiles, scores[order], z_subject[tiles], z_whole[tiles],
                             best_z, ranked_partners, gaps)


def explain(hits: "gpd.GeoDataFrame") -> str:
    """Human-readable parse and per-hit scoring of a relational search result."""
    if "change" in hits.attrs:
        return _explain_change(hits)
    if "relation" not in hits.attrs:
        return "plain query: ranked by cosine similarity to the whole sentence"
    lines = [f"parsed: {hits.attrs['relation']} · near = {hits.attrs['near_m']:.0f} m"
             f" · scene prior β = {hits.attrs['scene_prior']:g}",
             f"score = (z_subject + z_partner) / 2 + {WHOLE_QUERY_WEIGHT} z_whole"
             if hits.empty or hits["relation"].iloc[0] != "not_near"
             else f"score = z_subject - max(0, z_partner nearby) + {WHOLE_QUERY_WEIGHT} z_whole"]
    for hit in hits.itertuples():
        partner = (f"partner {hit.partners.split(',')[0]} z={hit.partner_score:+.2f} at {hit.partner_distance_m:.0f} m"
                   if hit.partners else "no partner nearby")
        lines.append(f"#{hit.rank} {hit.tile_id}: z_subject={hit.subject_score:+.2f}, {partner}, "
                     f"z_whole={hit.whole_score:+.2f} -> {hit.score:+.3f}")
    return "\n".join(lines)


#: how each change form is scored (see :mod:`georet.search.change`), as ``--explain`` prints it
CHANGE_FORMULAS = {
    "became": f"score = (z_before + z_after) / 2 - z_stay + {WHOLE_QUERY_WEIGHT} z_whole"
              " · z_stay = (max(0, later phrase then) + max(0, earlier phrase now)) / 2",
    "new": f"score = z_after - z_stay + {WHOLE_QUERY_WEIGHT} z_whole · z_stay = max(0, the phrase at the earlier date)",
    "gone": f"score = z_before - z_stay + {WHOLE_QUERY_WEIGHT} z_whole · z_stay = max(0, the phrase at the later date)",
}


def _explain_change(hits: "gpd.GeoDataFrame") -> str:
    """The parse and per-hit scoring of a change search."""
    kind = hits["change"].iloc[0] if not hits.empty else None
    lines = [f"parsed: {hits.attrs['change']} · dates {hits.attrs['dates']} · {hits.attrs['acquisitions']} "
             f"acquisition date(s) in the index · scene prior β = {hits.attrs['scene_prior']:g}",
             "z: each phrase's z-score among the tiles of the same date"
             + (f"; {CHANGE_FORMULAS[kind]}" if kind else "")]
    if hits.attrs["acquisitions"] < 2:
        lines.append("no change to find: the index holds fewer than two acquisition dates (see `georet info`)")

    def z(value) -> str:
        return "-" if value is None or value != value else f"{value:+.2f}"

    for hit in hits.itertuples():
        lines.append(f"#{hit.rank} {hit.before_tile_id} ({hit.before_acquired}) -> {hit.tile_id} ({hit.acquired}): "
                     f"z_before={z(hit.before_score)}, z_after={z(hit.after_score)}, z_stay={z(hit.stay_score)}, "
                     f"z_whole={z(hit.whole_score)} -> {hit.score:+.3f}")
    return "\n".join(lines)
