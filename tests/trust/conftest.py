"""Fixtures of the trust tests: the tiny committed BERT QA model compiled once per session (with
its tokenizer, so the QA pipeline runs on it), and fresh copies of it to damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import sqc
from sqc.runtime.integrity import forget_verified
from tests.conftest import FIXTURES

TINY_MODEL = FIXTURES / "bert_qa_opset17.onnx"
TINY_TOKENIZER = FIXTURES / "tiny-bert-tokenizer.json"


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """Buckets 16 and 32, batch up to 4: small enough for thousands of calls in seconds."""
    out = tmp_path_factory.mktemp("trust") / "tiny"
    return sqc.compile_model(TINY_MODEL, [16, 32], out, max_batch_size=4, tokenizer=TINY_TOKENIZER)


@pytest.fixture
def artifact_copy(tiny_artifact, tmp_path):
    """copy(src=tiny_artifact) -> a fresh copy of an artifact directory, safe to damage."""
    forget_verified()

    def copy(src: Path = tiny_artifact) -> Path:
        dst = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(src, dst)
        return dst

    yield copy
    forget_verified()
