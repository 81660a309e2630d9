"""STAC inputs: Items and ItemCollections (files or URLs) and STAC API searches → rasters to tile.

Each item gives one raster: its ``visual`` asset when it has one (or the asset
named by ``--asset``), else its red, green and blue band assets stacked into a
three-band VRT (separate files, as Sentinel-2 L2A ships them). The item's id,
collection, datetime and asset hrefs travel with the raster into the index.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

import rasterio
from rasterio.errors import RasterioIOError

from georet.errors import GeoretError, InputError, NotFoundError
from georet.geo.sources import RasterRef, gdal_env, is_url

DEFAULT_ASSET = "visual"
RGB = ("red", "green", "blue")
_FETCH_TIMEOUT_S = 30


def read_stac(location: str) -> dict[str, Any]:
    """A STAC JSON document from a file or an http(s) URL, with its own location kept for relative hrefs."""
    try:
        if location.startswith(("http://", "https://")):
            with urllib.request.urlopen(location, timeout=_FETCH_TIMEOUT_S) as response:
                text = response.read().decode("utf-8")
        elif is_url(location):
            raise GeoretError(f"{location}: STAC JSON is read from files or http(s) URLs")
        else:
            text = Path(location).expanduser().read_text(encoding="utf-8")
    except urllib.error.HTTPError as exc:
        raise GeoretError(f"{location}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise GeoretError(f"{location}: cannot fetch ({exc.reason})") from None
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {location}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GeoretError(f"{location}: cannot read ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GeoretError(f"{location}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise GeoretError(f"{location}: not a STAC Item or ItemCollection")
    base = location if is_url(location) else str(Path(location).expanduser().resolve())
    return {**doc, "_georet_location": base}


def stac_rasters(doc: dict[str, Any], asset: str | None = None) -> list[RasterRef]:
    """The rasters of an Item or ItemCollection (``_georet_location`` resolves relative hrefs)."""
    location = doc.get("_georet_location", "")
    if doc.get("type") == "Feature":
        items = [doc]
    elif doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        items = doc["features"]
    else:
        kind = doc.get("type", "no 'type'")
        hint = "; search a STAC API with --stac URL --collection ID" if kind in ("Catalog", "Collection") else ""
        raise GeoretError(f"{location or 'STAC JSON'}: a {kind}, not a STAC Item or ItemCollection{hint}")
    if not items:
        raise GeoretError(f"{location}: the ItemCollection has no items")
    return [item_raster(item, asset, location) for item in items]


def item_raster(item: dict[str, Any], asset: str | None, location: str = "") -> RasterRef:
    """One item → one raster: ``asset`` (a name, or three names ``r,g,b``), else visual, else red/green/blue."""
    if not isinstance(item, dict):
        raise GeoretError(f"{location}: a STAC item must be a JSON object, got {type(item).__name__}")
    item_id = item.get("id")
    assets = item.get("assets")
    if not isinstance(item_id, str) or not isinstance(assets, dict):
        raise GeoretError(f"{location}: a STAC item without 'id' or 'assets'")
    names = _pick_assets(item_id, assets, asset)
    base = _self_href(item) or location
    hrefs = [_resolve(_href(assets[name], item_id, name), base, item_id, name) for name in names]
    props = item.get("properties") if isinstance(item.get("properties"), dict) else {}
    metadata = {"stac_item": item_id, "collection": item.get("collection"),
                "datetime": props.get("datetime") or props.get("start_datetime"),
                "assets": dict(zip(names, hrefs))}
    if len(hrefs) == 1:  # the COG itself: same tiles as indexing its URL directly
        return RasterRef(hrefs[0], metadata=metadata)
    name = f"stac://{item.get('collection') or 'items'}/{item_id}?assets={','.join(names)}"
    return RasterRef(name, band_stack_vrt(hrefs, item_id), metadata)


def _pick_assets(item_id: str, assets: dict[str, Any], asset: str | None) -> list[str]:
    if asset:
        wanted = [a.strip() for a in asset.split(",")]
        if len(wanted) not in (1, 3):
            raise InputError("asset", f"takes one asset name or three (red,green,blue); got {asset!r}")
        missing = [a for a in wanted if a not in assets]
        if missing:
            raise GeoretError(f"STAC item {item_id!r} has no asset {missing[0]!r} (it has: {', '.join(map(repr, sorted(assets)))})")
        return wanted
    if DEFAULT_ASSET in assets:
        return [DEFAULT_ASSET]
    by_colour = {colour: name for name, body in assets.items() for colour in _colours(name, body)}
    if all(colour in by_colour for colour in RGB):
        return [by_colour[colour] for colour in RGB]
    raise GeoretError(f"STAC item {item_id!r} has neither a '{DEFAULT_ASSET}' asset nor red, green and blue band "
                      f"assets; pick one with --asset (it has: {', '.join(map(repr, sorted(assets)))})")


def _colours(name: str, body: Any) -> list[str]:
    """The colours an asset holds: by its key, or by the common names of its (eo:)bands, when it has one band."""
    if name in RGB:
        return [name]
    bands = (body.get("eo:bands") or body.get("bands") or []) if isinstance(body, dict) else []
    bands = bands if isinstance(bands, list) else []
    common = [b.get("common_name") or b.get("eo:common_name") for b in bands if isinstance(b, dict)]
    return [common[0]] if len(common) == 1 and common[0] in RGB else []


def _href(asset: Any, item_id: str, name: str) -> str:
    """An asset's href, checked for what a hand-written or hostile document may hold instead."""
    href = asset.get("href", "") if isinstance(asset, dict) else None
    if not isinstance(href, str):
        raise GeoretError(f"STAC item {item_id!r}: asset {name!r} is not an object with a text 'href'")
    return href


