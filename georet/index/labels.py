"""Saved label sets: tiles an analyst marked right or wrong, kept in the index folder between sessions.

One JSON file per set (``DB/labels/NAME.json``), written atomically; each entry
records who marked the tile and when, so a shared index shows whose judgement
a search rests on. Marking a tile again replaces its earlier mark.
"""

from __future__ import annotations

import getpass
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Literal

from georet.errors import GeoretError, NotFoundError
from georet.files import atomic_write_text
from georet.geo import is_url
from georet.index.store import require_writable

LABELS_DIR = "labels"
DEFAULT_SET = "default"
Mark = Literal["positive", "negative"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Label:
    tile_id: str
    mark: Mark
    who: str
    when: str  # ISO 8601, UTC


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[Label, ...]

    @property
    def positives(self) -> list[str]:
        return [label.tile_id for label in self.labels if label.mark == "positive"]

    @property
    def negatives(self) -> list[str]:
        return [label.tile_id for label in self.labels if label.mark == "negative"]


def _path(index: str | Path, name: str) -> Path:
    if is_url(str(index)):
        raise GeoretError(f"label sets are saved beside local indexes; {index} is in an object store "
                          f"(search it with --like/--unlike tile ids instead)")
    if not _NAME.match(name):
        raise GeoretError(f"label set name {name!r}: use letters, digits, '_', '-' or '.' (at most 64)")
    return Path(index) / LABELS_DIR / f"{name}.json"


def label_sets(index: str | Path) -> list[str]:
    """Names of the label sets saved in an index (none in an object store)."""
    if is_url(str(index)):
        return []
    folder = Path(index) / LABELS_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def read_labels(index: str | Path, name: str = DEFAULT_SET) -> LabelSet:
    """A saved set; a clear error (listing the saved ones) if there is none of that name."""
    path = _path(index, name)
    if not path.is_file():
        known = label_sets(index)
        raise NotFoundError(f"no label set {name!r} in {index} (saved sets: {', '.join(known) or 'none'}; "
                          f"make one with `georet label --db {index} --set {name} --positive TILE_ID`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        labels = tuple(Label(e["tile_id"], e["mark"], e["who"], e["when"]) for e in raw["labels"])
    except (OSError, ValueError, KeyError, TypeError):
        raise GeoretError(f"{path} is unreadable or corrupt") from None
    return LabelSet(name, labels)


def save_labels(index: str | Path, name: str, positive: Iterable[str] = (), negative: Iterable[str] = (),
                who: str | None = None) -> LabelSet:
    """Add marks to a set (created if new); a tile marked both ways in one call is an error."""
    positive, negative = list(dict.fromkeys(positive)), list(dict.fromkeys(negative))
    if both := sorted(set(positive) & set(negative)):
        raise GeoretError(f"tile {both[0]} is marked both right ({{positive}}) and wrong ({{negative}})", names=("positive", "negative"))
    path = _path(index, name)
    require_writable(Path(index))
    current = {label.tile_id: label for label in read_labels(index, name).labels} if path.is_file() else {}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    who = who or _user()
    for ids, mark in ((positive, "positive"), (negative, "negative")):
        for tile_id in ids:
            current.pop(tile_id, None)
            current[tile_id] = Label(tile_id, mark, who, when)
    labels = LabelSet(name, tuple(current.values()))
    _write(path, labels)
    return labels


def delete_labels(index: str | Path, name: str) -> None:
    """Forget a set (``georet label --clear``)."""
    path = _path(index, name)
    read_labels(index, name)  # the error for a set that does not exist
    require_writable(Path(index))
    path.unlink()


def _write(path: Path, labels: LabelSet) -> None:
    atomic_write_text(path, json.dumps({"name": labels.name, "labels": [vars(label) for label in labels.labels]},
                                       indent=1))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"
