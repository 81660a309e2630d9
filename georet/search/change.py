"""Change search: "farmland that became housing", "new industrial buildings", "forest that was cleared".

A place is seen at several dates when tiles of different acquisitions cover it.
Tiles are paired by footprint: two tiles show the same place when they share at
least :data:`SAME_PLACE_SHARE` of the smaller footprint, so grids of two years
that are shifted by a pixel or two still pair, and the neighbours of an
overlapping grid (a third apart) do not; where two tiles of one date qualify (a
grid's last row, shifted to end at the raster's edge, overlaps the row before it
by more than half), the one sharing most is the place. By default a place's pair
is its earliest and its latest acquisition; ``from_date``/``to_date`` choose the
tiles of each side instead.

Scoring, with ``z_X(t)`` the z-score of tile ``t``'s cosine to phrase ``X``
among the tiles *of its own acquisition date* (dates differ in season, sensor
and light: a score is compared with its own date's), plus the scene prior of
:mod:`georet.search.relations`; ``t0`` the earlier tile, ``t1`` the later:

* "A became B": ``(z_A(t0) + z_B(t1)) / 2 - (max(0, z_B(t0)) + max(0, z_A(t1))) / 2 + λ z_W(t1)``:
  A then and B now, minus the evidence that nothing changed (B already there, A still there);
* "new B": ``z_B(t1) - max(0, z_B(t0)) + λ z_W(t1)``;
* "A that disappeared": ``z_A(t0) - max(0, z_A(t1)) + λ z_W(t0)``;

``W`` is the whole sentence and λ the spatial relations' whole-query weight.
Only the best :func:`~georet.search.relations.subject_candidates` tiles of each
phrase are paired, so a change query costs what a relational query does.
Everything here is a pure function of a catalog and phrase vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from georet.search.catalog import TileCatalog
from georet.search.relations import WHOLE_QUERY_WEIGHT, Change, ScenePrior, subject_candidates

#: two tiles show the same place when they share this share of the smaller footprint
SAME_PLACE_SHARE = 0.5
#: weight of the "nothing changed" evidence in "A became B" (1: as "new" and "gone" weigh it)
STAY_WEIGHT = 1.0
CHANGE_COLUMNS = ["change", "before_tile_id", "before_acquired", "before_thumbnail", "before_score", "after_score",
                  "stay_score", "whole_score"]


@dataclass(frozen=True)
class ChangeRanking:
    """Places ranked for a change, best first: the later and earlier tile of each, and what explains its score."""

    change: Change
    after: np.ndarray  # catalog positions of the later tiles (the hits)
    before: np.ndarray  # catalog positions of the earlier tiles, pair by pair
    scores: np.ndarray
    before_z: np.ndarray  # z of the earlier phrase at the earlier tile; NaN for "new"
    after_z: np.ndarray  # z of the later phrase at the later tile; NaN for "gone"
    stay_z: np.ndarray  # the "nothing changed" evidence subtracted
    whole_z: np.ndarray


def zscores_by_date(cosines: np.ndarray, groups: tuple[np.ndarray | None, np.ndarray]) -> np.ndarray:
    """(tiles, phrases) cosines → z-scores among the tiles of the same acquisition date (undated: together).

    ``groups`` are the positions sorted by date (None: they are) and each date's first place among them
    (:attr:`TileCatalog.date_groups`): sums per run, in float64, without a pass per date.
    """
    order, starts = groups
    ordered = cosines if order is None else cosines[order]
    counts = np.diff(np.r_[starts, len(ordered)])[:, None]
    mean = np.add.reduceat(ordered, starts, axis=0, dtype=np.float64) / counts
    spread = np.sqrt(np.maximum(np.add.reduceat(ordered * ordered, starts, axis=0, dtype=np.float64) / counts
                                - mean ** 2, 0.0))
    z = ((ordered - np.repeat(mean, counts[:, 0], axis=0))
         / np.repeat(np.where(spread > 0, spread, 1.0), counts[:, 0], axis=0)).astype(np.float32)
    if order is None:
        return z
    unordered = np.empty_like(z)
    unordered[order] = z
    return unordered


def pair_places(catalog: TileCatalog, candidates: np.ndarray, earlier: np.ndarray, later: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) catalog positions of the places the ``candidates`` show, each pair once, in the
    candidates' order.

    A place is a later tile and the tiles sharing :data:`SAME_PLACE_SHARE` of it: ``after`` is the latest
    tile allowed on the later side (``later``, bool per tile) among the candidate's own place, ``before`` the
    earliest allowed on the earlier side (``earlier``) among the place of ``after``; within one date, the tile
    sharing most. Deciding ``before`` from ``after`` gives each later tile one pair, whichever candidate led
    to it. Places without tiles at two dates are left out.
    """
    _, codes = catalog.date_codes
    afters: dict[int, int] = {}
    for candidate, (place, share) in _places(catalog, candidates).items():
        if later[place].any():
            afters[candidate] = _pick(place, share, later[place], -codes[place])
    befores = _places(catalog, np.unique(list(afters.values())).astype(int)) if afters else {}
    pairs: dict[tuple[int, int], None] = {}
    for candidate in candidates.tolist():
        after = afters.get(candidate)
        if after is None:
            continue
        place, share = befores[after]
        if earlier[place].any():
            before = _pick(place, share, earlier[place], codes[place])
            if codes[before] < codes[after]:
                pairs.setdefault((before, after))
    if not pairs:
        return np.array([], dtype=int), np.array([], dtype=int)
    before, after = np.array(list(pairs), dtype=int).T
    return before, after


