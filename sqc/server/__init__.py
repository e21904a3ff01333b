"""The HTTP server: `sqc serve`, DeepSparse-compatible question-answering routes.

`create_app(config)` is the Flask application (see app.py for the routes), `Server` runs it
under waitress with a graceful stop (wsgi.py), `serve(config)` does both until SIGTERM or
SIGINT. Configuration: config.py; micro-batching: batching.py; metrics: metrics.py.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from sqc.server.app import create_app
from sqc.server.config import (
    ConfigError,
    EndpointConfig,
    ServerConfig,
    config_from_dict,
    load_config,
)
from sqc.server.wsgi import Server

__all__ = [
    "ConfigError",
    "EndpointConfig",
    "Server",
    "ServerConfig",
    "config_from_dict",
    "create_app",
    "load_config",
    "serve",
]


def serve(
    config: ServerConfig,
    *,
    progress: Callable[[str], None] | None = None,
    on_ready: Callable[[Server], None] | None = None,
) -> None:
    """Load the models, listen, and serve until SIGTERM or SIGINT, then drain and return."""
    app = create_app(config, progress=progress)
    try:
        server = Server(
            app,
            config.host,
            config.port,
            workers=config.workers,
            max_request_bytes=config.max_request_bytes,
            drain_seconds=config.drain_seconds,
        )
    except BaseException:
        app.extensions["sqc"].close()
        raise
    previous = {
        sig: signal.signal(sig, lambda *_: server.stop()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        if on_ready is not None:
            on_ready(server)
        logging.getLogger("sqc.server").info("serving on %s", server.url)
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
