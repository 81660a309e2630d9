"""georet: search satellite and aerial imagery with words.

    >>> import georet
    >>> georet.index_raster("mosaic.tif", "tiles.db")
    >>> hits = georet.open_index("tiles.db").search("airport near river", k=10)  # GeoDataFrame

Heavy dependencies (torch, open_clip, lancedb) load on first use, so
``import georet`` and ``georet --help`` stay fast.

Subpackages, imports flowing one way (see docs/architecture.md):
``search`` → ``index`` → ``geo`` / ``models``; ``training`` → ``models`` / ``geo``;
``cli``, ``demo`` and ``doctor`` sit on top and nothing imports them.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("georet")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

_EXPORTS = {
    "open_index": "georet.search",
    "GeoIndex": "georet.search",
    "index_raster": "georet.index",
    "IndexReport": "georet.index",
    "remove_sources": "georet.index",
    "TilingParams": "georet.geo",
    "ModelSpec": "georet.models",
    "load_model": "georet.models",
    "GeoretError": "georet.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'georet' has no attribute {name!r}")
