"""Fixtures of the question-answering tests: the real MiniLM model and data from ../shared (skipped
when absent), the committed tiny tokenizer and models, and two stand-in engines.

`PeakEngine` puts a high start logit on one token id and a high end logit on another, so a test
chooses the answer span exactly and checks what the pipeline makes of it (windows, offsets,
batching) without a model. `RecordingEngine` wraps an engine and keeps the shape of every call.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SQC_SHARED", REPO.parent / "shared"))
MINILM = SHARED / "models" / "minilm-l6-qa"
SQUAD_DEV = SHARED / "data" / "squad" / "dev-v1.1.reconstructed.json"
SQUAD_REFERENCE_PREDICTIONS = (
    SHARED / "data" / "squad" / "reference-predictions" / "bert-large-ensemble-google-v1.1-dev.json"
)
XQUAD_EN = SHARED / "data" / "xquad" / "xquad.en.json"
FIXTURE_MODELS = REPO / "tests" / "fixtures" / "models"

QA_OUTPUTS = ["start_logits", "end_logits"]
BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


class PeakEngine:
    """A stand-in QA engine: start logit `peak` wherever input_ids == start_id, end logit `peak`
    wherever input_ids == end_id, `null_logit` at position 0 ([CLS]), 0 elsewhere."""

    def __init__(
        self,
        start_id: int,
        end_id: int,
        *,
        buckets: list[int],
        max_batch_size: int = 8,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        peak: float = 10.0,
        null_logit: float = -10.0,
    ) -> None:
        self.start_id, self.end_id = start_id, end_id
        self.buckets = sorted(buckets)
        self.max_batch_size = max_batch_size
        self.input_names = list(BERT_INPUTS if input_names is None else input_names)
        self.output_names = list(QA_OUTPUTS if output_names is None else output_names)
        self.peak, self.null_logit = peak, null_logit

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        ids = inputs["input_ids"]
        assert ids.dtype == np.int64 and ids.ndim == 2
        assert ids.shape[1] in self.buckets and ids.shape[0] <= self.max_batch_size
        start = np.where(ids == self.start_id, self.peak, 0.0).astype(np.float32)
        end = np.where(ids == self.end_id, self.peak, 0.0).astype(np.float32)
        start[:, 0] = end[:, 0] = self.null_logit
        by_name = {"start_logits": start, "end_logits": end}
        return [by_name[name] for name in self.output_names]


class RecordingEngine:
    """Wraps an engine and records (batch, sequence length) of every `run`."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.buckets = engine.buckets
        self.max_batch_size = engine.max_batch_size
        self.input_names = engine.input_names
        self.output_names = engine.output_names
        self.calls: list[tuple[int, int]] = []

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(inputs["input_ids"].shape)
        return self.engine.run(inputs)


@pytest.fixture(scope="session")
def minilm_tokenizer() -> str:
    return str(_require(MINILM / "tokenizer.json"))


@pytest.fixture(scope="session")
def minilm_engine():
    """The real MiniLM QA model in onnxruntime, buckets 128 and 384 (pipelines pick a subset)."""
    from sqc.runtime.reference import OnnxRuntimeEngine

    return OnnxRuntimeEngine(_require(MINILM / "model.onnx"), [128, 384], max_batch_size=32)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> str:
    """The committed WordPiece tokenizer of the tiny fixture models ([PAD] = 1)."""
    return str(_require(FIXTURE_MODELS / "tiny-bert-tokenizer.json"))


@pytest.fixture(scope="session")
def fixture_models() -> Path:
    return _require(FIXTURE_MODELS)


@pytest.fixture(scope="session")
def squad_dev() -> Path:
    return _require(SQUAD_DEV)


@pytest.fixture(scope="session")
def squad_reference_predictions() -> Path:
    return _require(SQUAD_REFERENCE_PREDICTIONS)


@pytest.fixture(scope="session")
def xquad_en() -> Path:
    return _require(XQUAD_EN)


@pytest.fixture
def peak_engine():
    """Factory: `peak_engine(start_id, end_id, buckets=[...], ...)` makes a `PeakEngine`."""
    return PeakEngine


@pytest.fixture
def recording_engine():
    """Factory: `recording_engine(engine)` wraps an engine in a `RecordingEngine`."""
    return RecordingEngine
