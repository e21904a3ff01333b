"""Layer 4: whole models, compiled by sqc, against onnxruntime on the same file.

Fixtures are tiny BERT / DistilBERT / RoBERTa / ALBERT / MiniLM exports (torch, opsets 14-18)
and ONNX Runtime transformer-optimized BERT (com.microsoft fused ops), made by
examples/export_fixtures.py. The real model is ../shared/models/minilm-l6-qa.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sqc.runtime.engine import generate_random_inputs
from tests.conftest import FIXTURES, REAL_MODEL, SHARED, ort_run
from tests.tolerances import TOLERANCE, relative_error

FIXTURE_MODELS = sorted(p.name for p in FIXTURES.glob("*.onnx"))
BUCKETS = (16, 24)


def test_fixture_set_is_complete():
    assert len(FIXTURE_MODELS) >= 9, FIXTURE_MODELS


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_fixture_model_matches_onnxruntime(compile_onnx, name):
    engine = compile_onnx(FIXTURES / name, buckets=BUCKETS, max_batch_size=4)
    for seq in BUCKETS:
        for batch in (1, 4):
            inputs = generate_random_inputs(engine, batch, seq, seed=seq * 10 + batch)
            if "ort_" in name:
                # ORT's fused attention reads the mask as key lengths: right padding only.
                mask = engine.input_names.index("attention_mask")
                assert np.all(np.diff(inputs[mask], axis=1) <= 0)
            got = engine.run(inputs)
            want = ort_run(FIXTURES / name, dict(zip(engine.input_names, inputs)))
            for out_name, g, w in zip(engine.output_names, got, want):
                err = relative_error(g, w)
                assert err <= TOLERANCE["f32_model"], f"{name} {out_name} s{seq} b{batch}: {err}"


@pytest.mark.parametrize(
    "name",
    [
        "bert_qa_opset17.onnx",
        "distilbert_qa_opset14.onnx",
        "roberta_qa_opset17.onnx",
        "bert_qa_ort_optimized.onnx",
    ],
)
def test_fixture_model_is_fully_fused(compile_onnx, name):
    """Every linear layer, attention and LayerNorm of a BERT-family model gets its fused kernel."""
    engine = compile_onnx(FIXTURES / name, buckets=BUCKETS, max_batch_size=4)
    source = (engine.path / "model.c").read_text()
    body = source[source.index("int sqc_run_chunk_s16(") : source.index("int sqc_run_s16(")]
    assert body.count("(sqc.Attention)") == 2
    assert body.count("(sqc.Linear)") in (13, 9)  # 2 layers x 6 (or 4 with packed QKV) + head
    assert "(MatMul)" not in body and "(Softmax)" not in body and "(Erf)" not in body


def test_buckets_share_weights(compile_onnx):
    engine = compile_onnx(FIXTURES / "bert_qa_opset17.onnx", buckets=BUCKETS, max_batch_size=4)
    manifest = json.loads((engine.path / "manifest.json").read_text())
    params = FIXTURES.joinpath("bert_qa_opset17.onnx").stat().st_size
    # One copy of the weights (packed) for both buckets: far less than twice the model.
    assert manifest["weights"]["bytes"] < 1.5 * params


def test_engine_threads_give_identical_results(compile_onnx):
    engine = compile_onnx(FIXTURES / "bert_qa_opset17.onnx", buckets=BUCKETS, max_batch_size=4)
    inputs = generate_random_inputs(engine, 4, 24, seed=3)
    one = engine.run(inputs, threads=1)
    two = engine.run(inputs, threads=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_engine_is_safe_from_many_threads(compile_onnx):
    from concurrent.futures import ThreadPoolExecutor

    engine = compile_onnx(FIXTURES / "bert_qa_opset17.onnx", buckets=BUCKETS, max_batch_size=4)
    jobs = [generate_random_inputs(engine, 1 + i % 4, BUCKETS[i % 2], seed=i) for i in range(24)]
    expected = [engine.run(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(engine.run, jobs))
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ the real model


def squad_windows(count: int, seq: int, stride: int = 128):
    """Tokenized windows (input ids, mask, types) of the first ``count`` SQuAD dev questions."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(REAL_MODEL.parent / "tokenizer.json"))
    tok.enable_truncation(seq, stride=stride, strategy="only_second")
    tok.enable_padding(length=seq)
    data = json.loads((SHARED / "data/squad/dev-v1.1.reconstructed.json").read_text())["data"]
    pairs = [
        (qa["question"], p["context"]) for a in data for p in a["paragraphs"] for qa in p["qas"]
    ][:count]
    ids, mask, types = [], [], []
    for q, ctx in pairs:
        enc = tok.encode(q, ctx)
        for e in [enc] + enc.overflowing:
            ids.append(e.ids)
            mask.append(e.attention_mask)
            types.append(e.type_ids)
    return [np.array(a, np.int64) for a in (ids, mask, types)]


