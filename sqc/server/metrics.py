"""Prometheus metrics of one server (its own registry, so several apps in a process never mix).

Labels are only ever configured model names, route names and status codes, never text from a
request, so a client cannot grow the number of series.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sqc_requests", "HTTP requests answered", ["model", "route", "code"], registry=r
        )
        self.errors = Counter(
            "sqc_request_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            ["model", "route", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "sqc_request_latency_seconds",
            "Time from request to response, per model",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("sqc_requests_in_flight", "Requests being handled", registry=r)
        self.questions = Counter("sqc_questions", "Questions answered", ["model"], registry=r)
        self.batch_questions = Histogram(
            "sqc_batch_size",
            "Questions per pipeline call (micro-batches of concurrent requests)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "sqc_batch_requests",
            "HTTP requests gathered into one pipeline call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "sqc_batch_seconds",
            "Time of one pipeline call",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe_request(self, model: str, route: str, code: int, seconds: float) -> None:
        self.requests.labels(model, route, str(code)).inc()
        if code >= 400:
            self.errors.labels(model, route, str(code)).inc()
        if model:
            self.latency.labels(model, route).observe(seconds)

    def observe_batch(self, model: str, questions: int, requests: int, seconds: float) -> None:
        self.questions.labels(model).inc(questions)
        self.batch_questions.labels(model).observe(questions)
        self.batch_requests.labels(model).observe(requests)
        self.batch_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
