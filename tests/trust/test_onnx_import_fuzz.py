"""Fuzz of the ONNX importer and the compile pipeline up to the C build: truncated files, flipped
bytes and protobuf field edits of the committed fixture models (and an int8 one made here). No
case may crash the process or hang; each should end in sqc's CompileError or a build.

What each case tried and how it ended is printed (run with -s to see it). SQC_FUZZ_CASES scales
the number of cases (default 170: 30 truncations, 40 byte flips, 100 edits; about 15 s).

The first test fails on a hang or a dead process (a segfault in a parser, an abort); the
second, strict, also on any exception other than CompileError. Known findings of that kind,
from code under compiler/ which this test does not own, are listed in KNOWN_FINDINGS; the
second test is marked xfail until they are fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.trust.onnx_fuzz import CLEAR, report, run_fuzz

SEED = 2026
SCALE = float(os.environ.get("SQC_FUZZ_CASES", 170)) / 170
CASES = {"truncate": round(30 * SCALE), "flip": round(40 * SCALE), "edit": round(100 * SCALE)}

# Findings of 1,920 cases of this fuzz (seeds 7, 11 and 2026): exceptions other than
# CompileError raised by code under compiler/, by the innermost frame of sqc's own code. `sqc
# compile` shows the ValueErrors and TypeErrors as a one-line (if cryptic) error; the KeyError,
# IndexError and MemoryError end in a traceback. Each should become a CompileError naming the
# node; when all are, the strict xfail below passes and asks for its marker to be removed.
KNOWN_FINDINGS = {
    ("ValueError", "compiler/frontend/load_onnx.py:_attr_value"):
        "a tensor attribute whose data does not fill its dims (numpy's reshape error)",
    ("TypeError", "compiler/frontend/load_onnx.py:_attr_value"):
        "an attribute whose type field was changed",
    ("TypeError", "compiler/frontend/load_onnx.py:check_supported"):
        "an attribute value of an unexpected type (flipped bytes)",
    ("KeyError", "compiler/ops/onnx_ops.py:_cast_infer"): "Cast to an unknown data type",
    ("TypeError", "compiler/ops/onnx_ops.py:onnx_dtype"): "a tensor of an unknown data type",
    ("TypeError", "compiler/ops/onnx_ops.py:_matmul_infer"): "MatMul of a retyped initializer",
    ("KeyError", "compiler/passes/lower_contrib_ops.py:_lower_attention"):
        "com.microsoft Attention without num_heads",
    ("IndexError", "compiler/passes/specialize_shapes.py:_specialize_node"):
        "a node with fewer inputs than its op needs",
    ("MemoryError", "compiler/passes/specialize_shapes.py:<listcomp>"):
        "a graph input dimension of 2**40 (the fuzz child runs under a 3 GiB address limit)",
    ("TypeError", "compiler/passes/fuse_attention.py:_rule_attention"): "an edited attention node",
    ("TypeError", "compiler/passes/rewrite.py:scalar"): "a non-scalar where a scalar is matched",
    ("ValueError", "compiler/passes/rewrite.py:scalar"): "a non-scalar where a scalar is matched",
    ("ValueError", "compiler/codegen/emit_c.py:offsets"): "a node missing an attribute",
    ("ValueError", "compiler/passes/fold_quantization.py:_rule_qdq"):
        "a quantization node with an extra input",
}  # fmt: skip


def _signature(outcome: str) -> tuple[str, str]:
    kind, _, where = outcome.removeprefix("error: ").partition(" in ")
    return kind, where


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    models = [
        FIXTURES / "bert_qa_opset17.onnx",
        FIXTURES / "distilbert_qa_opset14.onnx",
        FIXTURES / "bert_qa_ort_optimized.onnx",
        _int8_model(work),
    ]
    counts, findings = run_fuzz(models, CASES, SEED, work)
    print("\n" + report(counts, findings, limit=len(findings)))
    return counts, findings


def _int8_model(work: Path) -> Path:
    quantization = pytest.importorskip("onnxruntime.quantization")
    out = work / "bert_qa_int8_dynamic.onnx"
    quantization.quantize_dynamic(str(FIXTURES / "bert_qa_opset17.onnx"), str(out))
    return out


def test_no_case_crashes_or_hangs(fuzz_results):
    counts, findings = fuzz_results
    assert sum(counts.values()) == sum(CASES.values())
    hard = [f for f in findings if f[3] in ("hang", "died")]
    assert not hard, f"{len(hard)} cases hung or killed the process: {hard[:3]}"
    new = sorted({_signature(f[3]) for f in findings} - set(KNOWN_FINDINGS))
    if new:
        print(f"findings of kinds not in KNOWN_FINDINGS: {new}")
    # The importer saw both kinds of end, so the cases were neither all trivial nor all broken.
    outcomes = {o for _, o in counts}
    assert "CompileError" in outcomes and "built" in outcomes


@pytest.mark.xfail(
    strict=True,
    reason="known findings in compiler/ (KNOWN_FINDINGS): exceptions other than CompileError",
)
def test_every_case_ends_in_a_compile_error_or_a_build(fuzz_results):
    counts, _ = fuzz_results
    assert {o for _, o in counts} <= set(CLEAR), report(counts, [])
