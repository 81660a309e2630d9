"""``georet serve`` as a real process on 127.0.0.1, and its web map in a real headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from conftest import TINY, Server, invoke_cli, run_cli
from PIL import Image

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(tmp_path_factory, rasters):
    db = tmp_path_factory.mktemp("serve") / "idx.db"
    run_cli("index", rasters["utm"], "--db", db, "--tile-size", "64", *TINY, check=True)
    server = Server(db)
    yield server, db
    server.stop()


def test_search_answers_what_the_cli_answers(served):
    server, db = served
    status, health = server.json("/health")
    assert status == 200 and health["tiles"] == 16
    status, collection = server.json("/search?q=forest&k=4")
    cli = json.loads(invoke_cli("query", "forest", "--db", db, "-k", "4", "--format", "geojson", check=True).stdout)
    assert status == 200 and collection["georet"] == cli["georet"] == {
        "query": "forest", "score": "cosine similarity to the text moved towards its best places, -1..1"}
    served_props, cli_props = ([f["properties"] for f in c["features"]] for c in (collection, cli))
    # the warm server scores from vectors in memory, the CLI through LanceDB: the same cosines to float32 rounding
    assert [{**p, "score": None} for p in served_props] == [{**p, "score": None} for p in cli_props]
    assert np.allclose([p["score"] for p in served_props], [p["score"] for p in cli_props], atol=1e-6)
    status, relational = server.json("/search?" + urllib.parse.urlencode({"q": "water near forest", "k": 3}))
    assert status == 200 and {"partners", "partner_distance_m", "partner_wkt"} <= set(
        relational["features"][0]["properties"])
    first = collection["features"][0]["properties"]["tile_id"]
    status, similar = server.json(f"/search?like={first}&k=3&dissolve=true")
    assert status == 200 and similar["features"][0]["properties"]["region"] == 1
    assert first not in similar["features"][0]["properties"]["tile_ids"].split(",")


def test_bad_requests_get_one_line_json_errors(served):
    server, db = served
    cli_error = invoke_cli("query", "x", "--db", db, "--scene", "volcano").stderr.strip().removeprefix("Error: ")
    cases = {
        "/search?q=x&scene=volcano": (400, cli_error),
        "/search?q=x&k=5000": (400, "k: Input should be less than or equal to 1000"),
        "/search?q=x&like=/etc/passwd": (400, "like/unlike take tile ids of this index; '/etc/passwd' is not one"),
        "/search?q=x&labels=../../etc": (400, "label set name '../../etc': use letters, digits"),
        "/search": (400, "q: nothing to search for: give a query text or examples of what you want"),
        "/search?q=" + "a" * 600: (400, "q: String should have at most 500 characters"),
        "/search?q=x&bbox=1,2": (400, "bbox: must be four numbers"),
        "/tiles/nope/thumbnail.png": (404, "no tile 'nope' in"),
        "/search?q=x&labels=missing": (404, "no label set 'missing' in"),
    }
    for path, (status, message) in cases.items():
        got, body = server.get(path)
        error = json.loads(body)
        assert got == status and list(error) == ["error"] and error["error"].startswith(message), (path, error)
        assert "\n" not in error["error"]


def test_info_thumbnails_docs_and_new_rows(served, rasters, tiny_model):
    server, db = served
    status, info = server.json("/info")
    assert status == 200 and info["tiles"] == 16 and info["model"]["arch"] == "georet-tiny"
    tile_id = server.json("/search?q=field&k=1")[1]["features"][0]["properties"]["tile_id"]
    status, png = server.get(f"/tiles/{tile_id}/thumbnail.png")
    from georet.search import open_index

    expected = open_index(db, model=tiny_model).thumbnail(tile_id)
    assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(expected))
    status, spec = server.json("/openapi.json")
    assert status == 200 and {"/search", "/health", "/info", "/tiles/{tile_id}/thumbnail.png"} <= set(spec["paths"])
    run_cli("index", rasters["lonlat"], "--db", db, "--tile-size", "64", *TINY, check=True)  # another process writes
    assert server.json("/info")[1]["tiles"] == 22
    assert len(server.json("/search?q=field&k=100")[1]["features"]) == 22


def test_token_and_host_rules(served):
    _, db = served
    refused = run_cli("serve", "--db", db, "--host", "0.0.0.0")
    assert refused.returncode == 1 and refused.stderr.strip().startswith(
        "Error: --host 0.0.0.0 makes the index reachable from other machines; pass --token TOKEN")
    guarded = Server(db, "--token", "s3cret")
    try:
        assert guarded.get("/health", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body = guarded.get("/search?q=x", headers={"Authorization": ""})
        assert status == 401 and json.loads(body)["error"].startswith("this georet server needs a token")
        assert guarded.get("/health")[0] == 200
        guarded.headers = {}
        assert guarded.get("/info?token=s3cret")[0] == 200 and guarded.get("/info")[0] == 401
    finally:
        guarded.stop()


def test_web_map_in_headless_chromium(served, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("chromium is not installed")
    server, _ = served

    def page_dom(params: list[tuple[str, str]]) -> str:
        page = server.url + "/?" + urllib.parse.urlencode(params)
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                               "--virtual-time-budget=20000", "--dump-dom", page],
                              capture_output=True, text=True, timeout=120).stdout

    def listed(dom: str) -> list[str]:
        return [part.split('"')[0] for part in dom.split('class="hit" data-tile-id="')[1:]]

    plain = [("q", "forest"), ("k", "3")]
    expected = [f["properties"]["tile_id"] for f in server.json("/search?" + urllib.parse.urlencode(plain))[1]["features"]]
    dom = page_dom(plain)
    assert listed(dom) == expected  # the page ran the search and listed the hits in rank order
    assert 'id="download"' in dom and "3 hits — score: cosine similarity to the text" in dom
    assert dom.count(">more like this</button>") == dom.count(">not this</button>") == 3
    assert dom.count(">this tile is a …</button>") == 3  # each hit can become an example of a class

    marked = plain + [("like", expected[0]), ("unlike", expected[1])]  # what the hit buttons add to the page URL
    again = [f["properties"]["tile_id"] for f in server.json("/search?" + urllib.parse.urlencode(marked))[1]["features"]]
    dom = page_dom(marked)
    assert listed(dom) == again and not set(expected[:2]) & set(again)
    assert f'class="like">+ {expected[0]}</li>' in dom and f'class="unlike">− {expected[1]}</li>' in dom


@pytest.fixture(scope="module")
def dated(tmp_path_factory, rasters):
    """One UTM place at 2016 and at 2021 (another picture of it), served."""
    from georet.testing.rasters import write_raster

    root = tmp_path_factory.mktemp("dated-serve")
    db = root / "idx.db"
    run_cli("index", rasters["utm"], "--db", db, "--tile-size", "64", "--acquired", "2016-05-01", *TINY, check=True)
    later = write_raster(root / "utm_later.tif", grid="utm", seed=5)
    run_cli("index", later, "--db", db, "--tile-size", "64", "--acquired", "2021-06-15", *TINY, check=True)
    server = Server(db)
    yield server
    server.stop()


def test_dates_change_hits_and_imagery_over_http(dated):
    status, info = dated.json("/info")
    assert status == 200 and info["dates"] == ["2016-05-01", "2021-06-15"]
    status, hits = dated.json("/search?q=houses&k=5&when=2021")
    assert status == 200 and {f["properties"]["acquired"] for f in hits["features"]} == {"2021-06-15"}
    status, change = dated.json("/search?" + urllib.parse.urlencode({"q": "farmland that became houses", "k": 3}))
    assert status == 200 and len(change["features"]) == 3
    for feature in change["features"]:
        assert (feature["properties"]["before_acquired"], feature["properties"]["acquired"]) == ("2016-05-01",
                                                                                              "2021-06-15")
        assert dated.get(f"/tiles/{feature['properties']['before_tile_id']}/thumbnail.png")[0] == 200
    status, error = dated.json("/search?q=houses&from=2016")
    assert status == 400 and error["error"].startswith("from: from/to choose the dates a change query compares")

    status, layers = dated.json("/imagery")
    assert status == 200 and [(layer["id"], layer["acquired"]) for layer in layers] == [(0, "2016-05-01"),
                                                                                        (1, "2021-06-15")]
    import morecantile

    west, south, east, north = layers[0]["bounds"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, layers[0]["zoom"][1])
    status, body = dated.get(f"/imagery/0/{tile.z}/{tile.x}/{tile.y}.png")
    image = np.asarray(Image.open(io.BytesIO(body)))
    assert status == 200 and image.shape == (256, 256, 4)
    assert image[..., 3].max() == 255 and image[..., :3].std() > 10  # the raster's pixels, not a blank
    status, body = dated.get(f"/imagery/0/{tile.z}/0/0.png")  # far outside: transparent
    assert status == 200 and np.asarray(Image.open(io.BytesIO(body)))[..., 3].max() == 0
    assert dated.get("/imagery/7/1/0/0.png")[0] == 404


def test_web_map_shows_imagery_and_change_hits_in_chromium(dated, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("chromium is not installed")
    page = dated.url + "/?" + urllib.parse.urlencode([("q", "farmland that became houses"), ("k", "3")])
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                          "--virtual-time-budget=20000", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("before: 2016-05-01") == 3 and dom.count(">see before</button>") == 3
    assert '<option value="2021-06-15">2021-06-15</option>' in dom  # the imagery dates, the latest shown
    assert "leaflet-tile-loaded" in dom and "imagery/1/" in dom and "imagery/0/" not in dom


def test_this_tile_is_a_class_over_http(tmp_path, rasters):
    """The web map's "this tile is a …": POST /scenes adds the tile to that class's examples and relabels."""
    db = tmp_path / "idx.db"
    run_cli("index", rasters["utm"], "--db", db, "--tile-size", "64", *TINY, check=True)
    server = Server(db)
    try:
        def post(body: dict) -> tuple[int, dict]:
            request = urllib.request.Request(server.url + "/scenes", data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        tiles = [f["properties"]["tile_id"] for f in server.json("/search?q=forest&k=16")[1]["features"]]
        status, counts = post({"tile_id": tiles[0], "scene": "orchard"})
        assert status == 200 and sum(counts.values()) == 16 and counts.get("orchard", 0) >= 1
        assert "orchard" in server.json("/info")[1]["scenes"]  # the scene filter and the class list offer it
        assert server.json("/search?q=x&scene=orchard&k=16")[1]["features"]  # the new scenes are searchable now
        assert post({"tile_id": "nope", "scene": "orchard"}) == (400, {
            "error": "tile_id: 'nope' is not a tile of this index"})
        status, body = post({"tile_id": tiles[0], "scene": "../etc"})
        assert status == 400 and body["error"].startswith("label set name '../etc'")
        assert post({"tile_id": tiles[0], "scene": "x", "extra": 1})[0] == 400
        marked = json.loads(invoke_cli("label", "--db", db, "--json", check=True).stdout)
        assert marked == {"orchard": {"positive": [tiles[0]], "negative": []}}
    finally:
        server.stop()
