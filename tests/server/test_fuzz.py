"""The OpenAPI document validates, and a property-based fuzz of the running server, generated
from that document by schemathesis (valid and invalid bodies, paths and headers), finds no 500
and no answer that breaks the document."""

from __future__ import annotations

import os

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from tests.server.conftest import running

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def fuzz_server(tiny_artifact):
    config = {"endpoints": [{"model": str(tiny_artifact)}], "max_context_chars": 2000}
    with running(config) as server:
        yield server


def test_openapi_document_validates(fuzz_server):
    from openapi_spec_validator import validate

    url, _, _ = fuzz_server
    validate(requests.get(f"{url}/openapi.json").json())


def _operations(url: str):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.update(base_url=url)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_finds_no_server_errors(fuzz_server, mode):
    from schemathesis import GenerationMode

    url, _, _ = fuzz_server
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    operations = _operations(url)
    assert len(operations) >= 8
    fuzzed = 0
    for operation in operations:
        has_inputs = bool(list(operation.iter_parameters())) or operation.method == "post"
        if mode == "negative" and not has_inputs:
            continue  # nothing to make invalid
        strategy = operation.as_strategy(generation_mode=generation)
        fuzzed += 1

        @settings(
            max_examples=int(os.environ.get("SQC_FUZZ_EXAMPLES", 25)),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                assert "error" in response.json()
            elif mode == "positive":
                case.validate_response(response)

        check()
    assert fuzzed >= (8 if mode == "positive" else 3)
    # the fuzz reached the model, not only the error paths
    metrics = requests.get(f"{url}/metrics").text
    assert 'sqc_requests_total{code="200",model="question_answering"' in metrics
