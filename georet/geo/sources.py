"""Where rasters live: local files, URLs of (cloud-optimised) GeoTIFFs, STAC items.

A :class:`RasterRef` keeps apart the *name* a raster's tiles carry (stored in
the index, hashed into tile ids) and the *href* GDAL opens. For a file or a
URL they are the same string; for a STAC item whose red, green and blue bands
are separate files the href is a small VRT that stacks them, and the name
says which item and assets it was.

Remote rasters are read through GDAL's virtual file systems (``/vsicurl/``,
``/vsis3/``…), which fetch only the byte ranges of the blocks a window needs.
:func:`gdal_env` scopes the options that make that cheap and robust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import rasterio

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg"}
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")
#: GDAL's block cache defaults to 5 % of RAM and fills as a big mosaic streams past;
#: a row of tiles needs only one row of blocks, so a small cap keeps memory flat.
#: An explicit GDAL_CACHEMAX in the environment wins.
GDAL_CACHE_BYTES = 64 * 2**20
#: For URLs only (they would hide a local file's .ovr/.msk sidecars): no listing of the URL's
#: "folder" on open (one request per raster saved, and buckets that forbid listing work),
#: neighbouring block ranges merged into one request, transient failures retried.
REMOTE_GDAL_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
    "VSI_CACHE": "TRUE",
}


def is_url(text: str) -> bool:
    """True for http(s)/s3/gs/az URLs and GDAL ``/vsi…/`` paths: read over the network, never stat'ed."""
    return text.startswith(URL_SCHEMES) or text.startswith("/vsi")


@dataclass(frozen=True)
class RasterRef:
    """A raster to tile: ``name`` names its tiles, ``href`` is what GDAL opens (a path, URL or VRT XML)."""

    name: str
    href: str = ""
    #: What the index keeps about where the raster came from (STAC item id, datetime, asset hrefs).
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.href:
            object.__setattr__(self, "href", self.name)

    @property
    def remote(self) -> bool:
        return is_url(self.name) or is_url(self.href) or self.href.lstrip().startswith("<VRTDataset")

    @property
    def display_name(self) -> str:
        """The last part of the name, for messages and progress bars."""
        return name_part(self.name)


def name_part(name: str) -> str:
    """The last part of a raster's name: a file name, the last segment of a URL's path (no query), or a
    STAC item id."""
    if is_url(name) or name.startswith("stac://"):
        return PurePosixPath(urlsplit(name).path).name or name
    return Path(name).name


def as_ref(raster: RasterRef | str | Path) -> RasterRef:
    """A path (local, resolved), URL or ref → ref."""
    if isinstance(raster, RasterRef):
        return raster
    text = str(raster)
    return RasterRef(text if is_url(text) else str(Path(text).expanduser().resolve()))


def gdal_env(remote: bool = False) -> rasterio.Env:
    """GDAL options georet reads rasters with, scoped to a ``with`` block (and restored after).

    ``remote`` adds :data:`REMOTE_GDAL_OPTIONS` and the S3 endpoint of :func:`s3_endpoint_options`.
    Options are per thread in rasterio, so each thread that reads enters its own.
    """
    import rasterio  # here, not above: searching an index never opens a raster and need not import GDAL

    options: dict[str, Any] = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_BYTES}
    if remote:
        options.update({k: v for k, v in REMOTE_GDAL_OPTIONS.items() if k not in os.environ})
        options.update(s3_endpoint_options())
    return rasterio.Env(**options)


def s3_endpoint_options() -> dict[str, str]:
    """GDAL's S3 endpoint options from ``AWS_ENDPOINT_URL`` (the variable boto3 and LanceDB read).

    One variable then points rasters and indexes at the same S3-compatible store (MinIO, Ceph, a
    local moto); GDAL's own ``AWS_S3_ENDPOINT``, when set, wins.
    """
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url or "AWS_S3_ENDPOINT" in os.environ:
        return {}
    parts = urlsplit(url)
    return {"AWS_S3_ENDPOINT": parts.netloc, "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE"}
