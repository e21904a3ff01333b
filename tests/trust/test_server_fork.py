"""An app forked after it was made (gunicorn --preload) has no batcher threads: it says so with
503 on readiness and on every route but liveness, instead of reporting ready and hanging."""

from __future__ import annotations

import pytest


@pytest.fixture
def app(tiny_artifact):
    from sqc.server import create_app

    app = create_app({"endpoints": [{"model": str(tiny_artifact)}]})
    yield app
    app.extensions["sqc"].close()


def test_a_forked_app_is_not_ready_and_says_why(app):
    client = app.test_client()
    question = {"question": "Who is Mark?", "context": "Mark is batman."}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/predict", json=question).status_code == 200
    app.extensions["sqc"].pid = -1  # as seen from a forked child
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and "--preload" in ready.get_json()["error"]
    predict = client.post("/predict", json=question)
    assert predict.status_code == 503 and "batcher threads" in predict.get_json()["error"]
    assert client.get("/v2/health/live").status_code == 200
