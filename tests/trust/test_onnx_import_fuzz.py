"""Fuzz of the ONNX importer and the compile pipeline up to the C build: truncated files, flipped
bytes and protobuf field edits of the committed fixture models (and an int8 one made here). No
case may crash the process or hang; each should end in sqc's CompileError or a build.

What each case tried and how it ended is printed (run with -s to see it). SQC_FUZZ_CASES scales
the number of cases (default 500: 100 truncations, 100 byte flips, 300 edits; about 12 s).

The first test fails on a hang or a dead process (a segfault in a parser, an abort); the
second on any exception other than CompileError. Before main's "Malformed models end in a
CompileError that names the node" (f381e70), 6,920 cases of this fuzz found no hang and no dead
process but 157 other exceptions of 24 kinds (KeyError, IndexError, TypeError, ValueError,
MemoryError from the importer, the passes and the emitter: unchecked attribute types, node input
counts, data types, a 2**40 dimension); with it, none.
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
    # The importer saw both kinds of end, so the cases were neither all trivial nor all broken.
    outcomes = {o for _, o in counts}
    assert "CompileError" in outcomes and "built" in outcomes


def test_every_case_ends_in_a_compile_error_or_a_build(fuzz_results):
    counts, findings = fuzz_results
    assert {o for _, o in counts} <= set(CLEAR), report(counts, findings, limit=5)
