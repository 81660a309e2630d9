"""georet's GeoJSON hits → a styled in-memory QGIS layer ("georet results")."""

from __future__ import annotations

import json

from qgis.core import (
    QgsClassificationEqualInterval,
    QgsFeature,
    QgsField,
    QgsFillSymbol,
    QgsGeometry,
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
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

LAYER_NAME = "georet results"
PARTNER_LAYER_NAME = "georet partners"
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


def build_partner_layer(results: QgsVectorLayer, name: str = PARTNER_LAYER_NAME) -> QgsVectorLayer | None:
    """Partner tiles of a relational search ("the river" of "airport near river"), or None.

    Drawn apart from the hits: dashed cyan outlines, no fill, labelled with the
    rank of the hit they belong to and their distance to it.
    """
    if results.fields().indexOf("partner_wkt") < 0:
        return None
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
    provider = layer.dataProvider()
    provider.addAttributes([QgsField("hit_rank", QVariant.Int), QgsField("tile_id", QVariant.String),
                            QgsField("distance_m", QVariant.Double), QgsField("label", QVariant.String)])
    layer.updateFields()
    features = []
    for hit in results.getFeatures():
        if not hit["partner_wkt"]:
            continue
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(hit["partner_wkt"]))
        partner_id = str(hit["partners"]).split(",")[0]
        feature.setAttributes([hit["rank"], partner_id, hit["partner_distance_m"],
                               f"partner of #{hit['rank']} ({hit['partner_distance_m']:.0f} m)"])
        features.append(feature)
    provider.addFeatures(features)
    layer.updateExtents()
    layer.setCustomProperty(_MARKER, True)
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "0,190,230",
                                         "outline_width": "0.8", "outline_style": "dash"})
    layer.renderer().setSymbol(symbol)
    _label(layer, "label", 8)
    return layer


def _label(layer: QgsVectorLayer, field: str, size: int) -> None:
    labels = QgsPalLayerSettings()
    labels.fieldName = field
    text = QgsTextFormat()
    text.setSize(size)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    text.setBuffer(buffer)
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def _style(layer: QgsVectorLayer) -> None:
    """Outline colour graduated by score (yellow → red), label = rank (best score and region for regions)."""
    regions = layer.fields().indexOf("region") >= 0
    base = QgsFillSymbol.createSimple({"color": "255,255,255,40", "outline_width": "0.8"})
    renderer = QgsGraduatedSymbolRenderer("best_score" if regions else "score")
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
    _label(layer, "region" if regions else "rank", 10)


def replace_results_layer(layer: QgsVectorLayer, project: QgsProject | None = None,
                          partners: QgsVectorLayer | None = None) -> QgsVectorLayer:
    """Remove the previous results (and partner) layers, add ``layer`` and ``partners``."""
    project = project or QgsProject.instance()
    stale = [lyr.id() for lyr in project.mapLayers().values() if lyr.customProperty(_MARKER)]
    if stale:
        project.removeMapLayers(stale)
    if partners is not None:
        project.addMapLayer(partners)
    project.addMapLayer(layer)
    return layer
