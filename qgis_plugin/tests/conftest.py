"""Real QGIS 3.22 (Debian python3-qgis), headless, with a minimal interface object.

Run under the system Python that has QGIS; ``tests/test_qgis_plugin.py`` in the
main suite builds a real index with the real georet CLI and starts these tests
with GEORET_EXE / GEORET_TEST_DB / GEORET_TEST_RASTER set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the folder holding georet_qgis/
sys.path.append("/usr/share/qgis/python/plugins")  # QGIS's own Processing plugin

from harness import Interface  # noqa: E402
from qgis.core import QgsApplication, QgsProject  # noqa: E402

_APP = QgsApplication([], True)
_APP.initQgis()
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()


_INTERFACE = Interface()  # one main window for the session, as in QGIS itself


@pytest.fixture
def iface():
    QgsProject.instance().clear()
    _INTERFACE.bar.clearWidgets()
    return _INTERFACE


@pytest.fixture
def env():
    missing = [k for k in ("GEORET_EXE", "GEORET_TEST_DB", "GEORET_TEST_RASTER") if not os.environ.get(k)]
    if missing:
        pytest.skip(f"run through tests/test_qgis_plugin.py (missing {', '.join(missing)})")
    return {k: os.environ[k] for k in ("GEORET_EXE", "GEORET_TEST_DB", "GEORET_TEST_RASTER")}
