"""Fixtures of the server tests: compiled models (the tiny fixture model and the bundled MiniLM
with small buckets, so start-up stays quick) and real servers on free loopback ports.

`start_server(config)` runs `create_app` under the production WSGI server (waitress) on a thread
of the test process; the tests talk HTTP to it with requests. The tests of the `sqc serve`
command itself (signals, exit codes) start it as a subprocess.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

import sqc
from tests.conftest import FIXTURES, ROOT

TINY_MODEL = FIXTURES / "bert_qa_opset17.onnx"
TINY_TOKENIZER = FIXTURES / "tiny-bert-tokenizer.json"
BUNDLED_MODEL = ROOT / "examples" / "models" / "minilm-l6-qa" / "model.onnx"

# The DeepSparse documentation's examples, unchanged.
MARK = {"question": "Who is Mark?", "context": "Mark is batman."}
DEEPSPARSE = {
    "question": "What is DeepSparse?",
    "context": "DeepSparse is sparsity-aware inference runtime offering GPU-class performance on "
    "CPUs and APIs to integrate ML into your application",
}


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("server") / "tiny"
    return sqc.compile_model(TINY_MODEL, [32, 64], out, max_batch_size=8, tokenizer=TINY_TOKENIZER)


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory) -> Path:
    """The bundled default model, compiled with one small bucket (seconds, not minutes)."""
    out = tmp_path_factory.mktemp("server") / "minilm"
    return sqc.compile_model(BUNDLED_MODEL, [64], out, max_batch_size=16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(config):
    """A real server for `config` (a ServerConfig or a mapping in the YAML's shape) on a free
    loopback port; yields (base URL, app, server); stops it gracefully on exit."""
    from sqc.server import Server, ServerConfig, config_from_dict, create_app

    if not isinstance(config, ServerConfig):
        config = config_from_dict(config)
    app = create_app(config)
    server = Server(
        app,
        "127.0.0.1",
        0,
        workers=config.workers,
        max_request_bytes=config.max_request_bytes,
        drain_seconds=5,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url, app, server
    finally:
        server.stop()
        thread.join(10)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def tiny_server(tiny_artifact):
    """One model (the tiny fixture model) served as DeepSparse serves one model."""
    with running({"endpoints": [{"model": str(tiny_artifact)}], "max_context_chars": 5000}) as s:
        yield s


@pytest.fixture(scope="module")
def minilm_server(minilm_artifact):
    with running({"endpoints": [{"model": str(minilm_artifact)}]}) as s:
        yield s
