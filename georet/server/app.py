"""``georet serve``: one index, its model and its vectors kept warm behind a small HTTP API and a web map.

A CLI search pays seconds of start-up (torch, lancedb, the model) for
milliseconds of searching; the server pays them once. It is a thin shell over
:class:`~georet.search.GeoIndex`, which already follows the table (rows other
processes add are seen by the next request) and caches the catalog and the
class-prompt vectors.

Safety: no request can name a file (examples are tile ids of the index, label
sets are names); ``k`` and the query length are capped; a host other than
loopback needs a token, checked on every request; no answer holds a traceback
or a path (an unexpected error is logged here and answered in one line); no
CORS header is sent, so other sites' pages cannot read the answers.

Load: searches run one at a time (they share the model and the catalog), so a
queue longer than ``max_pending`` only makes every answer late. Past it the
server sheds the request at once with 503 and ``Retry-After``
(docs/reliability.md says where the default comes from).
"""

import contextlib
import functools
import hmac
import io
import ipaddress
import json
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from georet.errors import ConflictError, GeoretError, NotFoundError, ReadOnlyError

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
MAX_K = 1000
MAX_QUERY_CHARS = 500
MAX_EXAMPLES = 200
#: requests in progress or waiting past which new ones get 503: at a million tiles the server answers ~55 a
#: second, so 32 is a wait of ~0.6 s (measured p99 1.3 s with 64 clients; docs/reliability.md)
MAX_PENDING = 32
RETRY_AFTER_S = 1
#: largest request body: the one body the API takes (a tile id and a class name) is under 300 bytes
MAX_BODY_BYTES = 16 * 1024
LOOPBACK_HOSTS = {"localhost"}

#: HTTP status of each kind of georet error; any other is the caller's bad input
_STATUS = {NotFoundError: 404, ReadOnlyError: 403, ConflictError: 409}
#: library parameters this API spells otherwise
_QUERY_PARAMETERS = {"text": "q", "from_date": "from", "to_date": "to"}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose an index beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise GeoretError(f"{{host}} {host} makes the index reachable from other machines; pass {{token}} TOKEN "
                          "(clients send it as 'Authorization: Bearer TOKEN')", names=("host", "token"))


class SceneExample(BaseModel):
    """A tile an analyst says shows a class: its id, and the class (a label set name)."""

    model_config = ConfigDict(extra="forbid")
    tile_id: str = Field(max_length=200)
    scene: str = Field(min_length=1, max_length=64)


