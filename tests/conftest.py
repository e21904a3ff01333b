"""Shared fixtures: compiling models into a per-session temporary folder, and references."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "models"
SHARED = ROOT.parent / "shared"
REAL_MODEL = SHARED / "models" / "minilm-l6-qa" / "model.onnx"


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sqc-artifacts")


@pytest.fixture(scope="session")
def compile_onnx(build_dir):
    """compile_onnx(model_or_path, buckets, **options) -> Engine (cached per model and options)."""
    from sqc.compiler.driver import compile_model
    from sqc.runtime.engine import Engine

    cache: dict = {}

    def build(model, buckets=(8,), threads=2, **options):
        if isinstance(model, onnx.ModelProto):
            data = model.SerializeToString()
            digest = hashlib.sha1(data).hexdigest()[:12]
            path = build_dir / f"model-{digest}.onnx"
            path.write_bytes(data)
        else:
            path = Path(model)
            digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        key = (str(path), tuple(buckets), tuple(sorted(options.items())))
        if key not in cache:
            opts = hashlib.sha1(repr(key[2]).encode()).hexdigest()[:8]
            out = build_dir / f"{path.stem}-{digest}-{'_'.join(map(str, buckets))}-{opts}"
            cache[key] = compile_model(path, list(buckets), out, **options)
        return Engine(cache[key], threads=threads)

    return build


def ort_run(model, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
