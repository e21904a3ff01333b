"""The committed ONNX fixtures load and run in onnxruntime (no torch needed).

They are made by ``python examples/export_fixtures.py``; see
``tests/fixtures/models/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

MODELS = Path(__file__).parent / "fixtures" / "models"
VOCAB_SIZE = 1024
HIDDEN = 32
PAD_ID = 1

QA = ["start_logits", "end_logits"]
BERT_IN = ["input_ids", "attention_mask", "token_type_ids"]
TWO_IN = ["input_ids", "attention_mask"]

# file -> (input names, output names, hidden size of the last output axis or None)
FIXTURES = {
    "bert_qa_opset14.onnx": (BERT_IN, QA, None),
    "bert_qa_opset17.onnx": (BERT_IN, QA, None),
    "bert_qa_opset18.onnx": (BERT_IN, QA, None),
    "distilbert_qa_opset14.onnx": (TWO_IN, QA, None),
    "roberta_qa_opset17.onnx": (TWO_IN, QA, None),
    "albert_qa_opset17.onnx": (BERT_IN, QA, None),
    "minilm_encoder_opset17.onnx": (BERT_IN, ["last_hidden_state"], HIDDEN),
    "bert_qa_ort_optimized.onnx": (BERT_IN, QA, None),
    "bert_qa_ort_fastgelu.onnx": (BERT_IN, QA, None),
}


def make_feeds(names: list[str], batch: int, seq: int, lengths: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    ids = rng.integers(5, VOCAB_SIZE, size=(batch, seq), dtype=np.int64)
    mask = np.zeros((batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, 0] = 0  # [CLS]
        ids[b, n - 1] = 2  # [SEP]
        ids[b, n:] = PAD_ID
        mask[b, :n] = 1
        types[b, n // 2 : n] = 1
    table = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {n: table[n] for n in names}


def session(name: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(MODELS / name), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize(
    "batch,seq,lengths", [(2, 16, [16, 10]), (1, 7, [7]), (3, 24, [24, 5, 13])]
)
def test_fixture_runs(name: str, batch: int, seq: int, lengths: list[int]) -> None:
    in_names, out_names, hidden = FIXTURES[name]
    sess = session(name)
    assert [i.name for i in sess.get_inputs()] == in_names
    assert [o.name for o in sess.get_outputs()] == out_names
    outs = sess.run(None, make_feeds(in_names, batch, seq, lengths))
    assert len(outs) == len(out_names)
    for out in outs:
        expected = (batch, seq) if hidden is None else (batch, seq, hidden)
        assert out.shape == expected
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out))
        assert float(np.std(out)) > 0.0


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_small_and_valid(name: str) -> None:
    path = MODELS / name
    assert path.stat().st_size < 1_000_000
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert dims[1].dim_param == "sequence"


def test_same_weights_across_opsets() -> None:
    feeds = make_feeds(BERT_IN, 2, 16, [16, 10])
    ref = session("bert_qa_opset14.onnx").run(None, feeds)
    for name, tol in [
        ("bert_qa_opset17.onnx", 1e-5),
        ("bert_qa_opset18.onnx", 1e-5),
        ("bert_qa_ort_optimized.onnx", 1e-4),
        ("bert_qa_ort_fastgelu.onnx", 1e-2),
    ]:
        got = session(name).run(None, feeds)
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r, atol=tol, rtol=0, err_msg=name)


def test_padding_does_not_leak() -> None:
    """Changing the ids under the padded part of the mask leaves the unpadded
    logits unchanged (the mask really masks), for every QA fixture."""
    for name, (in_names, _out_names, _) in FIXTURES.items():
        feeds = make_feeds(in_names, 2, 16, [16, 10])
        sess = session(name)
        a = sess.run(None, feeds)
        feeds2 = {k: v.copy() for k, v in feeds.items()}
        feeds2["input_ids"][1, 10:] = 7
        b = sess.run(None, feeds2)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x[1, :10], y[1, :10], atol=1e-5, err_msg=name)
            np.testing.assert_allclose(x[0], y[0], atol=0, err_msg=name)


def test_fused_ops_present() -> None:
    ops = set()
    for name in FIXTURES:
        for node in onnx.load(str(MODELS / name)).graph.node:
            ops.add((node.domain, node.op_type))
    for op in [
        "Attention",
        "SkipLayerNormalization",
        "EmbedLayerNormalization",
        "BiasGelu",
        "FastGelu",
    ]:
        assert ("com.microsoft", op) in ops


def test_tokenizer_fixture() -> None:
    from tokenizers import Tokenizer

    path = MODELS / "tiny-bert-tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    assert tok.get_vocab_size() == VOCAB_SIZE
    vocab = tok.get_vocab()
    assert [vocab[t] for t in ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]] == [0, 1, 2, 3, 4]
    enc = tok.encode("Who wrote the book?", "The book was written by Alice in 1865.")
    assert enc.ids[0] == 0 and enc.ids[-1] == 2
    assert max(enc.ids) < VOCAB_SIZE and 3 not in enc.ids  # no [UNK]: letters cover everything
    sep = enc.ids.index(2)
    assert set(enc.type_ids[: sep + 1]) == {0} and set(enc.type_ids[sep + 1 :]) == {1}
    assert tok.decode(enc.ids[1:sep]) == "who wrote the book?"
    assert json.loads(path.read_text())["model"]["type"] == "WordPiece"
