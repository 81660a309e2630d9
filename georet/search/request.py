"""One search, validated once: what the CLI, the server, the QGIS plugin and Python callers ask of an index.

Every rule about a search's options lives here, so each shell only maps its
own syntax (flags, query parameters, keyword arguments) onto the fields and
renders the result. A bad value is an :class:`~georet.errors.InputError`
naming the field; the CLI shows it as the flag, the server as the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, get_args

import numpy as np
from shapely.geometry.base import BaseGeometry

from georet.errors import InputError
from georet.geo import search_area
from georet.geo.dates import DateRange, parse_when
from georet.search.feedback import Scorer
from georet.search.relations import parse_distance

#: an example of what the user wants: a tile id of the index, an image file (PNG, JPEG, GeoTIFF chip), or
#: pixels (an (H, W, 3) uint8 array or a PIL image)
Example = Any


@dataclass(frozen=True, kw_only=True)
class SearchRequest:
    """A search: text and/or examples, where, which scene, how to score, what to return.

    ``near`` ("500m", or metres) is the distance that counts as near in a
    relational query (default: half a tile side); ``scene_prior`` the weight of
    the scene prior on its phrases (default 1, 0 = off); ``like``/``unlike``
    examples of right and wrong tiles; ``labels`` a saved label set whose marks
    join them; ``min_score`` drops hits below it; ``dissolve`` merges touching
    hits into regions. ``when`` keeps tiles acquired then (``2016``, ``2015/2020``,
    ``2016-05-01/2016-08-31``); ``from_date``/``to_date`` choose the earlier and later
    acquisitions a change query ("farmland that became housing") compares.
    """

    text: str | None = None
    k: int = 10
    bbox: str | Sequence[float] | None = None
    bbox_crs: str | None = None
    within: Any = None
    scene: str | None = None
    relational: bool = True
    near: str | float | None = None
    scene_prior: float | None = None
    like: Sequence[Example] = ()
    unlike: Sequence[Example] = ()
    labels: str | None = None
    min_score: float | None = None
    dissolve: bool = False
    scorer: Scorer = "auto"
    when: str | None = None
    from_date: str | None = None
    to_date: str | None = None
    #: the search area as one EPSG:4326 geometry (None: everywhere), from bbox, bbox_crs and within
    area: BaseGeometry | None = field(init=False, repr=False, compare=False)
    #: ``near`` in metres
    near_m: float | None = field(init=False, repr=False)
    #: ``when``, ``from_date`` and ``to_date`` as day ranges (None: any date)
    when_range: DateRange | None = field(init=False, repr=False)
    from_range: DateRange | None = field(init=False, repr=False)
    to_range: DateRange | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        text = self.text.strip() if isinstance(self.text, str) else self.text
        if self.text is not None and not text:
            raise InputError("text", "the query text is empty")
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "like", tuple(self.like or ()))
        object.__setattr__(self, "unlike", tuple(self.unlike or ()))
        if text is None and not self.like and self.labels is None:
            raise InputError("text", "nothing to search for: give a query text or examples of what you want")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise InputError("k", f"must be a whole number of at least 1, got {self.k!r}")
        if self.scorer not in get_args(Scorer):
            raise InputError("scorer", f"{self.scorer!r} is not one of {', '.join(get_args(Scorer))}")
        if self.scene_prior is not None and self.scene_prior < 0:
            raise InputError("scene_prior", f"must be 0 (off) or more, got {self.scene_prior}")
        if self.near is None or isinstance(self.near, str):
            near_m = parse_distance(self.near) if self.near is not None else None
        elif self.near > 0:
            near_m = float(self.near)
        else:
            raise InputError("near", f"a distance must be positive, got {self.near!r}")
        object.__setattr__(self, "near_m", near_m)
        object.__setattr__(self, "area", search_area(self.bbox, self.bbox_crs, self.within))
        for name in ("when", "from_date", "to_date"):
            value = getattr(self, name)
            parsed = parse_when(value, name) if value is not None and str(value).strip() else None
            object.__setattr__(self, {"when": "when_range", "from_date": "from_range", "to_date": "to_range"}[name],
                               parsed)
        if (self.from_range or self.to_range) and (self.has_examples or self.labels is not None):
            raise InputError("from_date", "{from_date}/{to_date} choose the dates a change query compares; "
                             "searches with examples take {when}", names=("to_date", "when"))

    @property
    def has_examples(self) -> bool:
        return bool(self.like or self.unlike)
