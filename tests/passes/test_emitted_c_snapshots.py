"""A small corpus of tiny graphs has its emitted C snapshotted, so a refactor of the passes or
the code generator shows an empty diff, and a real change shows exactly what it changed.

Regenerate after an intended change: SQC_UPDATE_SNAPSHOTS=1 pytest tests/passes -k snapshot
(then read the diff before committing it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from sqc.compiler.codegen.emit_c import WeightsTable, emit_model_source
from sqc.compiler.frontend.load_onnx import import_model
from sqc.compiler.pipeline import run_passes
from tests.passes.test_passes import GELU_CONSTS, attention_nodes, erf_gelu, model, w

SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


def corpus():
    from onnx import TensorProto as T
    from onnx import helper

    from tests.passes.test_passes import H, c, decomposed_layernorm, n

    nodes, inits = attention_nodes()
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("mask", T.INT64, ["batch", "seq"]),
    ]
    yield "attention", model(nodes, inits, inputs, opset=13)
    mlp = (
        [n("MatMul", ["x", "w1"], ["h"]), n("Add", ["h", "b1"], ["hb"])]
        + erf_gelu("hb", "g")
        + [
            n("MatMul", ["g", "w2"], ["o"]),
            n("Add", ["o", "b2"], ["ob"]),
            n("Add", ["ob", "x"], ["r"]),
        ]
        + decomposed_layernorm("r", "y")
    )
    yield (
        "mlp_residual_layernorm",
        model(
            mlp,
            [
                c("w1", w(H, 16)),
                c("b1", w(16)),
                c("w2", w(16, H)),
                c("b2", w(H)),
                c("two", np.float32(2)),
                c("eps", np.float32(1e-12)),
                c("gamma", w(H)),
                c("beta", w(H)),
            ]
            + GELU_CONSTS,
            opset=14,
        ),
    )


def emitted(m) -> str:
    graph = import_model(m)
    planned = {s: run_passes(graph, s) for s in (6, 12)}
    source = emit_model_source(
        planned, WeightsTable(), "avx2", "snapshot.onnx", "-", with_kernels=False
    )
    return re.sub(r"sqc \S+ from", "sqc VERSION from", source)


@pytest.mark.parametrize("name,m", list(corpus()), ids=[name for name, _ in corpus()])
def test_emitted_c_matches_snapshot(name, m):
    path = SNAPSHOTS / f"{name}.c"
    source = emitted(m)
    if os.environ.get("SQC_UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(source)
        if not os.environ.get("SQC_UPDATE_SNAPSHOTS"):
            pytest.fail(f"wrote a new snapshot {path}; check it and commit it")
    assert source == path.read_text(), f"emitted C of {name} changed; see {path}"
