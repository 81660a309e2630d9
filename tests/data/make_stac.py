"""STAC test data: an ItemCollection over generated COGs, written beside them with relative hrefs.

Item ``scene-visual`` has one three-band ``visual`` COG; item ``scene-bands`` has
the same pixels as separate ``red``/``green``/``blue`` single-band files (and a
``nir`` asset that must not be picked), as Sentinel-2 L2A items do.

    python tests/data/make_stac.py OUTDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import rasterio
from rasterio.warp import transform_bounds

from georet.testing.rasters import split_bands, write_cog


def item(item_id: str, assets: dict[str, dict], bbox: list[float], when: str, collection: str = "test-s2") -> dict:
    west, south, east, north = bbox
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
            "bbox": bbox, "properties": {"datetime": when},
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                             [west, north], [west, south]]]},
            "assets": assets, "links": []}


def write_stac(outdir: Path) -> dict[str, Path]:
    """COG, its band files and ``items.json`` (an ItemCollection) with hrefs relative to it."""
    outdir.mkdir(parents=True, exist_ok=True)
    cog = write_cog(outdir / "scene.tif")
    red, green, blue = split_bands(cog, outdir / "bands")
    with rasterio.open(cog) as ds:
        bbox = list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    tif = "image/tiff; application=geotiff; profile=cloud-optimized"
    band = lambda path, name: {"href": str(path.relative_to(outdir)), "type": tif,  # noqa: E731
                               "eo:bands": [{"name": name, "common_name": name}]}
    items = [
        item("scene-visual", {"visual": {"href": "scene.tif", "type": tif},
                              "thumbnail": {"href": "thumb.png", "type": "image/png"}}, bbox, "2024-06-01T10:00:00Z"),
        item("scene-bands", {"B04": band(red, "red"), "B03": band(green, "green"), "B02": band(blue, "blue"),
                             "B08": {"href": "bands/missing_nir.tif", "eo:bands": [{"common_name": "nir"}]}},
             bbox, "2024-07-01T10:00:00Z"),
    ]
    collection = outdir / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": items}, indent=1))
    return {"cog": cog, "items": collection, "bands": outdir / "bands"}


if __name__ == "__main__":
    for name, path in write_stac(Path(sys.argv[1] if len(sys.argv) > 1 else "test_stac")).items():
        print(f"{name:6s} {path}")
