"""The Flask application: DeepSparse-compatible question-answering routes over sqc pipelines.

`create_app(config)` loads (and, for .onnx models, compiles) every endpoint's model before it
returns, so a running server is a ready server. Routes:

- `POST /predict` (a server with one model) and `POST /v2/models/<name>/infer`, plus any
  `route` of an endpoint: `{"question", "context"}` -> `{"score", "answer", "start", "end"}`,
  or lists of them (a list of objects, or an object of two equal-length lists) -> a list.
- `GET /v2/models`, `GET /v2/models/<name>`: names, routes, buckets, quantization, sparsity;
  `GET /v2/models/<name>/ready` (as in DeepSparse Server and the KServe v2 protocol).
- `GET /v2/health/live`, `GET /v2/health/ready` (never behind the API key).
- `GET /docs`, `GET /openapi.json`, `GET /metrics` (Prometheus text format).

Every error is JSON `{"error": "..."}` naming the problem: 400 unreadable body, 401 missing or
wrong API key, 404 unknown route or model, 405 wrong method, 413 body, context or list too
large, 422 missing, wrong-typed or unusable fields, 503 shutting down, 500 an internal failure
(logged here, never sent to the client).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from sqc.server.batching import MicroBatcher
from sqc.server.config import ServerConfig, config_from_dict, load_config
from sqc.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from sqc.server.openapi import docs_page, openapi_document

__all__ = ["ServedModel", "create_app"]

log = logging.getLogger("sqc.server")

STATE_KEY = "sqc"
# Batcher threads per model at most: under load each runs engine calls with threads // workers
# threads (see MicroBatcher).
MAX_BATCHER_WORKERS = 4
# Routes that answer without the API key and while draining, so orchestrators can probe them.
OPEN_ENDPOINTS = {"health_live", "health_ready"}


class RequestError(Exception):
    """A request the client must fix: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ServedModel:
    """One endpoint: its pipeline, its batcher and what /v2/models says about it."""

    name: str
    routes: list[str]
    pipeline: Any
    batcher: MicroBatcher
    info: dict


class ServerState:
    """What the routes share: the models, the limits, the metrics and the draining flag."""

    def __init__(self, config: ServerConfig, models: dict[str, ServedModel], metrics) -> None:
        self.config = config
        self.models = models
        self.metrics = metrics
        self.draining = False
        self.active = 0
        self._lock = threading.Lock()
        self.pid = os.getpid()

    @property
    def forked(self) -> bool:
        """Whether this is a child forked after the app was made (gunicorn --preload): the
        batcher threads stayed behind in the parent, so no prediction could be answered."""
        return os.getpid() != self.pid

    def enter(self) -> None:
        with self._lock:
            self.active += 1

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def close(self) -> None:
        for model in self.models.values():
            model.batcher.close()


