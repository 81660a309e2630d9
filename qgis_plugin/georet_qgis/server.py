"""A ``georet serve`` process for the panel's index, and searches sent to it with QGIS's network classes.

A CLI search pays georet's start-up (torch, the model, the index) every time;
the server pays it once per index. The panel starts one on its first search
(on a free loopback port), stops it when the index changes or the plugin
unloads, and falls back to the CLI when it cannot start.
"""

from __future__ import annotations

import json
from typing import Callable
from urllib.parse import quote

from qgis.core import QgsNetworkAccessManager
from qgis.PyQt.QtCore import QObject, QProcess, QTimer, QUrl, pyqtSignal
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from . import runner

#: How long a starting server may take to answer /health before the panel uses the CLI instead.
START_TIMEOUT_MS = 120_000
_POLL_MS = 200


class ServerProcess(QObject):
    """One ``georet serve`` for one index. ``ready(ok)`` fires once: True when /health answers."""

    ready = pyqtSignal(bool)

    def __init__(self, executable: str, db: str, parent=None):
        super().__init__(parent)
        self.db = db
        self.url: str | None = None
        self.state = "starting"  # starting | ready | failed
        self.failure = ""
        self._reply: QNetworkReply | None = None
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(lambda: self._fail("georet serve did not become ready in time"))
        self.process = runner.new_process(self)
        self.process.readyReadStandardOutput.connect(self._read_url)
        self.process.finished.connect(self._exited)
        self.process.errorOccurred.connect(lambda error: error == QProcess.ProcessError.FailedToStart
                                           and self._fail(f"cannot run {executable}"))
        self._deadline.start(START_TIMEOUT_MS)
        self.process.start(executable, ["serve", "--db", db, "--port", "0"])

    def _read_url(self) -> None:
        if self.url is None and self.process.canReadLine():
            line = bytes(self.process.readLine()).decode("utf-8", "replace").strip()
            if line.startswith("http://"):
                self.url = line
                self._poll_health()

    def _poll_health(self) -> None:
        if self.state != "starting":
            return
        self._reply = QgsNetworkAccessManager.instance().get(QNetworkRequest(QUrl(self.url + "/health")))
        self._reply.finished.connect(self._health_answered)

    def _health_answered(self) -> None:
        reply, self._reply = self._reply, None
        status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
        reply.deleteLater()
        if status == 200 and self.state == "starting":
            self.state = "ready"
            self._deadline.stop()
            self.ready.emit(True)
        else:
            QTimer.singleShot(_POLL_MS, self._poll_health)

    def _exited(self, exit_code: int, _status) -> None:
        stderr = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self._fail(runner.error_message(stderr, exit_code))

    def _fail(self, message: str) -> None:
        if self.state == "starting":
            self.state, self.failure = "failed", message
            self._deadline.stop()
            self.ready.emit(False)
        elif self.state == "ready":  # it died after starting: the next search starts a new one
            self.state, self.failure = "failed", message

    def stop(self) -> None:
        """End the server (blocking up to 5 s); no signal fires after this."""
        self.blockSignals(True)
        self._deadline.stop()
        self.process.blockSignals(True)
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.terminate()
            if not self.process.waitForFinished(5000):
                self.process.kill()
                self.process.waitForFinished(5000)
        self.state = "failed"

    def search(self, query: str, done: Callable[[int, str], None]) -> QNetworkReply:
        """GET /search?query; ``done(http_status, body)`` when it answers (status 0: no answer)."""
        return self._get(f"/search?{query}", lambda status, body: done(status, body.decode("utf-8", "replace")))

    def thumbnail(self, tile_id: str, done: Callable[[int, bytes], None]) -> QNetworkReply:
        """GET a tile's stored PNG thumbnail; ``done(http_status, png_bytes)``."""
        return self._get(f"/tiles/{quote(tile_id, safe='')}/thumbnail.png", done)

    def _get(self, path: str, done: Callable[[int, bytes], None]) -> QNetworkReply:
        reply = QgsNetworkAccessManager.instance().get(QNetworkRequest(QUrl(self.url + path)))

        def finished() -> None:
            status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0
            body = bytes(reply.readAll())
            aborted = reply.error() == QNetworkReply.NetworkError.OperationCanceledError
            reply.deleteLater()
            if not aborted:
                done(int(status), body)

        reply.finished.connect(finished)
        return reply


def error_of(body: str) -> str:
    """The one-line message of a georet server error response."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.strip().splitlines()[0] if body.strip() else "georet server gave no answer"
