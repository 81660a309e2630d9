"""The georet search panel: index, query, k, extent, scene → a results layer and list.

Searches go to a ``georet serve`` process the panel starts for the chosen
index on its first search (see :mod:`.server`), so only the first one pays
georet's start-up; if the server cannot start, each search runs the CLI in a
QProcess (an argument list, never a shell). QGIS stays responsive and Cancel
stops the search either way. Right-clicking a hit marks it "More
like this" or "Not this"; the marks (the current label set) steer the next
searches, can be cleared, or saved into the index with ``georet label``.
Dates filter the hits ("when") and choose the acquisitions a change query
("farmland that became housing") compares; a change hit's row shows both dates,
and selecting it shows the place before beside after.
"""

from __future__ import annotations

import json

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsProject,
    QgsSettings,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QProcess, Qt, pyqtSignal
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QMenu,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import runner
from .results_layer import build_layer, build_partner_layer, parse_geojson, replace_results_layer
from .server import ServerProcess, error_of

ANY_SCENE = "(any scene)"
MORE_LIKE_THIS, NOT_THIS, THIS_TILE_IS = "More like this", "Not this", "This tile is a…"
_TABLE_COLUMNS = ("rank", "score", "scene", "tile_id", "acquired")
_PREVIEW_PX = 96
#: The threshold slider runs 0..100 for scores 0.00..1.00; 0 means no threshold.
_SLIDER_STEPS = 100
_WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def _stop(process: QProcess | None) -> None:
    """Kill a process silently: its ``finished`` must not reach a panel that moved on or is gone."""
    if process is None:
        return
    process.blockSignals(True)
    if process.state() != QProcess.ProcessState.NotRunning:
        process.kill()
        process.waitForFinished(5000)


