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

from qgis.core import QgsApplication, QgsProject  # noqa: E402
from qgis.gui import QgsMapCanvas, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402

_APP = QgsApplication([], True)
_APP.initQgis()
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()


class Interface:
    """The parts of QgisInterface the plugin uses, backed by real widgets."""

    def __init__(self):
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.window.setCentralWidget(self.canvas)
        self.bar = QgsMessageBar(self.window)
        self.docks, self.toolbar, self.menus = [], [], []

    def mainWindow(self):  # noqa: N802
        return self.window

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def messageBar(self):  # noqa: N802
        return self.bar

    def addDockWidget(self, area, dock):  # noqa: N802
        self.window.addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock):  # noqa: N802
        self.window.removeDockWidget(dock)
        self.docks.remove(dock)

    def addToolBarIcon(self, action):  # noqa: N802
        self.toolbar.append(action)

    def removeToolBarIcon(self, action):  # noqa: N802
        self.toolbar.remove(action)

    def addPluginToMenu(self, menu, action):  # noqa: N802
        self.menus.append((menu, action))

    def removePluginMenu(self, menu, action):  # noqa: N802
        self.menus.remove((menu, action))


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
