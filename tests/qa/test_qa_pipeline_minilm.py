"""The pipeline on the real MiniLM QA model, run by onnxruntime (`OnnxRuntimeEngine`)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from sqc.runtime.qa import QuestionAnsweringPipeline

DEEPSPARSE = (
    "DeepSparse is sparsity-aware inference runtime offering GPU-class performance on CPUs and "
    "APIs to integrate ML into your application"
)


@pytest.mark.parametrize("buckets", [[384], [128, 384]])
def test_known_answers(minilm_engine, minilm_tokenizer, buckets):
    pipe = QuestionAnsweringPipeline(minilm_engine, minilm_tokenizer, sequence_length=buckets)
    output = pipe(question="What is DeepSparse?", context=DEEPSPARSE)
    assert output.answer == "sparsity-aware inference runtime"
    assert DEEPSPARSE[output.start : output.end] == output.answer
    output = pipe(question="Who is Mark?", context="Mark is batman.")
    assert (output.answer, output.start, output.end) == ("batman", 8, 14)


def test_padding_to_a_larger_bucket_changes_nothing(minilm_engine, minilm_tokenizer):
    # A short pair runs unpadded-ish at 128 and padded at 384: same span, same score.
    small = QuestionAnsweringPipeline(minilm_engine, minilm_tokenizer, sequence_length=128)
    large = QuestionAnsweringPipeline(minilm_engine, minilm_tokenizer, sequence_length=384)
    for question, context in [
        ("What is DeepSparse?", DEEPSPARSE),
        ("Who is Mark?", "Mark is batman."),
    ]:
        a, b = small(question=question, context=context), large(question=question, context=context)
        assert (a.answer, a.start, a.end) == (b.answer, b.start, b.end)
        assert a.score == pytest.approx(b.score, abs=1e-3)


def test_batched_call_equals_single_calls(minilm_engine, minilm_tokenizer):
    pipe = QuestionAnsweringPipeline(minilm_engine, minilm_tokenizer, sequence_length=128)
    pairs = [("What is DeepSparse?", DEEPSPARSE), ("Who is Mark?", "Mark is batman.")]
    batched = pipe([{"question": q, "context": c} for q, c in pairs])
    for output, (question, context) in zip(batched, pairs):
        single = pipe(question=question, context=context)
        assert (output.answer, output.start, output.end) == (
            single.answer,
            single.start,
            single.end,
        )
        assert output.score == pytest.approx(single.score, abs=1e-3)


def test_long_context_is_windowed_and_batched(minilm_engine, minilm_tokenizer, recording_engine):
    filler = (
        "The weather in the valley was mild and the farmers planted wheat, barley and oats "
        "every spring. "
    )
    context = filler * 140 + "The secret code word is pineapple. " + filler * 130
    assert len(context) > 25_000
    question = "What is the secret code word?"
    engine = recording_engine(minilm_engine)
    pipe = QuestionAnsweringPipeline(engine, minilm_tokenizer, sequence_length=384)
    output = pipe(question=question, context=context)
    assert output.answer == "pineapple"
    assert output.start == context.index("pineapple")

    tokenizer = Tokenizer.from_file(minilm_tokenizer)
    tokenizer.enable_truncation(384, stride=128, strategy="only_second")
    windows = 1 + len(tokenizer.encode(question, context).overflowing)
    assert windows > 15
    # All windows in one engine call (up to max_batch_size 32); the last may be shorter, but
    # sequence_length=384 leaves it no other bucket.
    assert engine.calls == [(windows, 384)]


def test_unicode_context(minilm_engine, minilm_tokenizer):
    pipe = QuestionAnsweringPipeline(minilm_engine, minilm_tokenizer, sequence_length=128)
    context = "José   lives in São Paulo, near the café Übersee.  He likes 北京烤鸭 😀 a lot."
    output = pipe(question="Where does José live?", context=context)
    assert output.answer == "São Paulo" and context[output.start : output.end] == "São Paulo"
    context = "The capital of China is 北京 (Beijing), a very large city."
    output = pipe(question="What city is the capital of China?", context=context)
    assert output.answer == "北京" and context[output.start : output.end] == "北京"


def test_no_answer_mode_runs(minilm_engine, minilm_tokenizer):
    pipe = QuestionAnsweringPipeline(
        minilm_engine, minilm_tokenizer, sequence_length=128, version_2_with_negative=True
    )
    output = pipe(question="Who is Mark?", context="Mark is batman.")
    assert output.answer in ("", "batman")
    if output.answer == "":
        assert (output.start, output.end) == (0, 0)
