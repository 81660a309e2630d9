"""Processing algorithms "Index raster" and "Search tiles": usable from the toolbox,
batch mode and Model Builder. Both run the georet CLI (see :mod:`runner`)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureSink,
    QgsJsonUtils,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingProvider,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from . import runner

_ICON = str(Path(__file__).with_name("icon.svg"))


class _GeoretAlgorithm(QgsProcessingAlgorithm):
    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def icon(self) -> QIcon:
        return QIcon(_ICON)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def _run(self, args: list[str], feedback, on_line=None) -> str:
        try:
            return runner.run_blocking(runner.configured_executable(), args,
                                       is_canceled=feedback.isCanceled if feedback else (lambda: False),
                                       on_stderr_line=on_line)
        except runner.GeoretFailed as exc:
            raise QgsProcessingException(f"georet: {exc}") from None


class IndexRasterAlgorithm(_GeoretAlgorithm):
    INPUT, DB, TILE_SIZE, MODEL, PRETRAINED, CHECKPOINT = "INPUT", "DB", "TILE_SIZE", "MODEL", "PRETRAINED", "CHECKPOINT"

    def name(self) -> str:
        return "indexraster"

    def displayName(self) -> str:  # noqa: N802
        return "Index raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Cuts a raster into tiles, embeds them and adds them to a georet index folder "
                "(created if needed; tiles already indexed are skipped). Runs `georet index`.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterString(self.TILE_SIZE, "Tile size (pixels, or metres like 200m)",
                                                       defaultValue="256"))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model architecture (empty: georet's default)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString(self.PRETRAINED, "Pretrained tag or weights file",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFile(self.CHECKPOINT, "georet training checkpoint", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.DB, "Index folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("no raster given")
        raster = layer.source()
        db = self.parameterAsString(parameters, self.DB, context)
        args = runner.index_args(raster, db, self.parameterAsString(parameters, self.TILE_SIZE, context),
                                 self.parameterAsString(parameters, self.MODEL, context),
                                 self.parameterAsString(parameters, self.PRETRAINED, context),
                                 self.parameterAsString(parameters, self.CHECKPOINT, context))

        def on_line(line: str) -> None:
            progress = runner.parse_progress(line)
            if progress and progress[1]:
                feedback.setProgress(100.0 * progress[0] / progress[1])
            elif line and not line.startswith("{"):
                feedback.pushInfo(line)

        self._run(args, feedback, on_line)
        return {self.DB: db}


class SearchTilesAlgorithm(_GeoretAlgorithm):
    DB, QUERY, K, EXTENT, SCENE, OUTPUT = "DB", "QUERY", "K", "EXTENT", "SCENE", "OUTPUT"

    def name(self) -> str:
        return "searchtiles"

    def displayName(self) -> str:  # noqa: N802
        return "Search tiles"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Finds the tiles of a georet index that best match a text query and writes their "
                "footprints (EPSG:4326) with rank and score. Runs `georet query`.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.DB, "Index folder",
                                                     behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Query text"))
        self.addParameter(QgsProcessingParameterNumber(self.K, "Number of tiles", defaultValue=10, minValue=1))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Only within extent", optional=True))
        self.addParameter(QgsProcessingParameterString(self.SCENE, "Scene class", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Matching tiles",
                                                            QgsProcessing.SourceType.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
        bbox = None
        if parameters.get(self.EXTENT):
            box = self.parameterAsExtent(parameters, self.EXTENT, context, wgs84)
            bbox = [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]
        search = runner.Search(self.parameterAsString(parameters, self.QUERY, context),
                               self.parameterAsInt(parameters, self.K, context), bbox=bbox,
                               scene=self.parameterAsString(parameters, self.SCENE, context) or None)
        args = search.cli_args(self.parameterAsString(parameters, self.DB, context))
        geojson = self._run(args, feedback)
        fields = QgsJsonUtils.stringToFields(geojson)
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields,
                                             QgsWkbTypes.Type.Polygon, wgs84)
        for feature in QgsJsonUtils.stringToFeatureList(geojson, fields):
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        return {self.OUTPUT: dest_id}


class GeoretProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "georet"

    def name(self) -> str:
        return "georet"

    def icon(self) -> QIcon:
        return QIcon(_ICON)

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(IndexRasterAlgorithm())
        self.addAlgorithm(SearchTilesAlgorithm())