def create_app(config: ServerConfig | dict | str | Path | None = None, *, progress=None) -> Flask:
    """A Flask app serving the endpoints of `config` (a ServerConfig, a mapping in the YAML's
    shape, a YAML file's path, or None for the bundled default model). Models are loaded, and
    .onnx models compiled (cached), before this returns. `app.extensions["sqc"].close()` stops
    the batcher threads."""
    if config is None:
        config = ServerConfig()
    elif isinstance(config, dict):
        config = config_from_dict(config)
    elif isinstance(config, (str, Path)):
        config = load_config(config)
    metrics = ServerMetrics()
    models = _load_models(config, metrics, progress)
    state = ServerState(config, models, metrics)

    app = Flask("sqc.server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.json.sort_keys = False  # {"score", "answer", "start", "end"} in DeepSparse's order
    app.extensions[STATE_KEY] = state
    _add_hooks(app, state)
    _add_routes(app, state)
    return app


# -- models ------------------------------------------------------------------------------------


def _load_models(config: ServerConfig, metrics: ServerMetrics, progress) -> dict[str, ServedModel]:
    from sqc.api import Pipeline

    models: dict[str, ServedModel] = {}
    single = len(config.endpoints) == 1
    try:
        for endpoint in config.endpoints:
            pipeline = Pipeline.create(
                endpoint.task,
                endpoint.model,
                sequence_length=endpoint.sequence_length,
                batch_size=endpoint.batch_size,
                threads=config.threads,
                progress=progress,
                **endpoint.kwargs,
            )
            # The first engine call of a process is slow (pages of weights, workspaces): make it
            # here, not on a client's first request.
            pipeline.answer_pairs([("What is this?", "This is a warm-up.")])
            name = endpoint.name
            routes = [f"/v2/models/{name}/infer"]
            if single:
                routes.append("/predict")
            if endpoint.route and endpoint.route not in routes:
                routes.append(endpoint.route)

            def on_batch(questions, requests, seconds, name=name):
                metrics.observe_batch(name, questions, requests, seconds)

            engine = _ThreadsPerCall(pipeline.engine)
            pipeline.engine = engine

            def run_batch(pairs, threads, pipeline=pipeline, engine=engine):
                engine.local.threads = threads
                return pipeline.answer_pairs(pairs)

            batcher = MicroBatcher(
                run_batch,
                max_batch_size=endpoint.batch_size,
                max_wait=config.max_batch_wait_ms / 1000,
                threads=engine.threads,
                workers=min(engine.threads, MAX_BATCHER_WORKERS),
                name=name,
                on_batch=on_batch,
            )
            models[name] = ServedModel(
                name, routes, pipeline, batcher, _model_info(name, routes, endpoint, pipeline)
            )
    except BaseException:
        for model in models.values():
            model.batcher.close()
        raise
    return models


class _ThreadsPerCall:
    """The engine, with the threads of each call set by the calling batcher thread."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.local = threading.local()

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def run(self, inputs):
        return self._engine.run(inputs, threads=getattr(self.local, "threads", None))


def _model_info(name: str, routes: list[str], endpoint, pipeline) -> dict:
    manifest = pipeline.engine.manifest
    linear = [layer for layer in manifest.get("layers", []) if "k" in layer and "n" in layer]
    weights = sum(layer["k"] * layer["n"] for layer in linear)
    zeros = sum(layer["k"] * layer["n"] * layer.get("sparsity", 0.0) for layer in linear)
    kinds = sorted({layer.get("quantization", "none") for layer in linear}) or ["none"]
    return {
        "name": name,
        "task": "question-answering",
        "routes": routes,
        "buckets": list(pipeline.buckets),
        "batch_size": endpoint.batch_size,
        "max_engine_batch_size": pipeline.engine.max_batch_size,
        "quantization": kinds[0] if len(kinds) == 1 else "mixed (" + ", ".join(kinds) + ")",
        "sparsity": round(zeros / weights, 4) if weights else 0.0,
        "isa": manifest["target"]["isa"],
        "source_model": manifest["source_model"]["file"],
        "source_sha256": manifest["source_model"]["sha256"],
        "sqc_version": manifest["sqc_version"],
        "kwargs": {
            "doc_stride": pipeline.doc_stride,
            "max_answer_length": pipeline.max_answer_length,
            "n_best_size": pipeline.n_best_size,
            "max_question_length": pipeline.max_question_length,
            "version_2_with_negative": pipeline.version_2_with_negative,
        },
    }


# -- hooks: auth, draining, errors, metrics ----------------------------------------------------


def _add_hooks(app: Flask, state: ServerState) -> None:
    config = state.config

    @app.before_request
    def before() -> Response | None:
        g.started = time.perf_counter()
        g.model = ""
        state.enter()
        g.entered = True
        state.metrics.in_flight.inc()
        if state.forked and request.endpoint != "health_live":
            return _error(
                503,
                f"this app was created in process {state.pid} and this is a fork of it (gunicorn "
                "--preload?): its batcher threads do not run here; create the app in each worker "
                "(no --preload)",
            )
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        if state.draining:
            return _error(503, "the server is shutting down")
        if config.api_key is not None and not _authorized(request, config.api_key):
            response = _error(
                401,
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="sqc"'
            return response
        return None

    @app.after_request
    def after(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        state.metrics.observe_request(g.get("model", ""), route, response.status_code, seconds)
        return response

    @app.teardown_request
    def teardown(_exc) -> None:
        if g.pop("entered", False):
            state.metrics.in_flight.dec()
            state.leave()

    @app.errorhandler(RequestError)
    def request_error(e: RequestError) -> Response:
        return _error(e.status, e.message)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        code = e.code or 500
        if code == 404:
            message = f"no route {request.method} {request.path}"
        elif code == 405:
            allowed = ", ".join(sorted(set(e.valid_methods or []) - {"HEAD", "OPTIONS"}))
            message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
        elif code == 413:
            message = f"request body is larger than {config.max_request_bytes} bytes"
        else:
            message = e.description or e.name
        response = _error(code, message)
        if code == 405 and e.valid_methods:
            response.headers["Allow"] = ", ".join(e.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(e: Exception) -> Response:
        log.error("internal error on %s %s", request.method, request.path, exc_info=e)
        return _error(500, "internal server error; the server logged the details")


def _authorized(req, api_key: str) -> bool:
    given = req.headers.get("X-API-Key")
    auth = req.headers.get("Authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), api_key.encode("utf-8"))


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


# -- routes ------------------------------------------------------------------------------------


def _add_routes(app: Flask, state: ServerState) -> None:
    models = state.models

    def infer_named(model_name: str) -> Response:
        model = models.get(model_name)
        if model is None:
            raise RequestError(
                404, f"no model named {model_name!r}; this server has {', '.join(models)}"
            )
        return _infer(state, model)

    app.add_url_rule("/v2/models/<model_name>/infer", "infer", infer_named, methods=["POST"])
    extra_routes: dict[str, ServedModel] = {}
    for model in models.values():
        for route in model.routes[1:]:
            extra_routes[route] = model
    for index, (route, model) in enumerate(extra_routes.items()):

        def infer_route(model=model) -> Response:
            return _infer(state, model)

        app.add_url_rule(route, f"infer_route_{index}", infer_route, methods=["POST"])

    if "/predict" not in extra_routes:

        @app.post("/predict")
        def predict_many() -> Response:
            names = ", ".join(f"/v2/models/{name}/infer" for name in models)
            raise RequestError(404, f"this server has {len(models)} models; POST to one of {names}")

    @app.get("/v2/models")
    def list_models() -> Response:
        return jsonify({"models": [model.info for model in models.values()]})

    @app.get("/v2/models/<model_name>")
    def model_metadata(model_name: str) -> Response:
        model = models.get(model_name)
        if model is None:
            raise RequestError(
                404, f"no model named {model_name!r}; this server has {', '.join(models)}"
            )
        return jsonify(model.info)

    @app.get("/v2/models/<model_name>/ready")
    def model_ready(model_name: str) -> Response:
        if model_name not in models:
            raise RequestError(
                404, f"no model named {model_name!r}; this server has {', '.join(models)}"
            )
        return jsonify({"status": "ready", "model": model_name})

    @app.get("/v2/health/live", endpoint="health_live")
    def live() -> Response:
        return jsonify({"status": "live"})

    @app.get("/v2/health/ready", endpoint="health_ready")
    def ready() -> Response:
        if state.draining:
            return _error(503, "the server is shutting down")
        return jsonify({"status": "ready", "models": list(models)})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(state.metrics.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document(state.config, models))

    @app.get("/docs")
    def docs() -> Response:
        html = docs_page(openapi_document(state.config, models))
        return Response(html, content_type="text/html; charset=utf-8")


def _infer(state: ServerState, model: ServedModel) -> Response:
    g.model = model.name
    with model.batcher.arriving() as arrival:
        pairs, single = parse_question_answering(_json_body(), state.config)
        future = model.batcher.submit(pairs)
        arrival.submitted()
    try:
        answers = future.result()
    except (ValueError, TypeError) as e:  # the pipeline's checks: blank text, long question
        raise RequestError(422, str(e)) from None
    results = [_answer_json(answer) for answer in answers]
    return jsonify(results[0] if single else results)


def _answer_json(answer) -> dict:
    score = float(answer.score)
    return {
        "score": score if math.isfinite(score) else None,
        "answer": answer.answer,
        "start": answer.start,
        "end": answer.end,
    }


def _json_body() -> Any:
    data = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    if not data.strip():
        raise RequestError(400, 'empty body: send JSON {"question": ..., "context": ...}')
    try:
        return json.loads(data.decode("utf-8-sig"))  # JSON is UTF-8 (RFC 8259)
    except UnicodeDecodeError:
        raise RequestError(400, "body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise RequestError(
            400, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise RequestError(400, "body is not usable JSON: nested too deeply") from None


def parse_question_answering(body: Any, config: ServerConfig) -> tuple[list[tuple[str, str]], bool]:
    """The (question, context) pairs of a request body and whether it asked for one answer.

    Accepts `{"question": str, "context": str}`, a list of such objects, or
    `{"question": [str], "context": [str]}`; other keys are ignored. Raises RequestError."""
    if isinstance(body, dict):
        missing = [key for key in ("question", "context") if key not in body]
        if missing:
            raise RequestError(422, f"missing field '{missing[0]}'")
        question, context = body["question"], body["context"]
        if isinstance(question, str) and isinstance(context, str):
            pairs, single = [(question, context)], True
        elif isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise RequestError(
                    422,
                    f"fields 'question' and 'context' are lists of different lengths "
                    f"({len(question)} and {len(context)})",
                )
            for field, values in (("question", question), ("context", context)):
                for i, value in enumerate(values):
                    if not isinstance(value, str):
                        raise RequestError(
                            422, f"field '{field}[{i}]' must be a string, got {_json_type(value)}"
                        )
            pairs, single = list(zip(question, context)), False
        else:
            for field, value in (("question", question), ("context", context)):
                if not isinstance(value, (str, list)):
                    raise RequestError(
                        422, f"field '{field}' must be a string, got {_json_type(value)}"
                    )
            raise RequestError(
                422, "fields 'question' and 'context' must both be strings or both lists"
            )
    elif isinstance(body, list):
        pairs, single = [], False
        for i, item in enumerate(body):
            if not isinstance(item, dict):
                raise RequestError(
                    422,
                    f"item {i} must be an object with 'question' and 'context', "
                    f"got {_json_type(item)}",
                )
            for field in ("question", "context"):
                if field not in item:
                    raise RequestError(422, f"item {i}: missing field '{field}'")
                if not isinstance(item[field], str):
                    raise RequestError(
                        422,
                        f"item {i}: field '{field}' must be a string, got "
                        f"{_json_type(item[field])}",
                    )
            pairs.append((item["question"], item["context"]))
    else:
        raise RequestError(
            400,
            'body must be a JSON object {"question": ..., "context": ...} or a list of them, '
            f"got {_json_type(body)}",
        )
    _check_sizes(pairs, single, config)
    return pairs, single


def _check_sizes(pairs: list[tuple[str, str]], single: bool, config: ServerConfig) -> None:
    if not pairs:
        raise RequestError(422, "no questions: the list is empty")
    if len(pairs) > config.max_items:
        raise RequestError(
            413,
            f"{len(pairs)} questions in one request; this server takes at most {config.max_items}",
        )
    for i, (question, context) in enumerate(pairs):
        where = "" if single else f"item {i}: "
        if not question.strip():
            raise RequestError(422, f"{where}field 'question' is empty")
        if not context.strip():
            raise RequestError(422, f"{where}field 'context' is empty")
        if len(context) > config.max_context_chars:
            raise RequestError(
                413,
                f"{where}field 'context' has {len(context)} characters; this server takes "
                f"at most {config.max_context_chars}",
            )
        if len(question) > config.max_context_chars:
            raise RequestError(
                413,
                f"{where}field 'question' has {len(question)} characters; this server "
                f"takes at most {config.max_context_chars}",
            )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
