"""Inputs → rasters: files, folders (searched recursively), URLs and STAC JSON, in one sorted list."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Sequence
from urllib.parse import urlsplit

from georet.errors import GeoretError, InputError, NotFoundError
from georet.geo.sources import RASTER_SUFFIXES, RasterRef, as_ref, is_url
from georet.geo.stac import read_stac, stac_rasters

STAC_SUFFIXES = {".json", ".geojson"}


def discover_rasters(inputs: Sequence[str | Path | RasterRef], asset: str | None = None) -> list[RasterRef]:
    """Files, directories (searched recursively), URLs and STAC JSON (file or URL) → rasters, in order.

    ``asset`` picks the asset of STAC items (see :func:`georet.geo.stac.item_raster`); it is an
    error when no input is STAC.
    """
    found: list[RasterRef] = []
    stac_seen = False
    for raw in inputs:
        if isinstance(raw, RasterRef):
            found.append(raw)
            stac_seen = stac_seen or "stac_item" in raw.metadata
            continue
        text = str(raw)
        suffix = PurePosixPath(urlsplit(text).path).suffix.lower() if is_url(text) else Path(text).suffix.lower()
        if suffix in STAC_SUFFIXES:
            stac_seen = True
            found.extend(stac_rasters(read_stac(text), asset))
        elif is_url(text):
            found.append(RasterRef(text))
        else:
            path = Path(text).expanduser()
            if path.is_dir():
                hits = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
                if not hits:
                    raise GeoretError(f"no rasters ({', '.join(sorted(RASTER_SUFFIXES))}) in directory {path}")
                found.extend(as_ref(p) for p in hits)
            elif path.is_file():
                found.append(as_ref(path))
            else:
                raise NotFoundError(f"no such file or directory: {path}")
    if asset and not stac_seen:
        raise InputError("asset", "picks an asset of STAC items; none of the inputs is a STAC JSON")
    unique = {ref.name: ref for ref in found}
    return [unique[name] for name in sorted(unique)]
