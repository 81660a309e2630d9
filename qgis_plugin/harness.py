"""A stand-alone QGIS main window for the plugin, outside the QGIS application.

Used by the plugin tests and by ``screenshot.py``: a real QMainWindow, map
canvas and message bar behind the few QgisInterface methods the plugin calls.
"""

from __future__ import annotations

from qgis.gui import QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget


class Interface:
    """The parts of QgisInterface the plugin uses, backed by real widgets."""

    def __init__(self):
        self.window = QMainWindow()
        self.window.setWindowTitle("QGIS — georet")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QgsMessageBar(central)
        self.canvas = QgsMapCanvas(central)
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas)
        self.window.setCentralWidget(central)
        self.docks, self.toolbar, self.menus = [], [], []
        self._toolbar_widget = self.window.addToolBar("Plugins")

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
        self._toolbar_widget.addAction(action)
        self.toolbar.append(action)

    def removeToolBarIcon(self, action):  # noqa: N802
        self._toolbar_widget.removeAction(action)
        self.toolbar.remove(action)

    def addPluginToMenu(self, menu, action):  # noqa: N802
        self.menus.append((menu, action))

    def removePluginMenu(self, menu, action):  # noqa: N802
        self.menus.remove((menu, action))