class GeoretDock(QDockWidget):
    """Search panel. ``searchFinished(ok)`` fires after every search (also on error or cancel)."""

    searchFinished = pyqtSignal(bool)
    scenesLoaded = pyqtSignal()
    labelsSaved = pyqtSignal(bool)
    sceneMarked = pyqtSignal(bool)
    previewShown = pyqtSignal(bool)

    def __init__(self, iface, parent=None):
        super().__init__("georet search", parent)
        self.setObjectName("GeoretDock")
        self.iface = iface
        self.process: QProcess | None = None
        self._info_process: QProcess | None = None
        self._cancelled = False
        self.last_collection: dict | None = None
        self.results_layer = None
        self.partner_layer = None
        self.like: list[str] = []
        self.unlike: list[str] = []
        self._row_geometries: list[QgsGeometry] = []
        self._row_tiles: list[str | None] = []  # None for region rows: nothing single to mark
        self._row_before: list[tuple[str, str] | None] = []  # a change hit's earlier (tile id, date)
        self._label_process: QProcess | None = None
        self.use_server = True
        self.server: ServerProcess | None = None
        self._reply = None  # the search request in flight to the server
        self._waiting: tuple[str, list[str]] | None = None  # a search waiting for the server to start
        self._build_ui()
        self.index_edit.setText(QgsSettings().value(runner.SETTING_LAST_INDEX, "", type=str))
        self.executable_edit.setText(runner.configured_executable())
        if self.index_edit.text():
            self.load_scenes()

    # -- UI --------------------------------------------------------------
    def _build_ui(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()

        self.index_edit = QLineEdit()
        self.index_edit.setPlaceholderText("folder built by `georet index`")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_index)
        index_row = QHBoxLayout()
        index_row.addWidget(self.index_edit)
        index_row.addWidget(browse)
        form.addRow("Index", index_row)
        self.index_edit.editingFinished.connect(self._index_changed)

        self.query_edit = QLineEdit()
        self.query_edit.setPlaceholderText("e.g. airport near a river")
        self.query_edit.returnPressed.connect(self.search)
        form.addRow("Query", self.query_edit)

        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 1000)
        self.k_spin.setValue(10)
        form.addRow("Results (k)", self.k_spin)

        self.scene_combo = QComboBox()
        self.scene_combo.addItem(ANY_SCENE)
        form.addRow("Scene", self.scene_combo)

        self.extent_check = QCheckBox("only in current map extent")
        form.addRow("", self.extent_check)

        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, _SLIDER_STEPS)
        self.threshold_label = QLabel("off")
        self.threshold_slider.valueChanged.connect(
            lambda v: self.threshold_label.setText(f"≥ {v / _SLIDER_STEPS:.2f}" if v else "off"))
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.threshold_slider)
        threshold_row.addWidget(self.threshold_label)
        form.addRow("Min score", threshold_row)

        self.dissolve_check = QCheckBox("merge touching hits into regions")
        form.addRow("", self.dissolve_check)

        self.when_edit, self.from_edit, self.to_edit = QLineEdit(), QLineEdit(), QLineEdit()
        dates_row = QHBoxLayout()
        for edit, hint in ((self.when_edit, "when: any"), (self.from_edit, "from: earliest"),
                           (self.to_edit, "to: latest")):
            edit.setPlaceholderText(hint)
            edit.setToolTip("2016, 2016-05, 2015/2020 or 2016-05-01/2016-08-31")
            dates_row.addWidget(edit)
        form.addRow("Dates", dates_row)

        self.executable_edit = QLineEdit()
        self.executable_edit.setPlaceholderText("georet (not found on PATH)")
        self.executable_edit.editingFinished.connect(lambda: runner.set_executable(self.executable_edit.text().strip()))
        form.addRow("georet", self.executable_edit)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.search_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.status_label = QLabel("")
        layout.addWidget(self.status_label)

        self.table = QTableWidget(0, len(_TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_TABLE_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.cellClicked.connect(lambda row, _col: self.zoom_to_row(row))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(
            lambda pos: self.row_menu(self.table.rowAt(pos.y())).exec(self.table.viewport().mapToGlobal(pos)))
        layout.addWidget(self.table)

        self.preview = QWidget()  # a change hit: the place at the earlier date beside the later one
        preview_row = QHBoxLayout(self.preview)
        self.before_image, self.after_image = QLabel(), QLabel()
        self.preview_caption = QLabel()
        for image in (self.before_image, self.after_image):
            image.setFixedSize(_PREVIEW_PX, _PREVIEW_PX)
            image.setScaledContents(True)
            preview_row.addWidget(image)
        preview_row.addWidget(self.preview_caption)
        self.preview.setVisible(False)
        layout.addWidget(self.preview)

        layout.addWidget(QLabel("Labels (right-click a hit: more like this / not this / this tile is a…)"))
        self.labels_list = QListWidget()
        self.labels_list.setMaximumHeight(90)
        layout.addWidget(self.labels_list)
        label_buttons = QHBoxLayout()
        self.clear_labels_button = QPushButton("Clear labels")
        self.clear_labels_button.clicked.connect(self.clear_labels)
        self.save_labels_button = QPushButton("Save labels…")
        self.save_labels_button.clicked.connect(self._ask_and_save_labels)
        label_buttons.addWidget(self.clear_labels_button)
        label_buttons.addWidget(self.save_labels_button)
        layout.addLayout(label_buttons)
        self._show_labels()
        self.setWidget(body)

    def _browse_index(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "georet index folder", self.index_edit.text())
        if folder:
            self.index_edit.setText(folder)
            self._index_changed()

    def _index_changed(self) -> None:
        QgsSettings().setValue(runner.SETTING_LAST_INDEX, self.index_edit.text().strip())
        self.clear_labels()  # tile ids belong to one index
        self._stop_server()  # a server serves one index
        self.load_scenes()

    # -- processes -------------------------------------------------------
    def _executable(self) -> str:
        return self.executable_edit.text().strip() or runner.configured_executable()

    def load_scenes(self) -> None:
        """Fill the scene filter from ``georet info --json`` (in the background)."""
        db = self.index_edit.text().strip()
        if not db or not self._executable():
            return
        _stop(self._info_process)  # a newer index choice supersedes a running lookup
        process = runner.new_process(self)
        process.finished.connect(lambda code, _status: self._scenes_done(process, code))
        self._info_process = process
        process.start(self._executable(), runner.info_args(db))

    def _scenes_done(self, process: QProcess, exit_code: int) -> None:
        current = self.scene_combo.currentText()
        self.scene_combo.clear()
        self.scene_combo.addItem(ANY_SCENE)
        if exit_code == 0:
            try:
                scenes = json.loads(bytes(process.readAllStandardOutput()).decode("utf-8")).get("scenes", [])
            except ValueError:
                scenes = []
            self.scene_combo.addItems(scenes)
            if current in scenes:
                self.scene_combo.setCurrentText(current)
        self.scenesLoaded.emit()

    def _busy(self) -> bool:
        cli = self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning
        return cli or self._reply is not None or self._waiting is not None

    def search(self) -> None:
        """Start a search in the background: on the index's server, else with the CLI."""
        if self._busy():
            return
        db, text, executable = self.index_edit.text().strip(), self.query_edit.text(), self._executable()
        if not executable:
            self._fail("georet executable not found: install georet or set its path in this panel")
            return
        if not db:
            self._fail("choose a georet index first")
            return
        if not text.strip() and not self.like:
            self._fail("type something to search for, or mark a hit 'More like this'")
            return
        scene = self.scene_combo.currentText()
        threshold = self.threshold_slider.value()
        options = dict(bbox=self._extent_bbox() if self.extent_check.isChecked() else None,
                       scene=None if scene == ANY_SCENE else scene, like=self.like, unlike=self.unlike,
                       min_score=threshold / _SLIDER_STEPS if threshold else None,
                       dissolve=self.dissolve_check.isChecked(), when=self.when_edit.text(),
                       from_date=self.from_edit.text(), to_date=self.to_edit.text())
        search = runner.Search(text, self.k_spin.value(), **options)
        args, query = search.cli_args(db), search.query_string()
        self._cancelled = False
        self.search_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        if not self.use_server:
            self._search_with_cli(args)
            return
        server = self._server_for(db)
        if server.state == "ready":
            self._search_on_server(server, query, args)
        elif server.state == "starting":
            self.status_label.setText("starting georet serve for this index…")
            self._waiting = (query, args)
        else:
            self._search_with_cli(args)

    # -- the server ------------------------------------------------------
    def _server_for(self, db: str) -> ServerProcess:
        """The running server of ``db``, or a new one (after a failure, the CLI is used until the index changes)."""
        if self.server is None or self.server.db != db:
            self._stop_server()
            self.server = ServerProcess(self._executable(), db, self)
            self.server.ready.connect(self._server_ready)
        return self.server

    def _server_ready(self, ok: bool) -> None:
        if self._waiting is None:
            return
        query, args = self._waiting
        self._waiting = None
        if ok:
            self._search_on_server(self.server, query, args)
        else:
            self._search_with_cli(args, note=f"georet serve did not start ({self.server.failure}); using the CLI")

    def _search_on_server(self, server: ServerProcess, query: str, args: list[str]) -> None:
        self.status_label.setText("searching…")
        self._reply = server.search(query, lambda status, body: self._server_answered(status, body, args))

    def _server_answered(self, status: int, body: str, args: list[str]) -> None:
        self._reply = None
        if status == 0:  # no answer: the server went away; this search and later ones use the CLI
            self.server.state = "failed"
            self._search_with_cli(args, note="georet serve stopped answering; using the CLI")
        elif status == 200:
            self._show_results(body)
        else:
            self._finish(False, error_of(body))

    def _stop_server(self) -> None:
        if self._waiting is not None:
            self._waiting = None
            self._finish(False, "search cancelled", error=False)
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -- the CLI ---------------------------------------------------------
    def _search_with_cli(self, args: list[str], note: str = "") -> None:
        self.process = runner.new_process(self)
        self.process.finished.connect(self._search_done)
        self.process.errorOccurred.connect(self._process_error)
        self.status_label.setText(f"{note} — searching…" if note else "searching…")
        self.process.start(self._executable(), args)

    def _extent_bbox(self) -> list[float]:
        canvas = self.iface.mapCanvas()
        transform = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), _WGS84, QgsProject.instance())
        box = transform.transformBoundingBox(canvas.extent())
        return [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]

    def cancel(self) -> None:
        if self._waiting is not None:
            self._waiting = None
            self._finish(False, "search cancelled", error=False)
        elif self._reply is not None:
            reply, self._reply = self._reply, None
            reply.abort()
            self._finish(False, "search cancelled", error=False)
        elif self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self._cancelled = True
            self.process.kill()

    def shutdown(self) -> None:
        """Stop every running georet process before the panel goes away (plugin unload)."""
        _stop(self.process)
        _stop(self._info_process)
        _stop(self._label_process)
        self.process = self._info_process = self._label_process = None
        if self._reply is not None:
            self._reply.abort()
            self._reply = None
        self._waiting = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _process_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._finish(False, f"cannot run {self._executable()}: check the georet path in this panel")

    def _search_done(self, exit_code: int, exit_status) -> None:
        if self._cancelled:
            self._finish(False, "search cancelled", error=False)
            return
        stdout = bytes(self.process.readAllStandardOutput()).decode("utf-8")
        stderr = bytes(self.process.readAllStandardError()).decode("utf-8", errors="replace")
        if exit_code != 0 or exit_status != QProcess.ExitStatus.NormalExit:
            self._finish(False, runner.error_message(stderr, exit_code))
            return
        self._show_results(stdout)

    def _show_results(self, geojson_text: str) -> None:
        """Results layer, partners, table and zoom from georet's GeoJSON (from the server or the CLI)."""
        try:
            self.last_collection = parse_geojson(geojson_text)
        except ValueError as exc:
            self._finish(False, str(exc))
            return
        layer = build_layer(geojson_text)
        self.partner_layer = build_partner_layer(layer)
        self.results_layer = replace_results_layer(layer, partners=self.partner_layer)
        self._fill_table()
        if self.results_layer.featureCount():
            self._zoom_to(self.results_layer.extent())
        regions = self.results_layer.fields().indexOf("region") >= 0
        score = (self.last_collection.get("georet") or {}).get("score") or ""
        self._finish(True, f"{self.results_layer.featureCount()} {'regions' if regions else 'tiles'}"
                           + (f" — score: {score}" if score else ""))

    def _finish(self, ok: bool, message: str, error: bool = True) -> None:
        self.search_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status_label.setText(message)
        if not ok and error:
            self._fail(message)
        self.searchFinished.emit(ok)

    def _fail(self, message: str) -> None:
        self.status_label.setText(message)
        self.iface.messageBar().pushCritical("georet", message)

    # -- results ---------------------------------------------------------
    def _fill_table(self) -> None:
        """One row per hit; dissolved results show one row per region (its rank, best score, tile count)."""
        regions = self.results_layer.fields().indexOf("region") >= 0
        features = sorted(self.results_layer.getFeatures(), key=lambda f: f["region" if regions else "rank"])
        change = self.results_layer.fields().indexOf("before_tile_id") >= 0
        self.table.setRowCount(len(features))
        self._row_geometries, self._row_tiles, self._row_before = [], [], []
        self.preview.setVisible(False)
        for row, feature in enumerate(features):
            if regions:
                values = (str(feature["region"]), f"{feature['best_score']:.3f}", "",
                          f"region of {feature['tiles']} tiles", "")
                self._row_tiles.append(None)
            else:
                acquired = _text(feature["acquired"]) if self.results_layer.fields().indexOf("acquired") >= 0 else ""
                if change:
                    acquired = f"{_text(feature['before_acquired'])} → {acquired}"
                values = (str(feature["rank"]), f"{feature['score']:.3f}", _text(feature["scene"]),
                          str(feature["tile_id"]), acquired)
                self._row_tiles.append(str(feature["tile_id"]))
            self._row_before.append((str(feature["before_tile_id"]), _text(feature["before_acquired"]))
                                    if change else None)
            for col, value in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(value))
            self._row_geometries.append(QgsGeometry(feature.geometry()))

    # -- labels ----------------------------------------------------------
    def row_menu(self, row: int) -> QMenu:
        """The right-click menu of a result row: mark its tile and search again."""
        menu = QMenu(self)
        tile_id = self._row_tiles[row] if 0 <= row < len(self._row_tiles) else None
        for text, positive in ((MORE_LIKE_THIS, True), (NOT_THIS, False)):
            action = menu.addAction(text)
            action.setEnabled(tile_id is not None)
            action.triggered.connect(lambda _checked=False, p=positive: self.mark(tile_id, p))
        action = menu.addAction(THIS_TILE_IS)
        action.setEnabled(tile_id is not None)
        action.triggered.connect(lambda _checked=False: self._ask_and_mark_scene(tile_id))
        return menu

    def _ask_and_mark_scene(self, tile_id: str) -> None:
        scenes = [self.scene_combo.itemText(i) for i in range(1, self.scene_combo.count())]
        scene, ok = QInputDialog.getItem(self, THIS_TILE_IS, "Class (a known scene, or a new one):", scenes, 0, True)
        if ok and scene.strip():
            self.mark_scene(tile_id, scene.strip())

    def mark_scene(self, tile_id: str, scene: str) -> None:
        """"This tile is a ``scene``" (``georet relabel --mark``, in the background): the tile becomes an example
        of the class, every tile is relabelled, then the scene list and the search are refreshed."""
        process = runner.new_process(self)
        process.finished.connect(lambda code, _status: self._scene_marked(process, code, scene))
        self._label_process = process
        self.status_label.setText(f"marking the tile as {scene} and relabelling…")
        process.start(self._executable(), runner.mark_scene_args(self.index_edit.text().strip(), tile_id, scene))

    def _scene_marked(self, process: QProcess, exit_code: int, scene: str) -> None:
        if exit_code == 0:
            counts = json.loads(bytes(process.readAllStandardOutput()).decode("utf-8"))
            self.status_label.setText(f"relabelled: {scene} now has {counts.get(scene, 0)} tiles")
            self.load_scenes()
        else:
            self._fail(runner.error_message(bytes(process.readAllStandardError()).decode("utf-8", "replace"),
                                            exit_code))
        self.sceneMarked.emit(exit_code == 0)

    def mark(self, tile_id: str, positive: bool) -> None:
        """Add ``tile_id`` to the current labels (moving it if marked the other way) and search again."""
        for marks in (self.like, self.unlike):
            if tile_id in marks:
                marks.remove(tile_id)
        (self.like if positive else self.unlike).append(tile_id)
        self._show_labels()
        self.search()

    def clear_labels(self) -> None:
        self.like, self.unlike = [], []
        self._show_labels()

    def _show_labels(self) -> None:
        self.labels_list.clear()
        self.labels_list.addItems([f"+ {t}" for t in self.like] + [f"− {t}" for t in self.unlike])
        self.clear_labels_button.setEnabled(bool(self.like or self.unlike))
        self.save_labels_button.setEnabled(bool(self.like or self.unlike))

    def _ask_and_save_labels(self) -> None:
        name, ok = QInputDialog.getText(self, "Save labels", "Label set name (kept in the index):", text="default")
        if ok and name.strip():
            self.save_labels(name.strip())

    def save_labels(self, name: str) -> None:
        """Save the current labels into the index as set ``name`` (``georet label``, in the background)."""
        process = runner.new_process(self)
        process.finished.connect(lambda code, _status: self._labels_saved(process, code, name))
        self._label_process = process
        process.start(self._executable(), runner.label_args(self.index_edit.text().strip(), name,
                                                            self.like, self.unlike))

    def _labels_saved(self, process: QProcess, exit_code: int, name: str) -> None:
        if exit_code == 0:
            self.status_label.setText(f"labels saved as set '{name}'")
        else:
            self._fail(runner.error_message(bytes(process.readAllStandardError()).decode("utf-8", "replace"),
                                            exit_code))
        self.labelsSaved.emit(exit_code == 0)

    def _to_canvas(self):
        canvas = self.iface.mapCanvas()
        return QgsCoordinateTransform(_WGS84, canvas.mapSettings().destinationCrs(), QgsProject.instance())

    def _zoom_to(self, extent_wgs84) -> None:
        canvas = self.iface.mapCanvas()
        box = self._to_canvas().transformBoundingBox(extent_wgs84)
        box.scale(1.2)
        canvas.setExtent(box)
        canvas.refresh()

    def zoom_to_row(self, row: int) -> None:
        """Zoom to the tile of one result row and flash it; a change hit also shows its place before and after."""
        geometry = self._row_geometries[row]
        self._zoom_to(geometry.boundingBox())
        self.iface.mapCanvas().flashGeometries([geometry], _WGS84)
        self.show_before_after(row)

    def show_before_after(self, row: int) -> None:
        """The thumbnails of a change hit's earlier and later tile, side by side (from the index's server)."""
        before = self._row_before[row] if 0 <= row < len(self._row_before) else None
        self.preview.setVisible(before is not None)
        if before is None:
            return
        before_id, before_date = before
        after_id = self._row_tiles[row]
        self.preview_caption.setText(f"before: {before_date}\n{before_id}\nafter: {self.table.item(row, 4).text()}")
        self.before_image.clear()
        self.after_image.clear()
        if self.server is None or self.server.state != "ready":  # the CLI has no thumbnails to hand: ids only
            self.previewShown.emit(False)
            return
        pending = {before_id: self.before_image, after_id: self.after_image}
        shown: list[bool] = []

        def loaded(tile_id: str, status: int, png: bytes) -> None:
            image = pending.pop(tile_id)
            pixmap = QPixmap()
            shown.append(status == 200 and pixmap.loadFromData(png))
            if shown[-1]:
                image.setPixmap(pixmap)
            if not pending:
                self.previewShown.emit(all(shown))

        for tile_id in list(pending):
            self.server.thumbnail(tile_id, lambda status, png, t=tile_id: loaded(t, status, png))


def _text(value) -> str:
    """A layer attribute as text: empty for NULL (QGIS gives NULL as a QVariant, not None); a date (OGR reads a
    column of full ISO dates as one) as ISO."""
    if value is None or (hasattr(value, "isNull") and value.isNull()) or str(value) == "NULL":
        return ""
    if isinstance(value, (QDate, QDateTime)):
        return value.toString(Qt.DateFormat.ISODate)
    return str(value)
