"""Layer 5: `sqc serve` as a user (or DeepSparse user) types it, in a subprocess: the bundled
default model, DeepSparse's invocation, a config file, start-up errors, and SIGTERM draining the
requests in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.server.conftest import DEEPSPARSE, MARK, TINY_MODEL, TINY_TOKENIZER, free_port

# .onnx models compiled at start-up go to a cache of this test session, not the user's.
CACHE = Path(tempfile.mkdtemp(prefix="sqc-serve-cache-"))


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sqc.cli", "serve", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, SQC_CACHE_DIR=str(CACHE), **(env or {})),
    )


def wait_ready(process: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()[1]}")
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not become ready")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    """The tiny .onnx model with its tokenizer.json beside it, as a user keeps them."""
    model = tmp_path / "tiny.onnx"
    model.write_bytes(TINY_MODEL.read_bytes())
    (tmp_path / "tokenizer.json").write_bytes(TINY_TOKENIZER.read_bytes())
    return model


def test_serve_alone_answers_then_sigterm_drains_in_flight_requests():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start("--port", port)  # no model named: the bundled default model
    try:
        wait_ready(process, url)
        answer = requests.post(f"{url}/predict", json=MARK).json()
        assert (answer["answer"], answer["start"], answer["end"]) == ("batman", 8, 14)
        answer = requests.post(f"{url}/v2/models/question_answering/infer", json=DEEPSPARSE)
        assert answer.json()["answer"] == "sparsity-aware inference runtime"

        # Long contexts (many windows each) keep requests in flight when SIGTERM arrives.
        # (about 88,000 characters: under the 100,000 limit, over a second of engine time)
        filler = "The weather in the valley was mild and the farmers planted wheat. " * 1300
        body = {"question": "What is the code word?", "context": filler + "The code is kiwi."}
        results: list = []
        finished: list[float] = []

        def ask() -> None:
            try:
                results.append(requests.post(f"{url}/predict", json=body, timeout=60))
                finished.append(time.monotonic())
            except requests.RequestException as e:  # recorded, then asserted on
                results.append(e)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        with pytest.raises(requests.ConnectionError):  # no longer listening
            requests.get(f"{url}/v2/health/live", timeout=2)
        for thread in threads:
            thread.join(60)
        assert [getattr(r, "status_code", r) for r in results] == [200] * 4
        assert all(r.json()["answer"] == "kiwi" for r in results)
        assert min(finished) > signalled  # they were in flight when SIGTERM came
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "draining" in stderr and "stopped" in stderr and "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()


def test_deepsparse_invocation_with_an_onnx_model(tiny_onnx):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(
        "--task", "question_answering", "--model_path", tiny_onnx, "--buckets", "32", "--port", port
    )
    try:
        wait_ready(process, url)
        for path in ("/predict", "/v2/models/question_answering/infer"):
            response = requests.post(f"{url}{path}", json=MARK)
            assert response.status_code == 200
            assert set(response.json()) == {"score", "answer", "start", "end"}
        assert requests.get(f"{url}/v2/models").json()["models"][0]["buckets"] == [32]
    finally:
        stop(process)


def test_config_file_with_several_endpoints(tmp_path, tiny_onnx):
    port = free_port()
    config = tmp_path / "server.yaml"
    config.write_text(
        f"""
port: {port}
num_cores: 1
endpoints:
  - task: question_answering
    name: small
    model: {tiny_onnx.name}
    sequence_length: [32]
    batch_size: 4
    kwargs:
      max_answer_length: 4
  - task: question-answering
    name: other
    route: /other/predict
    model: {tiny_onnx}
    bucketing:
      sequence_lengths: [64]
"""
    )
    url = f"http://127.0.0.1:{port}"
    process = start("--config-file", config, "--api-key", "k")
    try:
        wait_ready(process, url)
        key = {"X-API-Key": "k"}
        assert requests.post(f"{url}/v2/models/small/infer", json=MARK).status_code == 401
        for path in ("/v2/models/small/infer", "/v2/models/other/infer", "/other/predict"):
            assert requests.post(f"{url}{path}", json=MARK, headers=key).status_code == 200
        models = requests.get(f"{url}/v2/models", headers=key).json()["models"]
        assert [(m["name"], m["buckets"], m["batch_size"]) for m in models] == [
            ("small", [32], 4),
            ("other", [64], 32),
        ]
    finally:
        stop(process)


@pytest.mark.parametrize(
    "text,words",
    [
        (
            "endpoints:\n  - model: x.onnx\n    modle_path: y\n",
            ["endpoints[0].modle_path", "unknown key"],
        ),
        ("prot: 5543\n", ["prot", "unknown key"]),
        ("endpoints:\n  - kwargs: {stride: 3}\n", ["kwargs", "'stride'"]),
        ("endpoints:\n  - task: summarization\n", ["summarization", "not supported"]),
        ("port: high\n", ["port", "expected int"]),
        ("endpoints:\n  - model: zoo:nlp/bert\n", ["never downloads"]),
        ("endpoints: [\n", ["not valid YAML"]),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, words):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    process = start("--config", config)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_start_up_errors(tmp_path, tiny_artifact):
    process = start(tmp_path / "missing-model")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "missing-model" in stderr and "Traceback" not in stderr

    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = start(tiny_artifact, "--port", taken.getsockname()[1])
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "cannot listen" in stderr and "Traceback" not in stderr
