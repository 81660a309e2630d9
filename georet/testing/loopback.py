"""Stand-ins for remote services, all on 127.0.0.1: a range-capable HTTP file server (COGs, STAC JSON)
that counts the bytes it sends and can be told to fail (:attr:`RangeServer.fault`), a minimal STAC API, and
moto's S3 server.

Used by the tests and by ``benchmarks/remote.py``; nothing here talks to anything but loopback.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeServer(ThreadingHTTPServer):
    """Serves a folder with HTTP range requests; ``bytes_sent`` and ``requests`` count what clients fetched."""

    daemon_threads = True

    def __init__(self, root: Path, stac_items: list[dict] | None = None):
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.root = root
        self.stac_items = stac_items or []
        self.bytes_sent = 0
        self.requests = 0
        self._count_lock = threading.Lock()
        #: ``(kind, after)``: once ``after`` range requests were answered, every later one fails: "error"
        #: (HTTP 500), "stall" (headers, then no byte for a minute) or "drop" (half the body, then the
        #: connection closes); None: no faults
        self.fault: tuple[str, int] | None = None
        self.faulted = 0  # requests answered with the fault

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, n: int) -> None:
        with self._count_lock:
            self.bytes_sent += n
            self.requests += 1

    def reset_counts(self) -> None:
        with self._count_lock:
            self.bytes_sent = self.requests = 0


class _Handler(SimpleHTTPRequestHandler):
    server: RangeServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path.split("?")[0].startswith("/stac-api"):
            return self._stac_api()
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404, "Not Found")
        size = path.stat().st_size
        match = _RANGE.match(self.headers.get("Range", ""))
        start, end = (int(match.group(1)), int(match.group(2) or size - 1)) if match else (0, size - 1)
        end = min(end, size - 1)
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        if match and self.server.fault and self.server.requests >= self.server.fault[1]:
            return self._fail(self.server.fault[0], end - start + 1)
        self.send_response(206 if match else 200)
        self.send_header("Content-Type", "application/json" if path.suffix == ".json" else "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with path.open("rb") as fh:
            fh.seek(start)
            body = fh.read(end - start + 1)
        self.wfile.write(body)
        self.server.count(len(body))

    def _fail(self, kind: str, length: int) -> None:
        with self.server._count_lock:
            self.server.faulted += 1
        if kind == "error":
            return self.send_error(500, "Internal Server Error")
        self.send_response(206)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if kind == "stall":
            time.sleep(60)
        else:  # "drop"
            self.wfile.write(b"\0" * (length // 2))
        self.close_connection = True

    def do_POST(self) -> None:
        if self.path.split("?")[0].startswith("/stac-api"):
            return self._stac_api()
        self.send_error(405)

    def _stac_api(self) -> None:
        """A STAC API that is just enough for pystac-client: landing page, conformance, item search."""
        base = f"{self.server.url}/stac-api"
        route = self.path.split("?")[0][len("/stac-api"):].strip("/")
        if route == "":
            body = {"type": "Catalog", "id": "loopback", "description": "test STAC API", "stac_version": "1.0.0",
                    "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                   "https://api.stacspec.org/v1.0.0/item-search"],
                    "links": [{"rel": "self", "href": base}, {"rel": "root", "href": base},
                              {"rel": "search", "href": f"{base}/search", "method": "POST",
                               "type": "application/geo+json"},
                              {"rel": "search", "href": f"{base}/search", "method": "GET",
                               "type": "application/geo+json"}]}
        elif route == "search":
            length = int(self.headers.get("Content-Length") or 0)
            query = json.loads(self.rfile.read(length) or b"{}") if self.command == "POST" else {}
            wanted = set(query.get("collections") or [])
            items = [i for i in self.server.stac_items if not wanted or i.get("collection") in wanted]
            if query.get("bbox"):
                w, s, e, n = query["bbox"]
                items = [i for i in items if i["bbox"][0] <= e and i["bbox"][2] >= w
                         and i["bbox"][1] <= n and i["bbox"][3] >= s]
            body = {"type": "FeatureCollection", "features": items[: int(query.get("limit") or 100)], "links": []}
        else:
            return self.send_error(404, "Not Found")
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def range_server(root: Path, stac_items: list[dict] | None = None) -> Iterator[RangeServer]:
    server = RangeServer(root, stac_items)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 in server mode on loopback (it stands in for S3, MinIO…); yields its endpoint URL.

    Credentials and the endpoint go into this process's environment for the
    duration, as a user would set them; child processes inherit them.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ALLOW_HTTP")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=endpoint,
                      AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_ALLOW_HTTP="true")
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
