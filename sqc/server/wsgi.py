"""The production WSGI server around the app: waitress (pure Python, threads), with a graceful
stop.

A request is handled on one of `workers` waitress threads; the thread waits (without the GIL)
while the model's batcher runs the engine, whose C code releases the GIL too. `Server.stop()`
(what SIGTERM and SIGINT call in `sqc serve`) closes the listening socket, answers 503 to new
requests on open connections, lets every request in flight finish and its response reach the
socket (at most `drain_seconds`), then closes the connections and stops the threads.

waitress reports some malformed requests itself (a body over the size limit, a broken header
or chunked encoding) before the app sees them; those answers are JSON here too.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from flask import Flask
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

__all__ = ["Server"]

log = logging.getLogger("sqc.server")


class _JsonErrorTask(ErrorTask):
    """waitress's own error responses (413, 400 for a malformed request) as `{"error": ...}`."""

    def execute(self) -> None:
        error = self.request.error
        message = f"{error.reason.lower()}: {error.body}"
        if error.code == 413:
            message = f"request body is larger than {self.channel.adj.max_request_body_size} bytes"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


class _TcpServer(TcpWSGIServer):
    channel_class = _Channel


class Server:
    """`Server(app, host, port, workers)`: bound on construction (port 0 picks a free port,
    see `.port`), serving from `serve_forever()` until `stop()`."""

    def __init__(
        self,
        app: Flask,
        host: str = "127.0.0.1",
        port: int = 5543,
        *,
        workers: int = 64,
        max_request_bytes: int = 1 << 20,
        drain_seconds: float = 30.0,
    ) -> None:
        self.app = app
        self.drain_seconds = drain_seconds
        self._map: dict = {}
        adjustments = Adjustments(
            host=host,
            port=port,
            threads=workers,
            max_request_body_size=max_request_bytes,
            connection_limit=max(100, 4 * workers),
            ident="sqc",
            asyncore_use_poll=True,
        )
        self._server = _TcpServer(app, map=self._map, adj=adjustments)
        self.host = self._server.effective_host
        self.port = int(self._server.effective_port)
        self._stop = threading.Event()
        self.stopped = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Begin a graceful stop; safe from a signal handler or another thread."""
        self._stop.set()
        self._server.pull_trigger()  # wake the poll loop

    def serve_forever(self) -> None:
        state = self.app.extensions.get("sqc")
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=1.0, use_poll=True, map=self._map, count=1)
            log.info("stopping: draining requests in flight")
            if state is not None:
                state.draining = True
            # Close only the listening socket; open connections finish their requests.
            wasyncore.dispatcher.close(self._server)
            deadline = time.monotonic() + self.drain_seconds
            while not self._drained(state) and time.monotonic() < deadline:
                wasyncore.loop(timeout=0.05, use_poll=True, map=self._map, count=1)
            if not self._drained(state):
                log.warning("stopping with requests still in flight after %ss", self.drain_seconds)
        finally:
            self._server.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(self._map)
            if state is not None:
                state.close()
            self.stopped.set()
            log.info("stopped")

    def _drained(self, state) -> bool:
        if state is not None and state.active > 0:
            return False
        dispatcher = self._server.task_dispatcher
        if dispatcher.queue:
            return False
        for channel in list(self._map.values()):
            if isinstance(channel, HTTPChannel) and (
                channel.requests or channel.total_outbufs_len or channel.request is not None
            ):
                return False
        return True
