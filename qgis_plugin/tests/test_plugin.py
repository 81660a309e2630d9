"""The georet plugin inside real QGIS, talking to the real georet CLI."""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl

import processing
import pytest
from qgis.core import QgsApplication, QgsGeometry, QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer
from qgis.PyQt.QtCore import QEventLoop, Qt, QTimer

import georet_qgis
from georet_qgis import runner
from georet_qgis.results_layer import LAYER_NAME

PLUGIN_DIR = Path(georet_qgis.__file__).parent
HOSTILE_QUERY = '"; rm -rf ~ #'


def wait_for(signal, timeout_ms: int = 120_000) -> list:
    """Run the Qt event loop until ``signal`` fires; return its arguments."""
    loop, got = QEventLoop(), []
    signal.connect(lambda *args: (got.append(args), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    assert got, "timed out waiting for the signal"
    return list(got[0])


@pytest.fixture
def plugin(iface, env):
    runner.set_executable(env["GEORET_EXE"])
    plug = georet_qgis.classFactory(iface)
    plug.initGui()
    yield plug
    plug.unload()
    runner.set_executable("")


def results_layers():
    return [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.name() == LAYER_NAME]


def test_plugin_imports_only_qgis_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"qgis", "__future__"}
    for path in PLUGIN_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_metadata():
    text = (PLUGIN_DIR / "metadata.txt").read_text()
    for line in ("qgisMinimumVersion=3.22", "supportsQt6=True", "hasProcessingProvider=yes"):
        assert line in text.splitlines()


def test_class_factory_loads_and_unloads(iface, env):
    plug = georet_qgis.classFactory(iface)
    plug.initGui()
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("georet") is not None
    assert {a.id() for a in registry.providerById("georet").algorithms()} == {"georet:indexraster", "georet:searchtiles"}
    assert len(iface.docks) == 1 and len(iface.toolbar) == 1
    plug.unload()
    assert registry.providerById("georet") is None and not iface.docks and not iface.toolbar
    for heavy in ("torch", "open_clip", "lancedb"):
        assert heavy not in sys.modules


def test_panel_search_builds_results_layer_and_replaces_it(plugin, iface, env):
    dock = plugin.dock
    dock.index_edit.setText(env["GEORET_TEST_DB"])
    dock._index_changed()
    wait_for(dock.scenesLoaded)
    assert dock.scene_combo.count() >= 2  # "(any scene)" + the index's scenes

    dock.query_edit.setText("storage tanks")
    dock.k_spin.setValue(4)
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    (layer,) = results_layers()
    assert layer.featureCount() == 4 and layer.crs().authid() == "EPSG:4326"
    names = set(layer.fields().names())
    assert {"rank", "score", "tile_id", "scene", "scene_score", "source"} <= names
    assert sorted(f["rank"] for f in layer.getFeatures()) == [1, 2, 3, 4]
    assert layer.labelsEnabled() and layer.renderer().classAttribute() == "score"
    assert dock.table.rowCount() == 4

    dock.zoom_to_row(2)
    tile = next(f for f in layer.getFeatures() if f["rank"] == 3).geometry().boundingBox()
    assert iface.canvas.extent().contains(tile)

    dock.k_spin.setValue(2)
    dock.query_edit.returnPressed.emit()  # Enter searches too
    assert wait_for(dock.searchFinished) == [True]
    (layer,) = results_layers()  # replaced, not added
    assert layer.featureCount() == 2


def _search_in_panel(dock, db: str, text: str, k: int) -> None:
    """Choose the index, type the query, search, and wait for a successful finish."""
    dock.index_edit.setText(db)
    dock._index_changed()
    dock.query_edit.setText(text)
    dock.k_spin.setValue(k)
    dock.search()
    assert wait_for(dock.searchFinished) == [True]


def _trigger(menu, text: str) -> None:
    (action,) = [a for a in menu.actions() if a.text() == text]
    assert action.isEnabled()
    action.trigger()


def test_feedback_loop_marks_threshold_and_regions(plugin, env):
    from georet_qgis.dock import MORE_LIKE_THIS, NOT_THIS

    dock = plugin.dock
    _search_in_panel(dock, env["GEORET_TEST_DB"], "river", 6)
    first = [dock.table.item(row, 3).text() for row in range(dock.table.rowCount())]

    _trigger(dock.row_menu(0), MORE_LIKE_THIS)  # right-click → "More like this" searches again at once
    assert wait_for(dock.searchFinished) == [True]
    _trigger(dock.row_menu(0), NOT_THIS)
    assert wait_for(dock.searchFinished) == [True]
    second = [dock.table.item(row, 3).text() for row in range(dock.table.rowCount())]
    assert dock.like == [first[0]] and dock.unlike == [dock.unlike[0]] and dock.unlike[0] != first[0]
    assert [dock.labels_list.item(i).text() for i in range(2)] == [f"+ {first[0]}", f"− {dock.unlike[0]}"]
    assert not {*dock.like, *dock.unlike} & set(second) and len(second) == 6  # marked tiles never come back
    assert "score: cosine similarity to the query" in dock.status_label.text()

    dock.save_labels("qgis-set")
    assert wait_for(dock.labelsSaved) == [True]
    saved = json.loads(runner.run_blocking(env["GEORET_EXE"], ["label", "--db", env["GEORET_TEST_DB"], "--json"]))
    assert saved["qgis-set"] == {"positive": dock.like, "negative": dock.unlike}

    scores = sorted((f["score"] for f in results_layers()[0].getFeatures()), reverse=True)
    step = int(scores[2] * 100) + 1  # just above the third hit: at most two stay
    dock.threshold_slider.setValue(step)
    assert dock.threshold_label.text() == f"≥ {step / 100:.2f}"
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    (layer,) = results_layers()
    assert sorted((f["score"] for f in layer.getFeatures()), reverse=True) == [s for s in scores if s >= step / 100]
    assert layer.featureCount() <= 2

    dock.threshold_slider.setValue(0)
    dock.clear_labels()
    assert dock.labels_list.count() == 0 and not dock.save_labels_button.isEnabled()
    dock.dissolve_check.setChecked(True)
    dock.k_spin.setValue(12)
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    (regions,) = results_layers()
    assert {"region", "best_score", "mean_score", "tiles"} <= set(regions.fields().names())
    assert sum(f["tiles"] for f in regions.getFeatures()) == 12 > regions.featureCount()
    assert regions.renderer().classAttribute() == "best_score"
    assert dock.table.item(0, 3).text().startswith("region of ")
    assert not dock.row_menu(0).actions()[0].isEnabled()  # a region is not one tile to mark


def test_this_tile_is_a_class_relabels_the_index(plugin, env, tmp_path):
    """Right-click → "This tile is a…" on a hit of an index of its own: the tile becomes an example of the
    class, the index is relabelled, and the scene filter offers the class."""
    from georet_qgis.dock import THIS_TILE_IS

    db = str(tmp_path / "own.db")
    runner.run_blocking(env["GEORET_EXE"], ["index", env["GEORET_TEST_RASTER"], "--db", db, "--tile-size", "64",
                                            "--model", "georet-tiny", "--device", "cpu"])
    dock = plugin.dock
    _search_in_panel(dock, db, "forest", 4)
    assert THIS_TILE_IS in [a.text() for a in dock.row_menu(0).actions()]
    tile_id = dock.table.item(0, 3).text()
    dock.mark_scene(tile_id, "orchard")
    assert wait_for(dock.sceneMarked) == [True]
    assert dock.status_label.text().startswith("relabelled: orchard now has ")
    marked = json.loads(runner.run_blocking(env["GEORET_EXE"], ["label", "--db", db, "--json"]))
    assert marked == {"orchard": {"positive": [tile_id], "negative": []}}
    scenes = json.loads(runner.run_blocking(env["GEORET_EXE"], ["info", "--db", db, "--json"]))["scenes"]
    assert "orchard" in scenes
    dock.mark_scene(tile_id, "no/such")
    assert wait_for(dock.sceneMarked) == [False]
    assert "label set name 'no/such'" in dock.status_label.text()


def test_searches_go_to_one_warm_server_stopped_on_unload(iface, env):
    runner.set_executable(env["GEORET_EXE"])
    plug = georet_qgis.classFactory(iface)
    plug.initGui()
    dock = plug.dock
    _search_in_panel(dock, env["GEORET_TEST_DB"], "storage tanks", 3)
    server = dock.server
    assert server is not None and server.state == "ready" and server.url.startswith("http://127.0.0.1:")
    pid = server.process.processId()
    dock.k_spin.setValue(5)
    started = time.perf_counter()
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    print(f"panel round trip on the warm server: {1000 * (time.perf_counter() - started):.0f} ms")
    assert dock.server is server and server.process.processId() == pid and dock.process is None  # no CLI run
    assert results_layers()[0].featureCount() == 5
    dock.index_edit.setText(env["GEORET_TEST_DB"] + "-other")
    dock._index_changed()  # another index: this server stops
    assert dock.server is None and server.process.state() == server.process.ProcessState.NotRunning
    _search_in_panel(dock, env["GEORET_TEST_DB"], "storage tanks", 2)
    second = dock.server.process
    plug.unload()
    assert second.state() == second.ProcessState.NotRunning
    runner.set_executable("")


def test_panel_falls_back_to_the_cli_when_the_server_cannot_start(plugin, env, tmp_path):
    wrapper = tmp_path / "georet-no-serve"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = serve ]; then echo "Error: serve is broken here" >&2; exit 1; fi\n'
                       f'exec "{env["GEORET_EXE"]}" "$@"\n')
    wrapper.chmod(0o755)
    dock = plugin.dock
    dock.executable_edit.setText(str(wrapper))
    _search_in_panel(dock, env["GEORET_TEST_DB"], "storage tanks", 3)
    assert dock.server.state == "failed" and dock.server.failure == "serve is broken here"
    assert results_layers()[0].featureCount() == 3 and dock.process is not None  # answered by the CLI