def _self_href(item: dict[str, Any]) -> str | None:
    links = item.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") == "self" and isinstance(link.get("href"), str) and link["href"]:
            return link["href"]
    return None


def _resolve(href: str, base: str, item_id: str, asset: str) -> str:
    if not href:
        raise GeoretError(f"STAC item {item_id!r}: asset {asset!r} has no href")
    if not href.isprintable():
        raise GeoretError(f"STAC item {item_id!r}: asset {asset!r} has an href with control characters: {href!r}")
    if is_url(href) or Path(href).is_absolute():
        return href
    if not base:
        raise GeoretError(f"STAC item {item_id!r}: asset {asset!r} has a relative href and the item no location")
    if is_url(base):
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def band_stack_vrt(hrefs: Sequence[str], item_id: str) -> str:
    """A VRT (as XML text, which GDAL opens like a path) stacking single-band files as bands 1..n.

    Only the grid of the first file is read; the others must share it, or the
    stacked pixels would not line up.
    """
    grids = []
    with gdal_env(remote=True):
        for href in hrefs:
            try:
                with rasterio.open(href) as ds:
                    grids.append((ds.width, ds.height, ds.transform, ds.crs, ds.dtypes[0], ds.nodata))
            except RasterioIOError as exc:
                detail = (str(exc).strip().splitlines() or ["unreadable"])[0]
                raise GeoretError(f"STAC item {item_id!r}: cannot open {href}: {detail}") from None
    width, height, transform, crs, dtype, nodata = grids[0]
    if any(g[:3] != grids[0][:3] for g in grids[1:]):
        raise GeoretError(f"STAC item {item_id!r}: its band assets are on different pixel grids; "
                          f"pick one asset with --asset")
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
                 "float32": "Float32", "float64": "Float64"}[dtype]
    geotransform = ", ".join(repr(v) for v in transform.to_gdal())
    nodata_xml = f"<NoDataValue>{nodata!r}</NoDataValue>" if nodata is not None else ""
    bands = "".join(
        f'<VRTRasterBand dataType="{gdal_type}" band="{i}">{nodata_xml}<SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{escape(_gdal_path(href))}</SourceFilename><SourceBand>1</SourceBand>'
        f'</SimpleSource></VRTRasterBand>' for i, href in enumerate(hrefs, start=1))
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs else ""
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}'
            f"<GeoTransform>{geotransform}</GeoTransform>{bands}</VRTDataset>")


def _gdal_path(href: str) -> str:
    """The GDAL virtual-file-system path of a URL (a VRT names its sources in GDAL's terms)."""
    scheme = urlsplit(href).scheme
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme in ("s3", "gs"):
        return f"/vsi{scheme}/{href.split('://', 1)[1]}"
    if scheme == "az":
        return f"/vsiaz/{href.split('://', 1)[1]}"
    return href


def search_stac_api(url: str, collection: str, bbox: tuple[float, float, float, float] | None = None,
                    datetime: str | None = None, max_items: int | None = None) -> dict[str, Any]:
    """Items of ``collection`` from a STAC API search (pystac-client), as one ItemCollection document."""
    from pystac_client import Client

    try:
        client = Client.open(url)
        search = client.search(collections=[collection], bbox=bbox, datetime=datetime, max_items=max_items)
        doc = search.item_collection_as_dict()
    except GeoretError:
        raise
    except Exception as exc:  # pystac-client raises APIError, requests' and JSON errors alike
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GeoretError(f"STAC API {url}: {detail[:300]}") from None
    if not doc.get("features"):
        raise GeoretError(f"STAC API {url}: no items in collection {collection!r} for this search")
    return {**doc, "_georet_location": url}
