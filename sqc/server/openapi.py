"""The OpenAPI 3 document of a running server, and the /docs page made from it.

Both are built from the configured endpoints, so they always name the routes and models the
server really has. The /docs page is plain HTML with no scripts or outside assets: the server
may run where nothing outside can be reached.
"""

from __future__ import annotations

import html
import json
from typing import Any

import sqc

__all__ = ["docs_page", "openapi_document"]

EXAMPLE = {"question": "Who is Mark?", "context": "Mark is batman."}
EXAMPLE_ANSWER = {"score": 5.68, "answer": "batman", "start": 8, "end": 14}


def _schemas(config) -> dict:
    text = {"type": "string", "minLength": 1, "maxLength": config.max_context_chars}
    pair = {
        "type": "object",
        "required": ["question", "context"],
        "properties": {
            "question": {**text, "description": "The question (at most 64 tokens by default)."},
            "context": {**text, "description": "The text that holds the answer."},
        },
        "example": EXAMPLE,
    }
    lists = {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": config.max_context_chars},
        "minItems": 1,
        "maxItems": config.max_items,
    }
    return {
        "QuestionAnsweringInput": pair,
        "QuestionAnsweringBatch": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/QuestionAnsweringInput"},
            "minItems": 1,
            "maxItems": config.max_items,
        },
        "QuestionAnsweringLists": {
            "type": "object",
            "required": ["question", "context"],
            "properties": {"question": lists, "context": lists},
            "description": "Equal-length lists of questions and contexts.",
        },
        "QuestionAnsweringOutput": {
            "type": "object",
            "required": ["score", "answer", "start", "end"],
            "properties": {
                "score": {
                    "type": "number",
                    "nullable": True,
                    "description": "Start logit + end logit of the answer span (not a "
                    "probability; compare only between answers of one model).",
                },
                "answer": {"type": "string", "description": "context[start:end]"},
                "start": {"type": "integer", "minimum": 0},
                "end": {"type": "integer", "minimum": 0, "description": "Exclusive."},
            },
            "example": EXAMPLE_ANSWER,
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What was wrong."}},
        },
        "ModelInfo": {
            "type": "object",
            "required": ["name", "task", "routes", "buckets", "quantization", "sparsity"],
            "properties": {
                "name": {"type": "string"},
                "task": {"type": "string"},
                "routes": {"type": "array", "items": {"type": "string"}},
                "buckets": {"type": "array", "items": {"type": "integer"}},
                "batch_size": {"type": "integer"},
                "max_engine_batch_size": {"type": "integer"},
                "quantization": {"type": "string"},
                "sparsity": {"type": "number", "description": "Zero fraction of the weights."},
                "isa": {"type": "string"},
                "source_model": {"type": "string"},
                "source_sha256": {"type": "string"},
                "sqc_version": {"type": "string"},
                "kwargs": {"type": "object"},
            },
        },
    }


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema_ref: str, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": schema_ref}}},
    }


def _common_errors(secured: bool) -> dict:
    errors = {"503": _error("The server is shutting down.")}
    if secured:
        errors["401"] = _error("Missing or wrong API key.")
    return errors


def _infer_operation(summary: str, operation_id: str, secured: bool, parameters=None) -> dict:
    ref = "#/components/schemas/"
    operation = {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["inference"],
        "description": "Answer a question about a context (DeepSparse Server's question-"
        "answering request and response), or a list of them in one call.",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": ref + "QuestionAnsweringInput"},
                            {"$ref": ref + "QuestionAnsweringBatch"},
                            {"$ref": ref + "QuestionAnsweringLists"},
                        ]
                    },
                    "example": EXAMPLE,
                }
            },
        },
        "responses": {
            "200": {
                "description": "The answer (or a list of answers, in order).",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": ref + "QuestionAnsweringOutput"},
                                {
                                    "type": "array",
                                    "items": {"$ref": ref + "QuestionAnsweringOutput"},
                                },
                            ]
                        },
                        "example": EXAMPLE_ANSWER,
                    }
                },
            },
            "400": _error("The body is not JSON, or not an object or list."),
            "404": _error("No such model."),
            "413": _error("Body, context or list larger than this server takes."),
            "422": _error("Missing, wrong-typed or unusable fields (the message names them)."),
            **_common_errors(secured),
        },
    }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _get(summary: str, operation_id: str, responses: dict, tag: str, secured: bool) -> dict:
    operation = {
        "summary": summary,
        "operationId": operation_id,
        "tags": [tag],
        "responses": {**responses, **(_common_errors(secured) if tag != "health" else {})},
    }
    if not secured or tag == "health":
        operation["security"] = []
    return operation


