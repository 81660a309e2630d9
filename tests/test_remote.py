"""Remote rasters and STAC: COGs over HTTP range requests and from S3 (moto), STAC Items/ItemCollections
and a STAC API, region clips; every remote failure one line and the index untouched. All on loopback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import numpy as np
import pytest
import shapely
from conftest import AREA_BBOX, TINY, Server, invoke_cli, touching

from georet.geo import search_area
from georet.index import TileStore
from georet.testing.loopback import range_server, s3_server

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(stac_dir):
    items = json.loads((stac_dir / "items.json").read_text())["features"]
    with range_server(stac_dir) as srv:
        for item in items:  # the API serves the same items with absolute hrefs
            for asset in item["assets"].values():
                asset["href"] = f"{srv.url}/{asset['href']}"
        srv.stac_items = items
        yield srv


def rows(db: Path) -> dict[tuple[str, int, int], np.ndarray]:
    """(source, col, row) → vector, for comparing indexes whose tile ids differ."""
    table = TileStore.open(db).table.to_arrow().to_pydict()
    return {(s, c, r): np.array(v) for s, c, r, v in zip(table["source"], table["col_off"], table["row_off"],
                                                          table["vector"])}


def test_a_cog_over_http_is_read_only_where_the_area_is_and_gives_the_local_tiles(tmp_path, stac_dir, server):
    cog, url = stac_dir / "scene.tif", f"{server.url}/scene.tif"
    area = search_area(AREA_BBOX)
    expected = touching(cog, 128)
    assert 0 < len(expected) < 8  # a handful of the 64 tiles

    server.reset_counts()
    invoke_cli("index", url, "--db", tmp_path / "remote.db", "--bbox", AREA_BBOX, "--tile-size", "128", "-q",
               *TINY, check=True)
    fetched = server.bytes_sent
    invoke_cli("index", cog, "--db", tmp_path / "local.db", "--tile-size", "128", "-q", *TINY, check=True)

    remote, local_rows = rows(tmp_path / "remote.db"), rows(tmp_path / "local.db")
    assert {(c, r) for _, c, r in remote} == expected
    assert {s for s, _, _ in remote} == {url}
    for (_, col, row), vector in remote.items():  # same pixels, same stretch (from the overview): same vectors
        np.testing.assert_allclose(vector, local_rows[(str(cog), col, row)], atol=1e-5)
    print(f"fetched {fetched:,} of {cog.stat().st_size:,} bytes")
    assert fetched < 0.35 * cog.stat().st_size

    manifest = TileStore.open(tmp_path / "remote.db").manifest["sources"][url]
    assert shapely.from_wkt(manifest["area"]).equals(area)
    assert "         within bbox 3.00450,52.32650,3.00750,52.32900\n" in invoke_cli(
        "info", "--db", tmp_path / "remote.db", check=True).stdout
    again = invoke_cli("index", url, "--db", tmp_path / "remote.db", "--bbox", AREA_BBOX, "--tile-size", "128",
                       "-q", *TINY, check=True)  # the area is covered: nothing read, nothing written
    assert "0 tiles from 1 raster(s)" in again.stderr and f"{len(expected)} already indexed" in again.stderr


def test_stac_items_index_the_visual_cog_and_stack_separate_band_files(tmp_path, stac_dir, server):
    db = tmp_path / "stac.db"
    invoke_cli("index", f"{server.url}/items.json", "--db", db, "--tile-size", "256", "-q", *TINY, check=True)
    sources = TileStore.open(db).manifest["sources"]
    visual, bands = f"{server.url}/scene.tif", "stac://test-s2/scene-bands?assets=B04,B03,B02"
    assert sorted(sources) == sorted([visual, bands])
    assert sources[visual]["stac"] == {"stac_item": "scene-visual", "collection": "test-s2",
                                       "datetime": "2024-06-01T10:00:00Z", "assets": {"visual": visual}}
    assert sources[bands]["stac"]["assets"] == {"B04": f"{server.url}/bands/scene_red.tif",
                                                "B03": f"{server.url}/bands/scene_green.tif",
                                                "B02": f"{server.url}/bands/scene_blue.tif"}
    assert sources[bands]["href"].startswith("<VRTDataset")
    indexed = rows(db)
    stacked = {(c, r): v for (s, c, r), v in indexed.items() if s == bands}
    assert len(stacked) == 16
    for (col, row), vector in stacked.items():  # the band files hold the visual COG's bands: same tiles
        np.testing.assert_allclose(vector, indexed[(visual, col, row)], atol=1e-5)
    tile_ids = TileStore.open(db).table.to_arrow()["tile_id"].to_pylist()
    assert sum(t.startswith("scene-bands-") for t in tile_ids) == 16
    shown = invoke_cli("info", "--db", db, check=True).stdout
    assert f"source   {bands}  [EPSG:32631, 16 tiles of 256 px (2.56 km), scenes: zero-shot]\n" \
           "         acquired 2024-07-01 (STAC item)\n" \
           "         STAC item scene-bands (test-s2, 2024-07-01T10:00:00Z)\n" in shown

    # the web map's imagery of both items, read over HTTP, is the local COG's
    import morecantile
    from PIL import Image

    from georet.geo import RasterRef, TilingParams
    from georet.geo.maptiles import MapTiles
    from georet.search import open_index

    index = open_index(db)
    layers = index.imagery()
    assert sorted(layer["acquired"] for layer in layers) == ["2024-06-01", "2024-07-01"]
    west, south, east, north = layers[0]["bounds"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, layers[0]["zoom"][1])
    with MapTiles(RasterRef(str(stac_dir / "scene.tif")), TilingParams()) as reader:
        local = np.asarray(Image.open(io.BytesIO(reader.png(tile.z, tile.x, tile.y))))
    assert reader._source.dataset.closed  # a with block (or close) closes the raster
    assert local[..., 3].max() == 255
    for layer in layers:
        served = np.asarray(Image.open(io.BytesIO(index.map_tile(layer["id"], tile.z, tile.x, tile.y))))
        np.testing.assert_array_equal(served, local)
    opened = [tiles._source.dataset for tiles in index._imagery._open.values()]
    index.close()  # as the server does when it stops
    assert len(opened) == 2 and all(dataset.closed for dataset in opened)

    picked = invoke_cli("index", f"{server.url}/items.json", "--asset", "B04", "--db", tmp_path / "red.db",
                        "--tile-size", "512", "-q", *TINY)
    assert picked.returncode == 1
    assert picked.stderr.strip() == "Error: STAC item 'scene-visual' has no asset 'B04' (it has: 'thumbnail', 'visual')"


def test_a_stac_api_search_indexes_the_items_in_the_area(tmp_path, stac_dir, server):
    db = tmp_path / "api.db"
    invoke_cli("index", "--stac", f"{server.url}/stac-api", "--collection", "test-s2", "--bbox", AREA_BBOX,
               "--max-items", "1", "--db", db, "--tile-size", "256", "-q", *TINY, check=True)
    sources = TileStore.open(db).manifest["sources"]
    assert [entry["stac"]["stac_item"] for entry in sources.values()] == ["scene-visual"]
    assert TileStore.open(db).count() == len(touching(stac_dir / "scene.tif", 256)) == 2

    nothing = invoke_cli("index", "--stac", f"{server.url}/stac-api", "--collection", "sentinel-1", "--db", db, *TINY)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == (f"Error: STAC API {server.url}/stac-api: no items in collection 'sentinel-1' "
                                      f"for this search")


def test_a_cog_in_s3_indexes_like_the_local_file(tmp_path, stac_dir):
    with s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="imagery")
        s3.upload_file(str(stac_dir / "scene.tif"), "imagery", "cogs/scene.tif")
        invoke_cli("index", "s3://imagery/cogs/scene.tif", "--bbox", AREA_BBOX, "--db", tmp_path / "s3.db",
                   "--tile-size", "128", "-q", *TINY, check=True)
    invoke_cli("index", stac_dir / "scene.tif", "--bbox", AREA_BBOX, "--db", tmp_path / "local.db",
               "--tile-size", "128", "-q", *TINY, check=True)
    from_s3, local = rows(tmp_path / "s3.db"), rows(tmp_path / "local.db")
    assert len(from_s3) == len(local) > 0
    for (_, col, row), vector in from_s3.items():
        np.testing.assert_allclose(vector, local[(str(stac_dir / "scene.tif"), col, row)], atol=1e-5)


def test_remote_failures_are_one_line_and_leave_the_index_untouched(tmp_path, stac_dir, server, built_index,
                                                                    monkeypatch):
    bad_json = stac_dir / "broken.json"
    bad_json.write_text('{"type": "FeatureCollection", "features": [')
    catalog = stac_dir / "catalog.json"
    catalog.write_text(json.dumps({"type": "Catalog", "id": "c", "links": []}))
    before = (json.loads((built_index / "georet.json").read_text()), TileStore.open(built_index).count())
    cases = {
        f"{server.url}/missing.tif": f"Error: {server.url}/missing.tif: cannot open: HTTP response code: 404",
        "http://127.0.0.1:9/x.tif": "Error: http://127.0.0.1:9/x.tif: cannot open: CURL error: Failed to connect",
        f"{server.url}/missing.json": f"Error: {server.url}/missing.json: HTTP 404 Not Found",
        f"{server.url}/broken.json": f"Error: {server.url}/broken.json: not JSON (Expecting value at line 1)",
        str(catalog): (f"Error: {catalog}: a Catalog, not a STAC Item or ItemCollection; "
                       f"search a STAC API with --stac URL --collection ID"),
    }
    for raster, message in cases.items():
        result = invoke_cli("index", raster, "--db", built_index, *TINY)
        assert result.returncode == 1 and result.stderr.strip().startswith(message), (raster, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    no_credentials = invoke_cli("index", "s3://imagery/scene.tif", "--db", built_index, *TINY)
    assert no_credentials.returncode == 1
    assert no_credentials.stderr.strip() == (
        "Error: s3://imagery/scene.tif: cannot open: no S3 credentials (set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; AWS_NO_SIGN_REQUEST=YES for a public bucket)")
    outside = invoke_cli("index", f"{server.url}/scene.tif", "--bbox", "100,10,101,11", "--db", built_index, *TINY)
    assert outside.stderr.strip() == "Error: the area (--bbox/--within) touches none of the rasters; nothing to index"
    assert (json.loads((built_index / "georet.json").read_text()), TileStore.open(built_index).count()) == before


def test_an_index_in_s3_is_built_queried_and_served_with_its_manifest_inside_the_table(tmp_path, stac_dir):
    import lance

    cog, db = stac_dir / "scene.tif", "s3://indexes/georet/scene"
    args = ("--tile-size", "256", "-q", *TINY)
    invoke_cli("index", cog, "--db", tmp_path / "local.db", *args, check=True)
    with s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="indexes")
        invoke_cli("index", cog, "--db", db, *args, check=True)
        again = invoke_cli("index", cog, "--db", db, *args, check=True)
        assert "indexed 0 tiles" in again.stderr and "16 already indexed" in again.stderr

        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="indexes")["Contents"]]
        assert all(k.startswith("georet/scene/tiles.lance/") for k in keys)  # no manifest file beside the table
        table = lance.dataset(f"{db}/tiles.lance")
        manifest = json.loads(table.config()["georet.manifest"])
        assert manifest["sources"][str(cog)]["state"] == "complete"

        info = json.loads(invoke_cli("info", "--db", db, "--json", check=True).stdout)
        assert info["tiles"] == 16 and info["sources"][str(cog)]["tiles"] == 16
        query = ("query", "a forest", "-k", "5", "--format", "json")
        from_s3 = json.loads(invoke_cli(*query, "--db", db, check=True).stdout)
        local = json.loads(invoke_cli(*query, "--db", tmp_path / "local.db", check=True).stdout)
        assert [h["tile_id"] for h in from_s3["results"]] == [h["tile_id"] for h in local["results"]]

        version = table.version
        broken = tmp_path / "broken.tif"
        broken.write_bytes(b"II*\x00 not a tiff")
        failed = invoke_cli("index", broken, "--db", db, *args)
        assert failed.stderr.strip() == f"Error: {broken}: not a readable raster (corrupt or unsupported format)"
        assert lance.dataset(f"{db}/tiles.lance").version == version  # nothing committed
        labelled = invoke_cli("label", "--db", db, "--positive", from_s3["results"][0]["tile_id"])
        assert labelled.stderr.strip().startswith(f"Error: label sets are saved beside local indexes; {db} is in an")

        server = Server(db)
        try:
            status, body = server.json("/search?q=a+forest&k=5")
            assert status == 200
            assert [f["properties"]["tile_id"] for f in body["features"]] == [h["tile_id"] for h in local["results"]]
        finally:
            server.stop()


def test_remote_option_rules_are_one_line_errors(tmp_path, stac_dir, server):
    cog = stac_dir / "scene.tif"
    cases = {
        (str(cog), "--asset", "visual"): "Error: --asset: picks an asset of STAC items; none of the inputs is a STAC JSON",
        (str(cog), "--collection", "s2"): "Error: --collection needs --stac API_URL",
        ("--stac", f"{server.url}/stac-api"): "Error: --stac needs --collection ID",
        ("--stac", f"{server.url}/stac-api", "--collection", "test-s2", "--max-items", "0"):
            "Error: --max-items must be positive, got 0",
        (): "Error: give RASTERS to index, or --stac API_URL --collection ID",
        (f"{server.url}/items.json", "--asset", "B04,B03"):
            "Error: --asset: takes one asset name or three (red,green,blue); got 'B04,B03'",
        (str(cog), "--ray-address", "head:10001"): "Error: --ray-address: needs --engine ray",
    }
    for args, message in cases.items():
        result = invoke_cli("index", *args, "--db", tmp_path / "db", *TINY)
        assert result.returncode in (1, 2) and result.stderr.strip().splitlines()[-1] == message, (args, result.stderr)
    assert not (tmp_path / "db").exists()
    with s3_server():
        status = json.loads(invoke_cli("doctor", "--db", "s3://nobucket/x", "--json", check=True).stdout)["db"]
    assert status == {"path": "s3://nobucket/x", "writable": None,
                      "state": "unreachable: s3://nobucket/x: cannot open the index: The specified bucket does not exist"}
