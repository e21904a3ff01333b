"""Whole pruned models, fp32 and int8, through the sparse kernels, against onnxruntime.

The tiny BERT fixture is pruned here by `sqc prune`'s magnitude pruning (unstructured, 1o4i,
4o1i) and, for int8, then quantized by onnxruntime.quantization as users do (dynamic per
channel; static QDQ). Built with ``--sparse always`` so every linear layer runs a sparse kernel
(the fixture's 32-wide layers are too small for the cost model to choose sparse on its own).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sqc.compiler.prune import prune_model
from sqc.runtime.engine import generate_random_inputs
from tests.conftest import FIXTURES, ort_run
from tests.tolerances import TOLERANCE, relative_error

SOURCE = FIXTURES / "bert_qa_opset17.onnx"
BUCKETS = (16, 24)
PRUNINGS = {
    "unstructured-90": (0.9, "unstructured"),
    "1o4i-80": (0.8, "1o4i"),
    "4o1i-80": (0.8, "4o1i"),
    "all-zero": (1.0, "unstructured"),
}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned")
    paths = {}
    for name, (sparsity, block) in PRUNINGS.items():
        paths[name] = out / f"{name}.onnx"
        prune_model(SOURCE, paths[name], sparsity, block, min_side=16)
    return paths


def _sparse_layers(engine) -> list[dict]:
    layers = json.loads((engine.path / "manifest.json").read_text())["layers"]
    return [x for x in layers if "format" in x]


@pytest.mark.parametrize("name", list(PRUNINGS))
def test_pruned_fp32_model_matches_onnxruntime(compile_onnx, pruned, name):
    engine = compile_onnx(pruned[name], buckets=BUCKETS, max_batch_size=4, sparse="always")
    layers = _sparse_layers(engine)
    assert {x["format"] for x in layers} == {"sparse"}
    block = PRUNINGS[name][1]
    if name != "all-zero":
        assert {x["pattern"] for x in layers if x["n"] > 2} == {block}
    for seq in BUCKETS:
        for batch in (1, 4):
            inputs = generate_random_inputs(engine, batch, seq, seed=seq + batch)
            got = engine.run(inputs)
            want = ort_run(pruned[name], dict(zip(engine.input_names, inputs)))
            for g, w in zip(got, want):
                assert relative_error(g, w) <= TOLERANCE["f32_model"], (name, seq, batch)


def test_sparse_and_dense_builds_agree_and_threads_do_not_matter(compile_onnx, pruned):
    sparse = compile_onnx(pruned["unstructured-90"], buckets=(16,), sparse="always")
    dense = compile_onnx(pruned["unstructured-90"], buckets=(16,), sparse="never")
    assert {x["format"] for x in _sparse_layers(dense)} == {"dense"}
    inputs = generate_random_inputs(sparse, 3, 16, seed=3)
    one = compile_onnx(pruned["unstructured-90"], buckets=(16,), sparse="always", threads=1)
    for a, b, c in zip(sparse.run(inputs), dense.run(inputs), one.run(inputs)):
        assert relative_error(a, b) <= TOLERANCE["f32_model"]
        assert np.array_equal(a, c)


def _check_pairs(paired, plain, call: str) -> None:
    """paired's manifest pairs each encoder layer's two FFN layers (2 layers) and its C makes
    one ``call`` for each pair; plain (built without pair_sparse_ffn) pairs none"""
    pairs = {x["name"]: x["ffn_pair"] for x in _sparse_layers(paired) if "ffn_pair" in x}
    assert len(pairs) == 4 and all(pairs[pairs[a]] == a for a in pairs)  # 2 layers x 2
    assert all("intermediate" in a or "output" in a for a in pairs)
    assert (paired.path / "model.c").read_text().count(call) == 2
    assert not any("ffn_pair" in x for x in _sparse_layers(plain))


def test_sparse_ffn_pairs_run_as_one_call_with_the_same_bits(compile_onnx, pruned):
    """pair_sparse_ffn: each encoder layer's intermediate + output pair runs as one
    sqc_f32_spmm_ffn call. At 8 x 64 tokens (8 token panels: whole panels per thread on 1 and
    on 2 threads) and 1 x 64 (one panel: fused on 1 thread, the two-call path on 2) the outputs
    are bit for bit those of the same model built without the pass, and match onnxruntime."""
    model = pruned["unstructured-90"]
    paired = compile_onnx(model, buckets=(64,), max_batch_size=8, sparse="always")
    plain = compile_onnx(
        model, buckets=(64,), max_batch_size=8, sparse="always", disable=("pair_sparse_ffn",)
    )
    _check_pairs(paired, plain, "sqc_f32_spmm_ffn(B")
    for batch in (1, 8):
        inputs = generate_random_inputs(paired, batch, 64, seed=batch)
        want = ort_run(model, dict(zip(paired.input_names, inputs)))
        for threads in (1, 2):
            got = paired.run(inputs, threads=threads)
            for a, b, w in zip(got, plain.run(inputs, threads=threads), want):
                assert np.array_equal(a, b), (batch, threads)
                assert relative_error(a, w) <= TOLERANCE["f32_model"], (batch, threads)


def test_int8_ffn_pairs_run_as_one_call_with_the_same_bits(compile_onnx, pruned, tmp_path, capfd):
    """pair_sparse_ffn on a QDQ file: each encoder layer's FFN (its first layer writing its GELU
    table's bytes, fuse_lut_epilogue) runs as one sqc_qlinear_ffn call. At 8 x 64 tokens and
    1 x 64 (fused on 1 thread; on 2, the two calls inside it) the outputs are bit for bit
    those of the same file built without the pass. gcc builds the file for the host's target
    (with AMX, avx512amx) without a warning (the user sees gcc's output)."""
    from sqc.compiler.codegen.build import TARGETS

    path = tmp_path / "unstructured-90-qdq.onnx"
    _quantize(pruned["unstructured-90"], path, "qdq")
    paired = compile_onnx(path, buckets=(64,), max_batch_size=8, sparse="always")
    assert "warning" not in capfd.readouterr().err
    target = json.loads((paired.path / "manifest.json").read_text())["target"]["isa"]
    if TARGETS[target]["int8_isa"] != "avx512_vnni":
        pytest.skip(f"target {target}: no fused int8 FFN kernel")
    plain = compile_onnx(
        path, buckets=(64,), max_batch_size=8, sparse="always", disable=("pair_sparse_ffn",)
    )
    _check_pairs(paired, plain, "sqc_qlinear_ffn(&")
    for batch in (1, 8):
        inputs = generate_random_inputs(paired, batch, 64, seed=batch)
        for threads in (1, 2):
            got = paired.run(inputs, threads=threads)
            for a, b in zip(got, plain.run(inputs, threads=threads)):
                assert np.array_equal(a, b), (batch, threads)


@pytest.mark.parametrize("sparse", ["always", "never"])
def test_vbmi_target_gives_the_avx512_bits(compile_onnx, pruned, tmp_path, sparse, capfd):
    """The avx512vbmi target looks the int8 epilogues' tables up by byte permutes (the GELU
    table of a QDQ file's FFN: in the fused sparse FFN, the sparse tiles and the dense VNNI
    GEMM) where avx512 gathers them: the same bytes, so the same outputs bit for bit. gcc
    builds both without a warning (the user sees gcc's output)."""
    from sqc.compiler.driver import host_cpu_features

    if not {"avx512vbmi", "avx512_vnni"} <= host_cpu_features():
        pytest.skip("this CPU has no AVX512-VBMI")
    path = tmp_path / "unstructured-90-qdq.onnx"
    _quantize(pruned["unstructured-90"], path, "qdq")
    builds = [
        compile_onnx(path, buckets=(64,), max_batch_size=8, sparse=sparse, target=target)
        for target in ("avx512vbmi", "avx512")
    ]
    assert "warning" not in capfd.readouterr().err
    for b, flag in zip(builds, (True, False)):
        assert ("-mavx512vbmi" in b.manifest["target"]["cflags"]) is flag
        # the FFN's first layer writes its GELU table's bytes
        assert ", lut8, nt" in (b.path / "model.c").read_text()
    for batch in (1, 8):
        inputs = generate_random_inputs(builds[0], batch, 64, seed=batch)
        for threads in (1, 2):
            want = builds[1].run(inputs, threads=threads)
            for a, b in zip(builds[0].run(inputs, threads=threads), want):
                assert np.array_equal(a, b), (batch, threads)


def _quantize(src, dst, form):
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    from tests.models.test_int8_models import _Reader

    if form == "dynamic":
        quantize_dynamic(src, dst, per_channel=True)
        return
    names = [i.name for i in onnx.load(str(src)).graph.input]
    quantize_static(src, dst, _Reader(names), quant_format=QuantFormat.QDQ)


@pytest.mark.parametrize("name", ["unstructured-90", "1o4i-80"])
@pytest.mark.parametrize("form", ["dynamic", "qdq"])
def test_pruned_int8_model_matches_onnxruntime_and_its_dense_build(
    compile_onnx, pruned, tmp_path, name, form
):
    """Integer accumulators are exact in both kernels: the sparse build equals the dense build
    of the same int8 file (up to one float rounding of the epilogue), and onnxruntime as the
    int8 model tolerance allows."""
    from tests.models.test_int8_models import _session

    path = tmp_path / f"{name}-{form}.onnx"
    _quantize(pruned[name], path, form)
    sparse = compile_onnx(path, buckets=(16,), max_batch_size=4, sparse="always")
    dense = compile_onnx(path, buckets=(16,), max_batch_size=4, sparse="never")
    layers = _sparse_layers(sparse)
    assert {x["op"] for x in layers} == {"QLinear"} and {x["format"] for x in layers} == {"sparse"}
    encoder = [x for x in layers if x["n"] > 2]
    assert all(x["sparsity"] >= PRUNINGS[name][0] - 0.05 for x in encoder), encoder
    session = _session(path, optimize=False)
    inputs = generate_random_inputs(sparse, 4, 16, seed=11)
    got, base = sparse.run(inputs), dense.run(inputs)
    for g, d in zip(got, base):
        assert relative_error(g, d) <= TOLERANCE["int8_model"]
    exact = 0
    for b in range(4):
        feeds = {n: x[b : b + 1] for n, x in zip(sparse.input_names, inputs)}
        want = session.run(None, feeds)
        err = max(relative_error(g[b : b + 1], w) for g, w in zip(got, want))
        assert err <= TOLERANCE["int8_model"], (name, form, b, err)
        exact += err <= TOLERANCE["f32_model"]
    assert exact >= 2, exact


def test_compile_time_quantization_of_a_pruned_model_runs_sparse_int8(compile_onnx, pruned):
    engine = compile_onnx(
        pruned["1o4i-80"], buckets=(16,), max_batch_size=2, quantize="dynamic", sparse="always"
    )
    layers = _sparse_layers(engine)
    assert {x["op"] for x in layers} == {"QLinear"}
    # per-column symmetric int8 keeps pruned weights at 0, so the 1o4i blocks survive
    assert {x["pattern"] for x in layers if x["n"] > 2} == {"1o4i"}
    dense = compile_onnx(
        pruned["1o4i-80"], buckets=(16,), max_batch_size=2, quantize="dynamic", sparse="never"
    )
    inputs = generate_random_inputs(engine, 2, 16, seed=1)
    for a, b in zip(engine.run(inputs), dense.run(inputs)):
        assert relative_error(a, b) <= TOLERANCE["int8_model"]