@pytest.mark.skipif(not REAL_MODEL.exists(), reason="../shared/models is not beside the checkout")
def test_real_model_logits_on_squad_windows(compile_onnx):
    engine = compile_onnx(REAL_MODEL, buckets=(384,), max_batch_size=16)
    ids, mask, types = squad_windows(200, 384)
    assert len(ids) >= 200
    worst = 0.0
    for start in range(0, len(ids), 16):
        chunk = [a[start : start + 16] for a in (ids, mask, types)]
        got = engine.run(chunk)
        want = ort_run(REAL_MODEL, dict(zip(engine.input_names, chunk)))
        for g, w in zip(got, want):
            # Per window: max abs error relative to that window's largest logit.
            for gw, ww in zip(g, w):
                worst = max(worst, relative_error(gw, ww))
    assert worst <= TOLERANCE["f32_model"], worst


def test_external_data_model(compile_onnx, tmp_path):
    """A model saved with its weights in a separate file compiles and matches onnxruntime."""
    import onnx

    model = onnx.load(str(FIXTURES / "bert_qa_opset17.onnx"))
    path = tmp_path / "external.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external.weights",
        size_threshold=256,
    )
    assert (tmp_path / "external.weights").stat().st_size > path.stat().st_size
    engine = compile_onnx(path, buckets=(16,), max_batch_size=2)
    inputs = generate_random_inputs(engine, 2, 16, seed=9)
    want = ort_run(path, dict(zip(engine.input_names, inputs)))
    for g, w in zip(engine.run(inputs), want):
        assert relative_error(g, w) <= TOLERANCE["f32_model"]


def test_missing_external_data_is_a_clear_error(tmp_path):
    import onnx

    from sqc.compiler.driver import compile_model
    from sqc.compiler.ir import CompileError

    model = onnx.load(str(FIXTURES / "bert_qa_opset17.onnx"))
    path = tmp_path / "external.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="w.bin", size_threshold=256
    )
    (tmp_path / "w.bin").unlink()
    with pytest.raises(CompileError, match="external data"):
        compile_model(path, [16], tmp_path / "out")


@pytest.mark.parametrize("buckets", [(6, 11), (8, 17)])
def test_fused_attention_kernel_tails(compile_onnx, buckets):
    """The attention kernel's blocks (8 keys, 8 features, 8 query rows) with every tail: head
    dim 4 and sequence lengths that are not multiples of 8, with padding in the mask."""
    from onnx import TensorProto as T
    from onnx import helper

    from tests.passes.test_passes import H, attention_nodes, model

    nodes, inits = attention_nodes()
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("mask", T.INT64, ["batch", "seq"]),
    ]
    m = model(nodes, inits, inputs, opset=13)
    engine = compile_onnx(m, buckets=buckets, max_batch_size=3)
    assert "(sqc.Attention)" in (engine.path / "model.c").read_text()
    rng = np.random.default_rng(0)
    for seq in buckets:
        x = rng.standard_normal((3, seq, H)).astype(np.float32)
        mask = (np.arange(seq)[None, :] < np.array([[seq], [seq - 2], [1]])).astype(np.int64)
        got = engine.run({"x": x, "mask": mask})[0]
        want = ort_run(m, {"x": x, "mask": mask})[0]
        assert relative_error(got, want) <= TOLERANCE["f32_model"]
