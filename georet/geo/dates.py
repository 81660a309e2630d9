"""When a raster was acquired, and date ranges to filter and compare tiles by.

A tile's date is its raster's acquisition date, kept as an ISO 8601 string at
the precision it is known: ``2016-05-01``, ``2016-05`` or a bare year ``2016``.
Dates are not invented: a file called ``landsat_1985.tif`` is from 1985, not
from 1 January 1985. Comparisons therefore work on ranges (:class:`DateRange`):
``2016`` covers the whole year, and a filter keeps a tile when the two ranges
share a day.

Where a raster's date comes from, first found wins (:func:`acquisition_date`):
the date given for it (``georet index --acquired``), its STAC item's datetime,
the raster's own metadata tags (:data:`DATE_TAGS`), a date in its file name.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from typing import Mapping

from georet.errors import InputError
from georet.geo.sources import RasterRef, name_part

#: Metadata tags that hold an acquisition date, most specific first. ``TIFFTAG_DATETIME`` comes last: many
#: writers put the file's processing time there, which is only a date of last resort.
DATE_TAGS = ("ACQUISITIONDATE", "ACQUISITION_DATE", "DATE_ACQUIRED", "ACQUISITION_START_TIME", "SENSING_TIME",
             "DATATAKE_1_DATATAKE_SENSING_START", "PRODUCT_START_TIME", "IMAGE_DATE", "TIFFTAG_DATETIME")
#: years a date in a file name may have: numbers outside them (tile rows, UTM eastings) are not dates
FIRST_YEAR = 1900
_ISO = re.compile(r"^(?P<y>\d{4})(?:[-:/]?(?P<m>\d{2})(?:[-:/]?(?P<d>\d{2}))?)?(?:[T ].*|Z)?$")
_NAME_DAY = re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})[-_.]?(?P<m>0[1-9]|1[0-2])[-_.]?(?P<d>0[1-9]|[12]\d|3[01])(?!\d)")
_NAME_YEAR = re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})(?!\d)")


def parse_date(text: str, param: str = "acquired") -> str:
    """``text`` as an ISO date at the precision it gives: ``2016-05-01``, ``2016-05`` or ``2016``.

    Takes ``2016-05-01``, ``20160501``, ``2016:05:01 10:20:30`` (TIFF), ``2016-05-01T10:20:30Z`` (STAC)
    and a bare year; anything else is an :class:`~georet.errors.InputError` naming ``param``.
    """
    match = _ISO.match(str(text).strip())
    if not match:
        raise InputError(param, f"not a date: {text!r} (use 2016-05-01, 2016-05 or 2016)")
    year, month, day = match["y"], match["m"], match["d"]
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise InputError(param, f"not a date: {text!r} (no such day)") from None
    return "-".join(part for part in (year, month, day) if part)


def date_in_name(name: str) -> str | None:
    """A date written in a raster's file name (``20160501``, ``2016-05-01``, ``s2_2016.tif``), or None.

    A full date wins over a bare year; a year must lie between :data:`FIRST_YEAR` and next year.
    """
    stem = name_part(name).rsplit(".", 1)[0]
    latest = date.today().year + 1
    for pattern in (_NAME_DAY, _NAME_YEAR):
        for match in pattern.finditer(stem):
            if FIRST_YEAR <= int(match["y"]) <= latest:
                try:
                    return parse_date("-".join(v for v in match.groupdict().values() if v))
                except InputError:  # 20150231: digits that look like a date but are none
                    continue
    return None


def acquisition_date(ref: RasterRef, tags: Mapping[str, str], given: str | None = None
                     ) -> tuple[str | None, str | None]:
    """The raster's acquisition date and where it came from (``given``, ``STAC item``, ``tag NAME``, ``file name``);
    ``(None, None)`` when nothing says."""
    if given:
        return parse_date(given), "given"
    stac = ref.metadata.get("datetime") if ref.metadata else None
    if stac:
        return parse_date(stac), "STAC item"
    for tag in DATE_TAGS:
        if tags.get(tag):
            try:
                return parse_date(tags[tag]), f"tag {tag}"
            except InputError:  # a tag some writer filled with free text: look further
                continue
    named = date_in_name(ref.name)
    return (named, "file name") if named else (None, None)


@dataclass(frozen=True)
class DateRange:
    """The days from ``start`` to ``end``, both included."""

    start: date
    end: date

    @classmethod
    def of(cls, iso: str) -> "DateRange":
        """The days an ISO date of any precision covers: ``2016`` is the whole year."""
        parts = [int(p) for p in iso.split("-")]
        year, month, day = parts + [None] * (3 - len(parts))
        if day is not None:
            return cls(date(year, month, day), date(year, month, day))
        if month is not None:
            return cls(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))
        return cls(date(year, 1, 1), date(year, 12, 31))

    def overlaps(self, other: "DateRange") -> bool:
        return self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def parse_when(text: str, param: str = "when") -> DateRange:
    """A date filter: ``2016``, ``2016-05``, ``2016-05-01``, or a range ``2015/2020``,
    ``2016-05-01/2016-08-31``, open-ended ``2015/..`` or ``../2010`` (as STAC writes them)."""
    text = str(text).strip()
    if "/" not in text:
        return DateRange.of(parse_date(text, param))
    first, _, last = (part.strip() for part in text.partition("/"))
    if first in ("", "..") and last in ("", ".."):
        raise InputError(param, f"a date range needs at least one end: {text!r}")
    start = DateRange.of(parse_date(first, param)).start if first not in ("", "..") else date.min
    end = DateRange.of(parse_date(last, param)).end if last not in ("", "..") else date.max
    if end < start:
        raise InputError(param, f"the range ends before it starts: {text!r}")
    return DateRange(start, end)
