"""Screenshot of the georet panel in a real QGIS window (run under Xvfb).

    xvfb-run -s "-screen 0 1600x1000x24" /usr/bin/python3 qgis_plugin/screenshot.py \\
        --raster georet/data/demo_mosaic.tif --tile-size 150 --query "airport near river" --out docs/qgis_panel.png

Builds a georet index of the raster with the georet CLI (``--model``/``--pretrained``
choose the model; default: georet's bundled default), loads the raster, runs a
panel search and saves the window as PNG (hits and, for relational queries,
their partner tiles).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Interface  # noqa: E402
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer  # noqa: E402
from qgis.PyQt.QtCore import QEventLoop, QTimer  # noqa: E402

import georet_qgis  # noqa: E402
from georet_qgis import runner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", required=True)
    parser.add_argument("--query", default="river")
    parser.add_argument("--tile-size", default="50m")
    parser.add_argument("--model", default="")
    parser.add_argument("--pretrained", default="")
    parser.add_argument("--georet", default="", help="georet executable (default: setting or PATH)")
    parser.add_argument("--out", type=Path, default=Path("docs/qgis_panel.png"))
    args = parser.parse_args()

    app = QgsApplication([], True)
    app.initQgis()
    if args.georet:
        runner.set_executable(args.georet)
    db = str(Path(tempfile.mkdtemp(prefix="georet-shot-")) / "index.db")
    runner.run_blocking(runner.configured_executable(),
                        runner.index_args(args.raster, db, args.tile_size, args.model, args.pretrained))

    iface = Interface()
    raster = QgsRasterLayer(args.raster, Path(args.raster).stem)
    QgsProject.instance().addMapLayer(raster)
    iface.canvas.setDestinationCrs(raster.crs())
    iface.canvas.setLayers([raster])
    iface.canvas.setExtent(raster.extent())
    plugin = georet_qgis.classFactory(iface)
    plugin.initGui()
    iface.window.resize(1500, 900)
    iface.window.show()

    dock = plugin.dock
    dock.index_edit.setText(db)
    dock.query_edit.setText(args.query)
    dock.k_spin.setValue(5)
    loop = QEventLoop()
    dock.searchFinished.connect(lambda ok: loop.quit())
    dock.search()
    loop.exec()
    results = [*QgsProject.instance().mapLayersByName("georet results"),
               *QgsProject.instance().mapLayersByName("georet partners")]
    iface.canvas.setLayers(results + [raster])
    iface.canvas.setExtent(raster.extent())
    iface.canvas.refresh()
    wait = QEventLoop()
    QTimer.singleShot(3000, wait.quit)
    wait.exec()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iface.window.grab().save(str(args.out))
    print(args.out)
    plugin.unload()
    QgsProject.instance().clear()
    iface.window.close()
    del plugin, iface
    app.exitQgis()


if __name__ == "__main__":
    main()