def test_relational_search_draws_partners_apart(plugin, env):
    from georet_qgis.results_layer import PARTNER_LAYER_NAME

    dock = plugin.dock
    _search_in_panel(dock, env["GEORET_TEST_DB"], "water near houses", 3)
    (layer,) = results_layers()
    (partners,) = QgsProject.instance().mapLayersByName(PARTNER_LAYER_NAME)
    assert partners.featureCount() == layer.featureCount() == 3
    hits = {f["rank"]: f for f in layer.getFeatures()}
    for partner in partners.getFeatures():
        hit = hits[partner["hit_rank"]]
        assert partner["tile_id"] == hit["partners"].split(",")[0] != hit["tile_id"]
        assert partner.geometry().equals(QgsGeometry.fromWkt(hit["partner_wkt"]))
    symbol = partners.renderer().symbol().symbolLayer(0)
    assert symbol.strokeStyle() == Qt.DashLine and symbol.color().alpha() == 0

    dock.query_edit.setText("storage tanks")  # a plain query clears the partners
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    assert QgsProject.instance().mapLayersByName(PARTNER_LAYER_NAME) == []


def test_dates_filter_and_change_hits_show_before_beside_after(plugin, env):
    """The test index holds the UTM place at two dates (tests/test_qgis_plugin.py)."""
    dock = plugin.dock
    dock.when_edit.setText("2021")
    _search_in_panel(dock, env["GEORET_TEST_DB"], "houses", 5)
    assert [dock.table.item(r, 4).text() for r in range(dock.table.rowCount())] == ["2021-06-15"] * 5

    dock.when_edit.setText("")
    dock.query_edit.setText("farmland that became houses")
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    dates = {dock.table.item(r, 4).text() for r in range(dock.table.rowCount())}
    assert dock.table.rowCount() and dates == {"2016-05-01 → 2021-06-15"}
    assert not dock.preview.isVisible()
    QTimer.singleShot(0, lambda: dock.zoom_to_row(0))
    assert wait_for(dock.previewShown) == [True]  # both thumbnails came from the index's server
    assert "before: 2016-05-01" in dock.preview_caption.text()
    assert not dock.before_image.pixmap().isNull() and not dock.after_image.pixmap().isNull()

    dock.from_edit.setText("2021")  # the later date cannot be the earlier side: nothing to compare
    dock.search()
    assert wait_for(dock.searchFinished) == [True] and dock.table.rowCount() == 0
    dock.from_edit.setText("")