def _places(catalog: TileCatalog, tiles: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each tile's place: itself and the tiles sharing :data:`SAME_PLACE_SHARE` of it, with their shares."""
    subject, other, shared = catalog.geometry.overlapping(tiles, SAME_PLACE_SHARE)
    members: dict[int, list[tuple[int, float]]] = {int(t): [(int(t), 1.0)] for t in tiles}
    for s, o, share in zip(subject.tolist(), other.tolist(), shared.tolist()):
        members[s].append((o, share))
    return {tile: (np.array([m for m, _ in found]), np.array([s for _, s in found])) for tile, found in members.items()}


def _pick(place: np.ndarray, share: np.ndarray, allowed: np.ndarray, order: np.ndarray) -> int:
    """Of the ``allowed`` tiles of a place, the first by ``order`` (a date code, or its negative for the
    latest), and of those the one sharing most."""
    first = np.lexsort((-share, np.where(allowed, order, np.iinfo(np.int64).max)))[0]
    return int(place[first])


def rank_change(change: Change, catalog: TileCatalog, phrase_vectors: np.ndarray, k: int,
                earlier: np.ndarray, later: np.ndarray, prior: ScenePrior | None = None,
                stay_weight: float = STAY_WEIGHT, whole_weight: float = WHOLE_QUERY_WEIGHT) -> ChangeRanking:
    """Rank the places of ``catalog`` for ``change`` (see the module docstring).

    ``phrase_vectors`` are the unit vectors of (before phrase, after phrase, whole sentence), a missing
    phrase's row unused; ``earlier``/``later`` (bool per tile) the tiles each side may take, dated ones only;
    ``prior`` the weighted scene prior of the two phrases.
    """
    _, codes = catalog.date_codes
    earlier, later = earlier & (codes >= 0), later & (codes >= 0)
    z = zscores_by_date(catalog.vectors @ np.asarray(phrase_vectors, dtype=catalog.vectors.dtype).T,
                        catalog.date_groups)
    if prior is not None:
        z[:, :2] += prior.table().T
    z_before, z_after, z_whole = z[:, 0], z[:, 1], z[:, 2]
    pool = subject_candidates(k)
    sides = {"became": ((z_before, earlier), (z_after, later)), "new": ((z_after, later),),
             "gone": ((z_before, earlier),)}[change.kind]
    candidates = np.unique(np.concatenate([_best(scores, allowed, pool) for scores, allowed in sides]))
    candidates = candidates[np.argsort(-np.max([s[candidates] for s, _ in sides], axis=0), kind="stable")]
    before, after = pair_places(catalog, candidates, earlier, later)
    nan = np.full(len(after), np.nan)
    if change.kind == "became":
        stay = (np.maximum(0, z_after[before]) + np.maximum(0, z_before[after])) / 2
        scores = (z_before[before] + z_after[after]) / 2 - stay_weight * stay + whole_weight * z_whole[after]
        before_z, after_z = z_before[before], z_after[after]
    elif change.kind == "new":
        stay = np.maximum(0, z_after[before])
        scores = z_after[after] - stay_weight * stay + whole_weight * z_whole[after]
        before_z, after_z = nan, z_after[after]
    else:
        stay = np.maximum(0, z_before[after])
        scores = z_before[before] - stay_weight * stay + whole_weight * z_whole[before]
        before_z, after_z = z_before[before], nan
    whole = z_whole[before] if change.kind == "gone" else z_whole[after]
    order = np.argsort(-scores, kind="stable")[:k]
    return ChangeRanking(change, after[order], before[order], scores[order], before_z[order], after_z[order],
                         stay[order], whole[order])


def _best(scores: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` best-scoring allowed tiles (every tile allowed, the common case, skips
    gathering them: at a million tiles that gather cost as much as the selection)."""
    if allowed.all():
        return np.argpartition(-scores, count - 1)[:count] if len(scores) > count else np.arange(len(scores))
    positions = np.flatnonzero(allowed)
    if len(positions) > count:
        positions = positions[np.argpartition(-scores[positions], count - 1)[:count]]
    return positions
