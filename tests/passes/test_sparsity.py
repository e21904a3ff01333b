"""Pruning (`sqc prune`'s magnitude pruning) and the extract_sparsity pass: zero patterns are
classified by where the zeros are, and each layer's kernel choice follows --sparse and the cost
model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sqc.compiler.ir import CompileError
from sqc.compiler.passes.extract_sparsity import classify_zeros
from sqc.compiler.prune import prune_model, prune_weights
from tests.conftest import FIXTURES

TINY = FIXTURES / "bert_qa_opset17.onnx"
rng = np.random.default_rng(7)


def weights(k=64, n=48):
    return rng.standard_normal((k, n)).astype(np.float32)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 1.0])
def test_unstructured_pruning_zeros_exactly_the_smallest(sparsity):
    w = weights()
    p = prune_weights(w, sparsity)
    count = int(round(sparsity * w.size))
    assert int((p == 0).sum()) == count
    kept = np.abs(w[p != 0])
    dropped = np.abs(w[p == 0])
    if kept.size and dropped.size:
        assert dropped.max() <= kept.min()
    assert np.array_equal(p[p != 0], w[p != 0])  # survivors untouched


@pytest.mark.parametrize("block", ["1o4i", "4o1i"])
@pytest.mark.parametrize("shape", [(64, 48), (66, 50)])  # 66, 50: a short block at the edge
def test_block_pruning_zeros_whole_aligned_blocks(block, shape):
    w = weights(*shape)
    p = prune_weights(w, 0.75, block)
    zeros = p == 0
    v = zeros if block == "1o4i" else zeros.T
    for start in range(0, v.shape[0], 4):
        part = v[start : start + 4]
        # each block is all zero or all kept
        assert np.all(part.all(axis=0) | ~part.any(axis=0))
    assert 0.70 <= zeros.mean() <= 0.80
    assert classify_zeros(zeros) == (pytest.approx(zeros.mean()), block)


def test_block_pruning_drops_the_weakest_blocks():
    w = np.ones((8, 2), np.float32)
    w[4:8, 1] = 0.01  # the weakest 1o4i block: rows 4..7 of column 1
    p = prune_weights(w, 0.25, "1o4i")
    assert np.all(p[4:8, 1] == 0) and np.all(p[:, 0] == 1) and np.all(p[0:4, 1] == 1)


def test_classify_zeros():
    assert classify_zeros(np.ones((8, 8), bool)) == (1.0, "1o4i")  # all zero: whole blocks
    assert classify_zeros(weights() == 0) == (0.0, "dense")
    few = np.zeros((100, 10), bool)
    few[:5] = True  # 5% zeros
    assert classify_zeros(few)[1] == "dense"
    z = prune_weights(weights(), 0.9) == 0
    assert classify_zeros(z)[1] == "unstructured"
    # one stray zero outside the blocks is tolerated (noise: an int8 weight that rounds to 0)
    b = prune_weights(weights(256, 64), 0.9, "1o4i") == 0
    k = int(np.argwhere(~b)[0][0])
    b[k, int(np.argwhere(~b)[0][1])] = True
    assert classify_zeros(b)[1] == "1o4i"


def test_prune_model_writes_a_pruned_model_with_its_tokenizer(tmp_path):
    out = tmp_path / "sub" / "pruned.onnx"
    layers = prune_model(TINY, out, 0.8, "1o4i", min_side=16)
    # 2 layers x 6 linears; the 2-wide QA head stays dense
    assert len(layers) == 12
    assert all(abs(layer.sparsity - 0.8) < 0.05 for layer in layers)
    model = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for layer in layers:
        z = inits[layer.weight] == 0
        assert classify_zeros(z)[1] == "1o4i"
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(TINY)).graph.initializer}
    head = [n for n in model.graph.node if n.op_type == "MatMul"][-1].input[1]
    assert np.array_equal(inits[head], original[head])
    if (TINY.parent / "tokenizer.json").exists():
        assert (out.parent / "tokenizer.json").exists()


def test_prune_model_refuses_what_it_cannot_prune(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    q = tmp_path / "q.onnx"
    quantize_dynamic(TINY, q)
    with pytest.raises(CompileError, match="already quantized.*prune the float model"):
        prune_model(q, tmp_path / "out.onnx", 0.9)
    with pytest.raises(CompileError, match="no linear layer to prune"):
        prune_model(TINY, tmp_path / "out.onnx", 0.9)  # 32-wide layers < the default 64
    with pytest.raises(ValueError, match="would overwrite"):
        prune_model(TINY, TINY, 0.9, min_side=16)
    with pytest.raises(ValueError, match="sparsity must be in"):
        prune_model(TINY, tmp_path / "out.onnx", 1.5)
    with pytest.raises(ValueError, match="block must be one of"):
        prune_model(TINY, tmp_path / "out.onnx", 0.5, "2x2")


def _layers(tmp_path, model, **options):
    import json

    from sqc.compiler.driver import compile_model

    out = compile_model(model, [16], tmp_path / "a", **options)
    return json.loads((out / "manifest.json").read_text())["layers"]


def test_kernel_choice_follows_the_sparse_option(tmp_path):
    pruned = tmp_path / "p.onnx"
    prune_model(TINY, pruned, 0.9, min_side=16)
    linear = [x for x in _layers(tmp_path, pruned, sparse="never") if "format" in x]
    assert {x["format"] for x in linear} == {"dense"}
    assert all("--sparse never" in x["why"] for x in linear)
    encoder = [x for x in linear if x["n"] > 2]
    assert {x["pattern"] for x in encoder} == {"unstructured"}
    assert all(abs(x["sparsity"] - 0.9) < 0.03 for x in encoder)
    linear = [x for x in _layers(tmp_path, pruned, sparse="always", force=True) if "format" in x]
    assert {x["format"] for x in linear} == {"sparse"}
    assert all("spmm" in x["kernel"] for x in linear)
    with pytest.raises(CompileError, match="sparse must be one of auto, always, never"):
        _layers(tmp_path, pruned, sparse="maybe")


def test_auto_choice_is_explained(tmp_path):
    pruned = tmp_path / "p.onnx"
    prune_model(TINY, pruned, 0.95, "1o4i", min_side=16)
    for x in [x for x in _layers(tmp_path, pruned) if "format" in x]:
        if x["pattern"] == "dense":
            assert x["format"] == "dense" and "dense weights" in x["why"]
        else:
            assert "sparse kernel estimated" in x["why"], x
            assert (x["format"] == "sparse") == (x["sparse_gain_estimate"] >= 1.1), x
