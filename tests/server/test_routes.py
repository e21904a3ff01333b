"""Layer 5: the server over real HTTP (requests) on a loopback port: every route, every error,
auth on and off, several models, concurrency and micro-batching."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.server.conftest import DEEPSPARSE, MARK, running

# -- the DeepSparse documentation's client examples, unchanged ---------------------------------


def test_deepsparse_client_examples(minilm_server):
    url, _, _ = minilm_server
    # As in DeepSparse Server's docs: the named route, then /predict of a one-model server.
    endpoint_url = f"{url}/v2/models/question_answering/infer"
    obj = {"question": "Who is Mark?", "context": "Mark is batman."}
    response = requests.post(endpoint_url, json=obj)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert list(answer) == ["score", "answer", "start", "end"]
    assert (answer["answer"], answer["start"], answer["end"]) == ("batman", 8, 14)
    assert isinstance(answer["score"], float)

    response = requests.post(f"{url}/predict", json=DEEPSPARSE)
    assert response.status_code == 200
    assert response.json()["answer"] == "sparsity-aware inference runtime"


def test_lists_of_questions(minilm_server):
    url, _, _ = minilm_server
    singles = [requests.post(f"{url}/predict", json=item).json() for item in (MARK, DEEPSPARSE)]
    as_objects = requests.post(f"{url}/predict", json=[MARK, DEEPSPARSE]).json()
    as_lists = requests.post(
        f"{url}/predict",
        json={
            "question": [MARK["question"], DEEPSPARSE["question"]],
            "context": [MARK["context"], DEEPSPARSE["context"]],
        },
    ).json()
    for batch in (as_objects, as_lists):
        assert [a["answer"] for a in batch] == [s["answer"] for s in singles]
        assert [a["start"] for a in batch] == [s["start"] for s in singles]
        for a, s in zip(batch, singles):
            assert a["score"] == pytest.approx(s["score"], abs=1e-3)


def test_long_context_is_windowed(minilm_server):
    url, _, _ = minilm_server
    filler = "The weather in the valley was mild and the farmers planted wheat every spring. "
    context = filler * 40 + "The secret code word is pineapple. " + filler * 40
    answer = requests.post(
        f"{url}/predict", json={"question": "What is the secret code word?", "context": context}
    ).json()
    assert answer["answer"] == "pineapple" and answer["start"] == context.index("pineapple")


# -- descriptive routes ------------------------------------------------------------------------


def test_models_health_docs_openapi(tiny_server):
    from openapi_spec_validator import validate

    url, _, _ = tiny_server
    models = requests.get(f"{url}/v2/models").json()["models"]
    assert len(models) == 1
    model = models[0]
    assert model["name"] == "question_answering"
    assert model["buckets"] == [32, 64]
    assert model["quantization"] == "none" and model["sparsity"] == 0.0
    assert model["routes"] == ["/v2/models/question_answering/infer", "/predict"]
    assert requests.get(f"{url}/v2/models/question_answering").json() == model

    ready = requests.get(f"{url}/v2/models/question_answering/ready")
    assert ready.json() == {"status": "ready", "model": "question_answering"}
    assert requests.get(f"{url}/v2/models/nope/ready").status_code == 404
    assert requests.get(f"{url}/v2/health/live").json() == {"status": "live"}
    ready = requests.get(f"{url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["question_answering"]

    docs = requests.get(f"{url}/docs")
    assert docs.status_code == 200 and docs.headers["Content-Type"].startswith("text/html")
    for text in ("/predict", "/v2/models/{model_name}/infer", "/metrics", "Who is Mark?"):
        assert text in docs.text

    document = requests.get(f"{url}/openapi.json").json()
    validate(document)  # raises on an invalid OpenAPI document
    assert document["openapi"].startswith("3.")
    assert {"/predict", "/v2/models/{model_name}/infer", "/v2/models", "/metrics"} <= set(
        document["paths"]
    )


def test_metrics(tiny_server):
    url, _, _ = tiny_server
    for _ in range(3):
        assert requests.post(f"{url}/predict", json=MARK).status_code == 200
    assert requests.post(f"{url}/predict", json={"question": 1}).status_code == 422
    response = requests.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = response.text
    model = 'model="question_answering"'
    lines = text.splitlines()

    def value(prefix: str, *needles: str) -> float:
        found = [
            line for line in lines if line.startswith(prefix) and all(n in line for n in needles)
        ]
        assert found, (prefix, needles)
        return sum(float(line.rsplit(" ", 1)[1]) for line in found)

    assert value("sqc_requests_total", model, 'route="/predict"', 'code="200"') >= 3
    assert value("sqc_request_errors_total", model, 'code="422"') >= 1
    assert value("sqc_request_latency_seconds_count", model) >= 4
    assert value("sqc_batch_size_count", model) >= 3
    assert value("sqc_questions_total", model) >= 3
    assert "sqc_requests_in_flight" in text


# -- errors ------------------------------------------------------------------------------------

BAD_BODIES = [
    # (body bytes, status, words the error must contain)
    (b"{not json", 400, ["not valid JSON"]),
    (b"", 400, ["empty body"]),
    (b"\xff\xfe", 400, ["UTF-8"]),
    (b"[" * 100_000, 400, ["JSON"]),
    (b'"just a string"', 400, ["JSON object", "string"]),
    (b"42", 400, ["number"]),
    (b'{"question": "Who?"}', 422, ["missing field 'context'"]),
    (b'{"context": "Mark is batman."}', 422, ["missing field 'question'"]),
    (b'{"question": 3, "context": "x"}', 422, ["'question' must be a string", "number"]),
    (b'{"question": "Who?", "context": null}', 422, ["'context' must be a string", "null"]),
    (b'{"question": ["a"], "context": "x"}', 422, ["strings or both lists"]),
    (b'{"question": ["a", "b"], "context": ["x"]}', 422, ["different lengths"]),
    (b'{"question": ["a", 2], "context": ["x", "y"]}', 422, ["question[1]"]),
    (b'{"question": "  ", "context": "x"}', 422, ["'question' is empty"]),
    (b'{"question": "Who?", "context": ""}', 422, ["'context' is empty"]),
    (b"[]", 422, ["empty"]),
    (b'[{"question": "Who?", "context": "x"}, 5]', 422, ["item 1"]),
    (b'[{"question": "Who?"}]', 422, ["item 0", "missing field 'context'"]),
]


@pytest.mark.parametrize("body,status,words", BAD_BODIES)
def test_malformed_requests_get_json_4xx(tiny_server, body, status, words):
    url, _, _ = tiny_server
    response = requests.post(
        f"{url}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    message = response.json()["error"]
    for word in words:
        assert word in message, message


def test_limits_and_unknown_routes(tiny_server):
    url, _, _ = tiny_server

    def error(response, status, *words):
        assert response.status_code == status, response.text
        message = response.json()["error"]
        assert all(word in message for word in words), message

    # max_context_chars is 5000 on this server; max_items 64; max_request_bytes 1 MiB
    error(
        requests.post(f"{url}/predict", json={"question": "Who?", "context": "x " * 3000}),
        413,
        "context",
        "6000 characters",
        "5000",
    )
    error(requests.post(f"{url}/predict", json=[MARK] * 65), 413, "65 questions", "64")
    error(
        requests.post(f"{url}/predict", json={"question": "a", "context": "b" * (2 << 20)}),
        413,
        "larger than 1048576 bytes",
    )
    long_question = "why " * 80
    error(
        requests.post(f"{url}/predict", json={"question": long_question, "context": "x"}),
        422,
        "max_question_length",
    )
    error(
        requests.post(f"{url}/v2/models/nope/infer", json=MARK), 404, "'nope'", "question_answering"
    )
    error(requests.get(f"{url}/v2/models/nope"), 404, "'nope'")
    error(requests.get(f"{url}/nowhere"), 404, "/nowhere")
    error(requests.get(f"{url}/predict"), 405, "GET", "POST")
    error(requests.delete(f"{url}/v2/models"), 405, "DELETE")


def test_internal_failure_is_a_500_without_traceback(tiny_artifact):
    with running({"endpoints": [{"model": str(tiny_artifact)}]}) as (url, app, _):
        batcher = app.extensions["sqc"].models["question_answering"].batcher
        real = batcher._run_batch

        def flaky(pairs, threads):
            if any(question == "explode" for question, _ in pairs):
                raise RuntimeError("secret internal detail /etc/passwd")
            return real(pairs, threads)

        batcher._run_batch = flaky
        response = requests.post(f"{url}/predict", json={"question": "explode", "context": "x"})
        assert response.status_code == 500
        body = response.json()
        assert set(body) == {"error"}
        assert "secret" not in response.text and "Traceback" not in response.text
        # and the server keeps serving
        assert requests.post(f"{url}/predict", json=MARK).status_code == 200


# -- auth --------------------------------------------------------------------------------------


def test_api_key(tiny_artifact):
    config = {"endpoints": [{"model": str(tiny_artifact)}], "api_key": "s3cret"}
    with running(config) as (url, _, _):
        for method, path in [
            ("post", "/predict"),
            ("post", "/v2/models/question_answering/infer"),
            ("get", "/v2/models"),
            ("get", "/metrics"),
            ("get", "/docs"),
            ("get", "/openapi.json"),
            ("get", "/nowhere"),
        ]:
            response = requests.request(method, f"{url}{path}", json=MARK)
            assert response.status_code == 401, path
            assert "API key" in response.json()["error"]
            wrong = requests.request(method, f"{url}{path}", json=MARK, headers={"X-API-Key": "no"})
            assert wrong.status_code == 401
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert requests.get(f"{url}{path}").status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert requests.post(f"{url}/predict", json=MARK, headers=bearer).status_code == 200
        header = {"X-API-Key": "s3cret"}
        assert requests.get(f"{url}/v2/models", headers=header).status_code == 200
        document = requests.get(f"{url}/openapi.json", headers=header).json()
        assert "securitySchemes" in document["components"]


def test_no_api_key_by_default(tiny_server):
    url, _, _ = tiny_server
    assert requests.get(f"{url}/v2/models").status_code == 200
    assert requests.post(f"{url}/predict", json=MARK).status_code == 200


# -- several models ----------------------------------------------------------------------------


def test_several_models(tiny_artifact, minilm_artifact):
    config = {
        "endpoints": [
            {"name": "tiny", "model": str(tiny_artifact), "kwargs": {"max_answer_length": 5}},
            {"name": "minilm", "model": str(minilm_artifact), "route": "/minilm/predict"},
        ]
    }
    with running(config) as (url, _, _):
        names = [m["name"] for m in requests.get(f"{url}/v2/models").json()["models"]]
        assert names == ["tiny", "minilm"]
        assert requests.post(f"{url}/v2/models/tiny/infer", json=MARK).status_code == 200
        for path in ("/v2/models/minilm/infer", "/minilm/predict"):
            assert requests.post(f"{url}{path}", json=MARK).json()["answer"] == "batman"
        response = requests.post(f"{url}/predict", json=MARK)
        assert response.status_code == 404
        assert "/v2/models/tiny/infer" in response.json()["error"]
        tiny = requests.get(f"{url}/v2/models/tiny").json()
        assert tiny["kwargs"]["max_answer_length"] == 5


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_requests_are_batched(tiny_artifact):
    """While the engine runs one batch, the requests that arrive queue up and go through the
    next engine call together; every request still gets its own answer."""
    config = {"endpoints": [{"model": str(tiny_artifact), "batch_size": 16}], "workers": 32}
    with running(config) as (url, app, _):
        batcher = app.extensions["sqc"].models["question_answering"].batcher
        real = batcher._run_batch
        sizes = []

        def slow(pairs, threads):
            sizes.append(len(pairs))
            time.sleep(0.2)  # an engine call long enough for the others to queue
            return real(pairs, threads)

        batcher._run_batch = slow
        contexts = [f"mark number {i} is batman." for i in range(16)]
        expected = [
            requests.post(f"{url}/predict", json={"question": "who is mark?", "context": c}).json()
            for c in contexts[:2]
        ]
        sizes.clear()
        session_local = threading.local()

        def ask(context):
            session = getattr(session_local, "s", None) or requests.Session()
            session_local.s = session
            return session.post(
                f"{url}/predict", json={"question": "who is mark?", "context": context}
            )

        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(ask, contexts))
        elapsed = time.perf_counter() - started
        assert all(r.status_code == 200 for r in responses)
        answers = [r.json() for r in responses]
        for answer, context in zip(answers, contexts):
            assert context[answer["start"] : answer["end"]] == answer["answer"]
        assert answers[:2] == expected
        assert sum(sizes) == 16
        assert max(sizes) > 1 and len(sizes) < 16  # gathered, not one at a time
        assert elapsed < 16 * 0.2  # not queued one by one behind the 0.2 s engine call


def test_requests_are_served_in_parallel(tiny_artifact):
    """A slow inference does not hold up other routes."""
    with running({"endpoints": [{"model": str(tiny_artifact)}]}) as (url, app, _):
        batcher = app.extensions["sqc"].models["question_answering"].batcher
        real = batcher._run_batch
        release = threading.Event()

        def blocked(pairs, threads):
            release.wait(10)
            return real(pairs, threads)

        batcher._run_batch = blocked
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(requests.post, f"{url}/predict", json=MARK)
            time.sleep(0.1)
            assert requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
            assert requests.get(f"{url}/v2/models", timeout=2).status_code == 200
            assert not pending.done()
            release.set()
            assert pending.result(timeout=10).status_code == 200


def test_stop_drains_in_flight_requests(tiny_artifact):
    """stop(): no new connections, 503 on open ones, the request in flight still answered."""
    from sqc.server import Server, config_from_dict, create_app

    app = create_app(config_from_dict({"endpoints": [{"model": str(tiny_artifact)}]}))
    server = Server(app, "127.0.0.1", 0, workers=8, drain_seconds=10)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = server.url
    batcher = app.extensions["sqc"].models["question_answering"].batcher
    real = batcher._run_batch
    release = threading.Event()

    def blocked(pairs, threads):
        release.wait(10)
        return real(pairs, threads)

    batcher._run_batch = blocked
    open_connection = requests.Session()
    assert open_connection.get(f"{url}/v2/health/live").status_code == 200
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.post, f"{url}/predict", json=MARK, timeout=20)
        time.sleep(0.2)
        server.stop()
        time.sleep(0.3)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/v2/health/live", timeout=2)
        late = open_connection.post(f"{url}/predict", json=MARK, timeout=5)
        assert late.status_code == 503 and "shutting down" in late.json()["error"]
        assert open_connection.get(f"{url}/v2/health/ready", timeout=5).status_code == 503
        assert thread.is_alive() and not pending.done()
        release.set()
        answer = pending.result(timeout=10)
    assert answer.status_code == 200 and answer.json()["answer"]
    thread.join(10)
    assert not thread.is_alive() and server.stopped.is_set()