def openapi_document(config, models: dict) -> dict:
    """A valid OpenAPI 3.0 document of this server's routes."""
    secured = config.api_key is not None
    names = list(models)
    model_parameter = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": names},
        "description": "A model this server serves (see GET /v2/models).",
        "example": names[0],
    }
    paths: dict[str, Any] = {
        "/v2/models/{model_name}/infer": {
            "post": _infer_operation(
                "Answer questions with the named model", "infer", secured, [model_parameter]
            )
        }
    }
    for model in models.values():
        for index, route in enumerate(model.routes[1:]):
            paths[route] = {
                "post": _infer_operation(
                    f"Answer questions with {model.name}",
                    f"infer_{model.name}_{index}".replace("-", "_").replace(".", "_"),
                    secured,
                )
            }
    ref = "#/components/schemas/"
    paths["/v2/models"] = {
        "get": _get(
            "The models served, with their buckets, quantization and sparsity",
            "list_models",
            {
                "200": {
                    "description": "The models.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["models"],
                                "properties": {
                                    "models": {
                                        "type": "array",
                                        "items": {"$ref": ref + "ModelInfo"},
                                    }
                                },
                            }
                        }
                    },
                }
            },
            "models",
            secured,
        )
    }
    paths["/v2/models/{model_name}"] = {
        "get": {
            **_get(
                "One model's description",
                "model_metadata",
                {
                    "200": _json(ref + "ModelInfo", "The model."),
                    "404": _error("No such model."),
                },
                "models",
                secured,
            ),
            "parameters": [model_parameter],
        }
    }
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    paths["/v2/models/{model_name}/ready"] = {
        "get": {
            **_get(
                "Whether the named model is ready",
                "model_ready",
                {
                    "200": {
                        "description": "Ready.",
                        "content": {"application/json": {"schema": status}},
                    },
                    "404": _error("No such model."),
                },
                "models",
                secured,
            ),
            "parameters": [model_parameter],
        }
    }
    paths["/v2/health/live"] = {
        "get": _get(
            "Liveness: the process answers HTTP",
            "health_live",
            {
                "200": {
                    "description": "Alive.",
                    "content": {"application/json": {"schema": status}},
                }
            },
            "health",
            secured,
        )
    }
    paths["/v2/health/ready"] = {
        "get": _get(
            "Readiness: every model is loaded and the server is not shutting down",
            "health_ready",
            {
                "200": {
                    "description": "Ready.",
                    "content": {"application/json": {"schema": status}},
                },
                "503": _error("Shutting down."),
            },
            "health",
            secured,
        )
    }
    text = {"type": "string"}
    paths["/metrics"] = {
        "get": _get(
            "Prometheus metrics: requests, errors, latency and batch sizes per model",
            "metrics",
            {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": text}},
                }
            },
            "service",
            secured,
        )
    }
    paths["/openapi.json"] = {
        "get": _get(
            "This document",
            "openapi",
            {
                "200": {
                    "description": "OpenAPI 3.0.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
            "service",
            secured,
        )
    }
    paths["/docs"] = {
        "get": _get(
            "A readable page describing the API",
            "docs",
            {"200": {"description": "HTML.", "content": {"text/html": {"schema": text}}}},
            "service",
            secured,
        )
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "sqc question-answering server",
            "version": sqc.__version__,
            "description": "Extractive question answering over compiled models, compatible "
            "with DeepSparse Server's question-answering routes.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(config)},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        document["security"] = [{"bearer": []}, {"apiKey": []}]
    return document


def docs_page(document: dict) -> str:
    """A self-contained HTML page: every route with its purpose, body and answers."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem;line-height:1.5}code,pre{background:#f4f4f4;padding:.1rem .3rem}"
        "pre{padding:.6rem;overflow-x:auto}h3{margin-top:2rem}.m{font-weight:bold}</style>",
        "</head><body>",
        f"<h1>{e(document['info']['title'])} {e(document['info']['version'])}</h1>",
        f"<p>{e(document['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3).</p>",
    ]
    if document.get("security"):
        parts.append(
            "<p>Every route but health needs the API key: "
            "<code>Authorization: Bearer KEY</code> or <code>X-API-Key: KEY</code>.</p>"
        )
    example = json.dumps(EXAMPLE)
    first_infer = next(path for path, item in document["paths"].items() if "post" in item)
    names = document["paths"]["/v2/models/{model_name}/infer"]["post"]["parameters"][0]
    infer_example = first_infer.replace("{model_name}", names["schema"]["enum"][0])
    parts.append(
        "<h2>Example</h2><pre>"
        + e(
            f"curl -X POST http://HOST:PORT{infer_example} "
            f"-H 'Content-Type: application/json' -d '{example}'\n"
            f"{json.dumps(EXAMPLE_ANSWER)}"
        )
        + "</pre>"
    )
    parts.append("<h2>Routes</h2>")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            parts.append(
                f"<h3><span class='m'>{e(method.upper())}</span> <code>{e(path)}</code></h3>"
            )
            parts.append(f"<p>{e(operation['summary'])}</p>")
            if operation.get("description"):
                parts.append(f"<p>{e(operation['description'])}</p>")
            for parameter in operation.get("parameters", []):
                values = ", ".join(parameter["schema"].get("enum", []))
                parts.append(
                    f"<p><code>{e(parameter['name'])}</code>: {e(parameter['description'])} "
                    f"Here: {e(values)}.</p>"
                )
            if "requestBody" in operation:
                parts.append(
                    '<p>Body: <code>{"question": str, "context": str}</code>, a list of '
                    'them, or <code>{"question": [str], "context": [str]}</code>.</p>'
                )
            parts.append("<ul>")
            for code, response in operation["responses"].items():
                parts.append(f"<li><code>{e(code)}</code> {e(response['description'])}</li>")
            parts.append("</ul>")
    parts.append(
        '<h2>Errors</h2><p>Every error is JSON <code>{"error": "..."}</code> naming the '
        "problem.</p></body></html>"
    )
    return "\n".join(parts)
