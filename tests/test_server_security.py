"""The server's guards, in process (the real FastAPI app over a real index, through HTTP requests): the
token on every route, no way out of the index, no CORS, capped requests, no traceback or path in any answer,
and load shed with 503 and Retry-After."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from georet.search import open_index
from georet.server import create_app
from georet.server.app import MAX_BODY_BYTES, MAX_EXAMPLES, MAX_K, MAX_QUERY_CHARS
from georet.testing.fuzz import run_api

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(built_index):
    app = create_app(built_index, token=TOKEN, index=open_index(built_index, device="cpu"))
    with TestClient(app) as test_client:
        yield test_client, app, built_index


def _tile_id(client) -> str:
    test_client, _, _ = client
    return test_client.get("/search?q=fields&k=1", headers=AUTH).json()["features"][0]["properties"]["tile_id"]


def _every_route(app, tile_id: str) -> list[str]:
    """One concrete URL for every route the app has, the static files and the API docs included."""
    values = {"source": "0", "z": "0", "x": "0", "y": "0", "tile_id": tile_id}
    urls = []
    for route in app.routes:
        if isinstance(route, Mount):
            urls.append(f"{route.path}/app.js")
        elif isinstance(route, APIRoute) or hasattr(route, "path"):
            urls.append(route.path.format(**values))
    return urls


def _assert_clean(response, db: Path) -> None:
    """One line of JSON, and nothing of the machine behind it: no path of the index, no traceback."""
    body = response.text
    assert "Traceback" not in body and str(db) not in body and str(db.parent) not in body, body
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error, str) and "\n" not in error


def test_the_token_guards_every_route(client):
    test_client, app, _ = client
    urls = _every_route(app, _tile_id(client))
    assert {"/static/app.js", "/", "/docs", "/openapi.json", "/imagery/0/0/0/0.png"} <= set(urls)
    for url in urls:
        method = "POST" if url == "/scenes" else "GET"
        refused = test_client.request(method, url, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401, url
        assert test_client.request(method, url).status_code == 401, url
        assert test_client.request(method, url, headers=AUTH, json={}).status_code != 401, url


TRAVERSALS = [
    "/static/../georet.json", "/static/%2e%2e/%2e%2e/georet.json", "/static/..%2f..%2fcli.py",
    "/static/....//....//georet.json", "/tiles/..%2F..%2Fgeoret.json/thumbnail.png",
    "/tiles/%2Fetc%2Fpasswd/thumbnail.png", "/imagery/-1/0/0/0.png", "/imagery/99999/0/0/0.png",
    "/imagery/0/0/0/..%2F..%2Fgeoret.json", "/search?q=x&like=../../georet.json", "/search?q=x&like=/etc/passwd",
    "/search?q=x&labels=../../../georet", "/search?q=x&labels=%2Fetc%2Fpasswd", "/search?q=x&scene=../../etc",
    "/search?q=x&bbox_crs=/etc/passwd", "/search?q=/etc/passwd",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_no_parameter_reaches_a_file_outside_the_index(client, url):
    test_client, _, db = client
    response = test_client.get(url, headers=AUTH)
    _assert_clean(response, db)
    assert b'"sources"' not in response.content and b"root:" not in response.content  # georet.json, passwd
    assert b"import " not in response.content  # no Python source
    assert response.status_code in (200, 400, 404, 405, 422) and response.status_code < 500


def test_a_class_name_cannot_write_outside_the_index(client, tmp_path):
    test_client, _, db = client
    before = {p for p in db.parent.rglob("*")}
    for scene in ("../../evil", "/tmp/evil", "..", "a/b"):
        response = test_client.post("/scenes", headers=AUTH, json={"tile_id": _tile_id(client), "scene": scene})
        _assert_clean(response, db)
        assert response.status_code == 400, response.text
    assert {p for p in db.parent.rglob("*")} == before


def test_cors_is_closed(client):
    test_client, _, _ = client
    preflight = test_client.options("/search?q=x", headers={
        **AUTH, "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"})
    plain = test_client.get("/search?q=x", headers={**AUTH, "Origin": "https://elsewhere.example"})
    for response in (preflight, plain):
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


def test_requests_are_capped(client):
    test_client, _, db = client
    capped = [
        f"/search?q=x&k={MAX_K + 1}",
        "/search?q=" + "x" * (MAX_QUERY_CHARS + 1),
        "/search?q=x&" + "&".join(["like=a"] * (MAX_EXAMPLES + 1)),
    ]
    for url in capped:
        response = test_client.get(url, headers=AUTH)
        assert response.status_code == 400, url
        _assert_clean(response, db)
    big = test_client.post("/scenes", headers={**AUTH, "Content-Type": "application/json"},
                           content=b'{"tile_id": "' + b"x" * MAX_BODY_BYTES + b'", "scene": "forest"}')
    assert big.status_code == 413 and big.json()["error"].startswith("the body is")


def test_an_unexpected_failure_is_one_line_without_its_traceback_or_paths(built_index, caplog):
    index = open_index(built_index, device="cpu")
    app = create_app(built_index, token=TOKEN, index=index)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        def broken():
            raise RuntimeError(f"cannot read {built_index}/tiles.lance/data/x.lance")

        index.info = broken
        response = test_client.get("/info", headers=AUTH)
    assert response.status_code == 500 and response.json() == {"error": "internal error (logged by the server)"}
    _assert_clean(response, built_index)
    assert "cannot read" in caplog.text  # the operator still sees what failed


def test_an_unknown_tile_names_no_path(client):
    test_client, _, db = client
    response = test_client.get("/tiles/nope/thumbnail.png", headers=AUTH)
    assert response.status_code == 404 and response.json()["error"] == "no tile 'nope' in the index"
    _assert_clean(response, db)


def test_past_max_pending_requests_are_shed_with_503_and_retry_after(built_index):
    """Searches made slow (0.3 s each, one at a time) and 8 sent at once against max_pending=2: two run, the
    rest are told to come back at once rather than queued."""
    index = open_index(built_index, device="cpu")
    search = index.run
    running = threading.Semaphore(1)

    def slow_search(request):
        with running:
            time.sleep(0.3)
            return search(request)

    index.run = slow_search
    app = create_app(built_index, index=index, max_pending=2)
    with TestClient(app) as test_client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: test_client.get("/search?q=fields&k=3"), range(8)))
        after = test_client.get("/search?q=fields&k=3")
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1 and set(statuses) == {200, 503}, statuses
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["Retry-After"] == "1" and shed.json()["error"].startswith("busy: 2 requests in progress")
    assert after.status_code == 200  # nothing stays counted once the burst is over


def test_generated_requests_over_the_whole_api_get_no_5xx_and_one_line_errors(built_index, tmp_path):
    """Schemathesis over the server's own OpenAPI schema (``georet.testing.fuzz.run_api``), on a copy of the
    index (the cases mark tiles as classes)."""
    db = tmp_path / "copy.db"
    shutil.copytree(built_index, db)
    app = create_app(db, token=TOKEN, index=open_index(db, device="cpu"))
    with TestClient(app):
        answers = run_api(app, examples=40, headers=AUTH)
    assert set(answers) >= {"GET /search", "POST /scenes", "GET /tiles/{tile_id}/thumbnail.png",
                            "GET /imagery/{source}/{z}/{x}/{y}.png", "GET /info"}
    assert sum(sum(by_status.values()) for by_status in answers.values()) >= 150