def test_one_search_reads_the_same_to_the_cli_and_the_server():
    search = runner.Search("airport near river", 7, bbox=(1, 2.5, 3, 4), scene="airport", like=("a#1", "b#2"),
                           unlike=("c#3",), min_score=0.25, dissolve=True, when=" 2015/2020 ", to_date="2020")
    assert search.cli_args("x.db") == [
        "query", "airport near river", "--db", "x.db", "--format", "geojson", "-k", "7", "--bbox", "1.0,2.5,3.0,4.0",
        "--scene", "airport", "--like", "a#1", "--like", "b#2", "--unlike", "c#3", "--min-score", "0.25", "--dissolve",
        "--when", "2015/2020", "--to", "2020"]
    assert parse_qsl(search.query_string()) == [
        ("q", "airport near river"), ("k", "7"), ("bbox", "1.0,2.5,3.0,4.0"), ("scene", "airport"), ("like", "a#1"),
        ("like", "b#2"), ("unlike", "c#3"), ("min_score", "0.25"), ("dissolve", "true"), ("when", "2015/2020"),
        ("to", "2020")]
    examples_only = runner.Search("  ", 3, like=("a#1",))  # no text: the examples are the query
    assert examples_only.cli_args("x.db")[:2] == ["query", "--db"]
    assert parse_qsl(examples_only.query_string()) == [("k", "3"), ("like", "a#1")]


