"""Fuzz of the ONNX importer and the compile pipeline up to the C build: truncated files, flipped
bytes and protobuf field edits of the committed fixture models (and an int8 one made here). No
case may crash the process or hang; each should end in sqc's CompileError or a build.

What each case tried and how it ended is printed (run with -s to see it). SQC_FUZZ_CASES scales
the number of cases (default 500: 100 truncations, 100 byte flips, 300 edits; about 12 s).

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
SCALE = float(os.environ.get("SQC_FUZZ_CASES", 500)) / 500
CASES = {"truncate": round(100 * SCALE), "flip": round(100 * SCALE), "edit": round(300 * SCALE)}

# Findings of 6,920 cases of this fuzz (seeds 7 and 11, and 2026 with SQC_FUZZ_CASES=5000: no
# hang, no dead process, 157 exceptions of these kinds): exceptions other than CompileError
# raised by code under compiler/, by the innermost frame of sqc's own code. `sqc compile` shows
# the ValueErrors and TypeErrors as a one-line (if cryptic) error; the KeyErrors, IndexErrors and
# the MemoryError end in a traceback. Most have two causes the importer could check once, from
# the op's schema (onnx.defs.get_schema): attribute types and values (a changed type field, a
# tensor whose data does not fill its dims, an unknown data type) and node input counts. Each
# should become a CompileError naming the node; when all are, the strict xfail below passes and
# asks for its marker to be removed.
ATTRIBUTE = "an attribute of another type or a malformed tensor attribute"
INPUTS = "a node with more or fewer inputs than its op takes"
KNOWN_FINDINGS = {
    ("ValueError", "compiler/frontend/load_onnx.py:_attr_value"): ATTRIBUTE,
    ("TypeError", "compiler/frontend/load_onnx.py:_attr_value"): ATTRIBUTE,
    ("KeyError", "compiler/frontend/load_onnx.py:_attr_value"): ATTRIBUTE,
    ("TypeError", "compiler/frontend/load_onnx.py:check_supported"): ATTRIBUTE,
    ("TypeError", "compiler/passes/fuse_attention.py:_rule_attention"): ATTRIBUTE,
    ("TypeError", "compiler/passes/fuse_layernorm.py:_rule"): ATTRIBUTE,
    ("TypeError", "compiler/passes/fuse_skip_layernorm.py:_rule"): ATTRIBUTE,
    ("ValueError", "compiler/passes/fuse_skip_layernorm.py:_rule"): ATTRIBUTE,
    ("TypeError", "compiler/passes/lower_contrib_ops.py:_lower_skip_layernorm"): ATTRIBUTE,
    ("TypeError", "compiler/passes/lower_contrib_ops.py:_lower_embed_layernorm"): ATTRIBUTE,
    ("TypeError", "compiler/passes/rewrite.py:scalar"): ATTRIBUTE,
    ("ValueError", "compiler/passes/rewrite.py:scalar"): ATTRIBUTE,
    ("TypeError", "compiler/ops/onnx_ops.py:onnx_dtype"): "a tensor of an unknown data type",
    ("KeyError", "compiler/ops/onnx_ops.py:_cast_infer"): "Cast to an unknown data type",
    ("IndexError", "compiler/passes/specialize_shapes.py:_specialize_node"): INPUTS,
    ("IndexError", "compiler/passes/lower_contrib_ops.py:_lower_attention"): INPUTS,
    ("ValueError", "compiler/passes/lower_contrib_ops.py:_lower_embed_layernorm"): INPUTS,
    ("ValueError", "compiler/passes/fold_quantization.py:_rule_qdq"): INPUTS,
    ("ValueError", "compiler/codegen/emit_c.py:_op_Gather"): INPUTS,
    ("KeyError", "compiler/passes/lower_contrib_ops.py:_lower_attention"):
        "com.microsoft Attention without num_heads",
    ("ValueError", "compiler/codegen/emit_c.py:offsets"): "a node missing an attribute",
    ("KeyError", "compiler/codegen/emit_c.py:__init__"): "a graph input of another element type",
    ("TypeError", "compiler/ops/onnx_ops.py:_matmul_infer"): "MatMul of a retyped initializer",
    ("MemoryError", "compiler/passes/specialize_shapes.py:<listcomp>"):
        "a graph input dimension of 2**40 (the fuzz child runs under a 3 GiB address limit)",
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
