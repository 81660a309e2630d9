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

from importlib.metadata import PackageNotFoundError, version

from georet.lazy import lazy_exports

try:
    __version__ = version("georet")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

_EXPORTS = {
    "georet.search": ("open_index", "GeoIndex"),
    "georet.index": ("index_raster", "IndexJob", "IndexReport", "remove_sources"),
    "georet.geo": ("TilingParams",),
    "georet.models": ("ModelSpec", "load_model"),
    "georet.errors": ("GeoretError",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["__version__", *(n for names in _EXPORTS.values() for n in names)]
