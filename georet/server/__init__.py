"""Server: ``georet serve`` — one index kept warm behind an HTTP API (OpenAPI at /docs) and a web map at /.

Public surface: :func:`create_app`, :func:`serve`, :func:`check_bind`. A thin
shell over :mod:`georet.search`, like the CLI and the QGIS plugin.
"""

from georet.server.app import check_bind, create_app, serve

__all__ = ["check_bind", "create_app", "serve"]
