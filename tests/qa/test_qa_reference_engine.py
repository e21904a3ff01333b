"""`OnnxRuntimeEngine` keeps the engine contract, and the pipeline runs on the tiny committed
models, including RoBERTa (no token_type_ids, pad id 1)."""

from __future__ import annotations

import numpy as np
import pytest

from sqc.runtime.qa import QuestionAnsweringPipeline
from sqc.runtime.reference import OnnxRuntimeEngine


def test_engine_interface(fixture_models):
    engine = OnnxRuntimeEngine(fixture_models / "bert_qa_opset17.onnx", [32, 16], max_batch_size=2)
    assert engine.buckets == [16, 32] and engine.max_batch_size == 2
    assert engine.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert engine.output_names == ["start_logits", "end_logits"]
    inputs = {name: np.ones((2, 16), dtype=np.int64) for name in engine.input_names}
    start, end = engine.run(inputs)
    assert start.shape == end.shape == (2, 16)

    with pytest.raises(ValueError, match=r"S in \[16, 32\]"):
        engine.run({name: np.ones((1, 20), dtype=np.int64) for name in engine.input_names})
    with pytest.raises(ValueError, match="max_batch_size 2"):
        engine.run({name: np.ones((3, 16), dtype=np.int64) for name in engine.input_names})
    with pytest.raises(ValueError, match="missing input 'token_type_ids'"):
        engine.run({name: np.ones((1, 16), dtype=np.int64) for name in engine.input_names[:2]})


@pytest.mark.parametrize(
    "model", ["bert_qa_opset17.onnx", "roberta_qa_opset17.onnx", "distilbert_qa_opset14.onnx"]
)
def test_routing_does_not_change_answers(fixture_models, tiny_tokenizer, model):
    # Random weights, so the answers mean nothing; but a window padded into a larger bucket must
    # give the same span and score as in the smallest bucket that holds it.
    engine = OnnxRuntimeEngine(fixture_models / model, [16, 32, 48], max_batch_size=4)
    pairs = [
        ("who is he?", "he is the king of the north"),
        ("where?", "the city by the river was old and the river was long"),
        ("what?", "the film was released in the united states " * 8),  # several windows of 48
    ]
    routed = QuestionAnsweringPipeline(engine, tiny_tokenizer)(
        question=[q for q, _ in pairs], context=[c for _, c in pairs]
    )
    largest = QuestionAnsweringPipeline(engine, tiny_tokenizer, sequence_length=48)(
        question=[q for q, _ in pairs], context=[c for _, c in pairs]
    )
    for a, b, (_, context) in zip(routed, largest, pairs):
        assert (a.answer, a.start, a.end) == (b.answer, b.start, b.end)
        assert a.score == pytest.approx(b.score, abs=1e-4)
        assert a.answer and context[a.start : a.end] == a.answer
