"""georet QGIS plugin: a search panel and Processing algorithms over the ``georet`` CLI.

Only ``qgis.*``, ``qgis.PyQt.*`` and the standard library are imported here:
georet itself (torch, open_clip, lancedb) runs in its own environment as a
separate process, so it can never break QGIS's Python.
"""


def classFactory(iface):  # noqa: N802 (QGIS's required name)
    from .plugin import GeoretPlugin

    return GeoretPlugin(iface)
