"""georet's GeoJSON hits → a styled in-memory QGIS layer ("georet results")."""

from __future__ import annotations

import json

from qgis.core import (
    QgsClassificationEqualInterval,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsJsonUtils,
    QgsPalLayerSettings,
    QgsProject,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

LAYER_NAME = "georet results"
_MARKER = "georet/results"
_SCORE_CLASSES = 5


def parse_geojson(text: str) -> dict:
    """The FeatureCollection georet printed (raises ValueError if it is not one)."""
    collection = json.loads(text)
    if collection.get("type") != "FeatureCollection":
        raise ValueError("georet did not return a GeoJSON FeatureCollection")
    return collection


def build_layer(geojson_text: str, name: str = LAYER_NAME) -> QgsVectorLayer:
    """An EPSG:4326 memory layer with every property of the hits as a field."""
    fields = QgsJsonUtils.stringToFields(geojson_text)
    features = QgsJsonUtils.stringToFeatureList(geojson_text, fields)
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
    provider = layer.dataProvider()
    provider.addAttributes(fields.toList())
    layer.updateFields()
    provider.addFeatures(features)
    layer.updateExtents()
    layer.setCustomProperty(_MARKER, True)
    _style(layer)
    return layer


def _style(layer: QgsVectorLayer) -> None:
    """Outline colour graduated by score (yellow → red), label = rank."""
    base = QgsFillSymbol.createSimple({"color": "255,255,255,40", "outline_width": "0.8"})
    renderer = QgsGraduatedSymbolRenderer("score")
    renderer.setSourceSymbol(base)
    renderer.setClassificationMethod(QgsClassificationEqualInterval())
    renderer.updateClasses(layer, _SCORE_CLASSES)
    renderer.updateColorRamp(QgsGradientColorRamp(QColor(255, 230, 80), QColor(215, 25, 28)))
    for index, symbol_range in enumerate(renderer.ranges()):
        symbol = symbol_range.symbol().clone()
        outline = symbol.color()
        symbol.symbolLayer(0).setStrokeColor(outline)
        fill = QColor(outline)
        fill.setAlpha(50)
        symbol.setColor(fill)
        renderer.updateRangeSymbol(index, symbol)
    layer.setRenderer(renderer)

    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    text = QgsTextFormat()
    text.setSize(10)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    text.setBuffer(buffer)
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def replace_results_layer(layer: QgsVectorLayer, project: QgsProject | None = None) -> QgsVectorLayer:
    """Remove the previous results layer(s), add ``layer``."""
    project = project or QgsProject.instance()
    stale = [lyr.id() for lyr in project.mapLayers().values() if lyr.customProperty(_MARKER)]
    if stale:
        project.removeMapLayers(stale)
    project.addMapLayer(layer)
    return layer