def create_app(db: str | Path, *, token: str | None = None, device: str = "auto", index=None,
               max_pending: int = MAX_PENDING) -> FastAPI:
    """The FastAPI application serving one index (``index``: an already open GeoIndex, for tests), shedding
    requests beyond ``max_pending`` in progress."""
    from georet.search import SearchRequest, open_index, to_geojson

    state: dict[str, Any] = {"index": index, "ready": False, "pending": 0}
    lock = threading.Lock()  # one search at a time: the model and the catalog cache are shared

    def warm() -> None:
        """Load the query encoder and read the catalog before the first request needs them."""
        with lock:
            if state["index"] is None:
                state["index"] = open_index(db, device=device)
            current = state["index"]
            current.text_model  # noqa: B018 - loads the query encoder (torch only if the model has no numpy one)
            current.catalog()
            state["ready"] = True

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        warm()
        yield
        if state["index"] is not None:
            state["index"].close()

    app = FastAPI(title="georet", summary="Search satellite and aerial imagery with words",
                  version=_version(), lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def cap_body(request: Request, call_next):
        """Refused before it is read: a body must say its length, and be small."""
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None or not length.isdecimal():
                return error(411, "send the body with a Content-Length")
            if int(length) > MAX_BODY_BYTES:
                return error(413, f"the body is {int(length):,} bytes; at most {MAX_BODY_BYTES:,}")
        return await call_next(request)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token:
            sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.query_params.get("token", "")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                return error(401, "this georet server needs a token: send 'Authorization: Bearer TOKEN'")
        return await call_next(request)

    @app.middleware("http")
    async def shed_load(request: Request, call_next):
        """Outermost: counted on the event loop's one thread, so no lock is needed."""
        if state["pending"] >= max_pending:
            response = error(503, f"busy: {max_pending} requests in progress; retry in {RETRY_AFTER_S} s")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        state["pending"] += 1
        try:
            return await call_next(request)
        finally:
            state["pending"] -= 1

    @app.exception_handler(Exception)
    async def one_line_internal_error(request: Request, exc: Exception):
        """Logged in full on the server's stderr; the client learns that it failed, not where."""
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "internal error (logged by the server)")

    @app.exception_handler(StarletteHTTPException)
    async def one_line_http_error(_request, exc: StarletteHTTPException):
        """Unknown routes, wrong methods, missing static files: the API's own error shape, not Starlette's."""
        return JSONResponse({"error": str(exc.detail).lower()}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error(400, f"{where}: {first.get('msg', 'invalid value')}")

    # the index's own folder, in every spelling a message may hold, longest first (it names no file to clients)
    index_paths = sorted({str(db), str(Path(db).absolute()), str(Path(db).resolve())}, key=len, reverse=True)

    @app.exception_handler(GeoretError)
    async def georet_error(_request, exc: GeoretError):
        message = exc.render(lambda name: _QUERY_PARAMETERS.get(name, name))
        for path in index_paths:
            message = message.replace(path, "the index")
        return error(_STATUS.get(type(exc), 400), message)

    @app.get("/health", summary="200 once the model and the vectors are loaded")
    def health():
        if not state["ready"]:
            return error(503, "loading the model and the index")
        with lock:
            return {"status": "ok", "tiles": len(state["index"])}

    @app.get("/info", summary="Tiles, model, sources and scenes of the index")
    def info():
        with lock:
            return json.loads(json.dumps(state["index"].info(), default=str))

    @app.get("/search", summary="Ranked tiles (or regions) as GeoJSON, as `georet query --format geojson`")
    def search(
        q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="query text")] = "",
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy")] = None,
        bbox_crs: str | None = None,
        scene: str | None = None,
        near: Annotated[str | None, Query(description="'near' distance of relational queries, e.g. 500m")] = None,
        plain: bool = False,
        like: Annotated[list[str], Query(max_length=MAX_EXAMPLES, description="tile ids: more like these")] = [],
        unlike: Annotated[list[str], Query(max_length=MAX_EXAMPLES, description="tile ids: not these")] = [],
        labels: Annotated[str | None, Query(description="a label set saved in the index")] = None,
        min_score: float | None = None,
        dissolve: bool = False,
        scorer: Annotated[str, Query(pattern="^(auto|rocchio|probe)$")] = "auto",
        when: Annotated[str | None, Query(description="acquisition dates: 2016, 2015/2020, 2016-05-01/2016-08-31")] = None,
        from_date: Annotated[str | None, Query(alias="from", description="change queries: the earlier dates")] = None,
        to_date: Annotated[str | None, Query(alias="to", description="change queries: the later dates")] = None,
    ):
        with lock:
            current = state["index"]
            known = current.catalog().index_of
            strangers = [t for t in [*like, *unlike] if t not in known]
            if strangers:  # never a path: examples over HTTP are tiles of this index
                return error(400, f"like/unlike take tile ids of this index; {strangers[0]!r} is not one")
            hits = current.run(SearchRequest(
                text=q.strip() or None, k=k, bbox=bbox, bbox_crs=bbox_crs, scene=scene, relational=not plain,
                near=near, like=like, unlike=unlike, labels=labels, min_score=min_score, dissolve=dissolve,
                scorer=scorer, when=when or None, from_date=from_date or None, to_date=to_date or None))
        return JSONResponse(to_geojson(hits, q or "(examples)"), media_type="application/geo+json")

    @app.post("/scenes", summary='"This tile is a forest": the tile becomes an example of the class and every '
              'tile is relabelled (as `georet label --set CLASS` then `georet relabel`); returns tiles per scene')
    def mark_scene(example: SceneExample):
        with lock:
            current = state["index"]
            if example.tile_id not in current.catalog().index_of:
                return error(400, f"tile_id: {example.tile_id!r} is not a tile of this index")
            counts = current.mark_scene(example.tile_id, example.scene, who="web map")
            current.catalog()  # the relabelled scenes, read now rather than by the next search
        return counts

    @app.get("/imagery", summary="The index's rasters as map layers: id, name, acquisition date, bounds, zooms")
    def imagery():
        with lock:
            return state["index"].imagery()

    @app.get("/imagery/{source}/{z}/{x}/{y}.png", summary="A web-mercator tile of one indexed raster")
    def imagery_tile(source: int, z: Annotated[int, FastPath(ge=0, le=24)], x: int, y: int):
        png = state["index"].map_tile(source, z, x, y)  # each raster reads under its own lock, not the search's
        return Response(png or _empty_tile(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/tiles/{tile_id}/thumbnail.png", summary="The thumbnail stored with a tile")
    def thumbnail(tile_id: str):
        with lock:
            image = state["index"].thumbnail(tile_id)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(db: str | Path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          device: str = "auto", max_pending: int | None = None, on_listening=None) -> None:
    """Run the server until interrupted. ``port=0`` takes a free port; ``on_listening(url)`` hears which."""
    import socket

    import uvicorn

    check_bind(host, token)
    from georet.search import open_index

    index = open_index(db, device=device)  # a missing or broken index fails here, before listening
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise GeoretError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    app = create_app(db, token=token, device=device, index=index, max_pending=max_pending or MAX_PENDING)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    bound = sock.getsockname()[1]
    if on_listening:
        on_listening(f"http://{host if ':' not in host else f'[{host}]'}:{bound}")
    server.run(sockets=[sock])


@functools.cache
def _empty_tile() -> bytes:
    """A transparent 256 px map tile (the size of :mod:`georet.geo.maptiles`' tiles): the answer for a tile
    outside a raster (a map asks for its whole view), made once."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (256, 256)).save(buffer, format="PNG")
    return buffer.getvalue()


def _version() -> str:
    from georet import __version__

    return __version__
