"""Fixtures for georet's tests and benchmarks, in one place both can import (as ``numpy.testing``).

:mod:`~georet.testing.rasters` writes small real GeoTIFFs, :mod:`~georet.testing.tables`
synthetic index rows at any scale, :mod:`~georet.testing.loopback` stand-ins for
remote services on 127.0.0.1. Nothing in the library imports this package.
"""