def test_hostile_query_reaches_georet_literally(plugin, env):
    dock = plugin.dock
    dock.index_edit.setText(env["GEORET_TEST_DB"])
    dock.query_edit.setText(HOSTILE_QUERY)
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    assert dock.last_collection["georet"]["query"] == HOSTILE_QUERY


def test_extent_filter_sends_canvas_extent(plugin, iface, env):
    dock = plugin.dock
    dock.index_edit.setText(env["GEORET_TEST_DB"])
    dock.query_edit.setText("river")
    dock.k_spin.setValue(50)
    dock.search()
    wait_for(dock.searchFinished)
    everything = results_layers()[0].featureCount()
    first = next(f for f in results_layers()[0].getFeatures() if f["rank"] == 1).geometry().boundingBox()
    iface.canvas.setDestinationCrs(results_layers()[0].crs())
    iface.canvas.setExtent(QgsRectangle(first.center().x() - 1e-5, first.center().y() - 1e-5,
                                        first.center().x() + 1e-5, first.center().y() + 1e-5))
    dock.extent_check.setChecked(True)
    dock.search()
    assert wait_for(dock.searchFinished) == [True]
    layer = results_layers()[0]
    assert 1 <= layer.featureCount() < everything
    assert all(f.geometry().boundingBox().intersects(first) for f in layer.getFeatures())


def test_cancel_kills_the_search(plugin, env):
    dock = plugin.dock
    dock.index_edit.setText(env["GEORET_TEST_DB"])
    dock.query_edit.setText("harbour")
    dock.search()
    QTimer.singleShot(200, dock.cancel)
    assert wait_for(dock.searchFinished) == [False]
    assert dock.status_label.text() == "search cancelled"
    assert not results_layers()
    assert dock.search_button.isEnabled() and not dock.cancel_button.isEnabled()


def test_georet_error_shows_its_one_line_message(plugin, iface, env, tmp_path):
    dock = plugin.dock
    dock.index_edit.setText(str(tmp_path / "no_index_here"))
    dock.query_edit.setText("airport")
    dock.search()
    assert wait_for(dock.searchFinished) == [False]
    messages = [item.text() for item in iface.bar.items()]
    assert any(m.startswith("no georet index at") for m in messages), messages
    assert not results_layers()


def test_missing_executable_is_reported(plugin, iface, env):
    dock = plugin.dock
    dock.executable_edit.setText("/nonexistent/georet")
    dock.index_edit.setText(env["GEORET_TEST_DB"])
    dock.query_edit.setText("airport")
    dock.search()
    assert wait_for(dock.searchFinished) == [False]
    assert any("cannot run /nonexistent/georet" in item.text() for item in iface.bar.items())


def test_index_chooser_is_remembered(iface, env):
    runner.set_executable(env["GEORET_EXE"])
    first = georet_qgis.classFactory(iface)
    first.initGui()
    first.dock.index_edit.setText(env["GEORET_TEST_DB"])
    first.dock._index_changed()
    first.unload()
    second = georet_qgis.classFactory(iface)
    second.initGui()
    assert second.dock.index_edit.text() == env["GEORET_TEST_DB"]
    second.unload()


def test_processing_index_then_search(plugin, env, tmp_path):
    db = str(tmp_path / "proc.db")
    raster = QgsRasterLayer(env["GEORET_TEST_RASTER"], "test raster")
    assert raster.isValid()
    result = processing.run("georet:indexraster", {"INPUT": raster, "TILE_SIZE": "64", "MODEL": "georet-tiny",
                                                   "PRETRAINED": "", "CHECKPOINT": "", "DB": db})
    assert Path(result["DB"], "georet.json").is_file()
    info = json.loads(runner.run_blocking(env["GEORET_EXE"], runner.info_args(db)))
    assert info["tiles"] == 16

    out = processing.run("georet:searchtiles", {"DB": db, "QUERY": "forest", "K": 5, "SCENE": "",
                                                "OUTPUT": "memory:"})["OUTPUT"]
    layer = out if isinstance(out, QgsVectorLayer) else QgsVectorLayer(out)
    assert layer.featureCount() == 5
    assert "score" in layer.fields().names()


def test_processing_error_is_georets_message(plugin, env, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="georet: no georet index at"):
        processing.run("georet:searchtiles", {"DB": str(tmp_path / "missing"), "QUERY": "x", "K": 3,
                                              "OUTPUT": "memory:"})
