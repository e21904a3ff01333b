"""What the pipeline does around the engine: windows, routing, batching, offsets, errors.

The engine here is `PeakEngine` (conftest): it peaks the start logit on one token id and the end
logit on another, so each test knows the right span without a model.
"""

from __future__ import annotations

import math

import pytest
from tokenizers import Tokenizer

from sqc.runtime.qa import QuestionAnsweringOutput, QuestionAnsweringPipeline, default_doc_stride


def _id(tokenizer_path: str, token: str) -> int:
    token_id = Tokenizer.from_file(tokenizer_path).token_to_id(token)
    assert token_id is not None, token
    return token_id


def _pipeline(tokenizer_path, engine, **options) -> QuestionAnsweringPipeline:
    return QuestionAnsweringPipeline(engine, tokenizer_path, **options)


def test_output_is_a_frozen_record():
    output = QuestionAnsweringOutput(score=1.5, answer="batman", start=8, end=14)
    assert output.to_dict() == {"score": 1.5, "answer": "batman", "start": 8, "end": 14}
    with pytest.raises(AttributeError):
        output.answer = "robin"  # type: ignore[misc]


def test_default_doc_stride():
    assert default_doc_stride(384) == 128
    assert default_doc_stride(512) == 128
    assert default_doc_stride(128) == 64
    assert default_doc_stride(64) == 32


# -- spans and offsets ---------------------------------------------------------------------------


def test_span_maps_to_context_characters(tiny_tokenizer, peak_engine):
    river, city = _id(tiny_tokenizer, "river"), _id(tiny_tokenizer, "city")
    pipe = _pipeline(tiny_tokenizer, peak_engine(river, city, buckets=[32, 64]))
    context = "The old  river   city was near the sea."
    output = pipe(question="Where was it?", context=context)
    assert output.answer == "river   city"
    assert (output.start, output.end) == (context.index("river"), context.index("city") + 4)
    assert output.score == pytest.approx(20.0)  # start logit + end logit, not a probability


def test_question_tokens_are_never_answers(tiny_tokenizer, peak_engine):
    river = _id(tiny_tokenizer, "river")
    pipe = _pipeline(tiny_tokenizer, peak_engine(river, river, buckets=[32]))
    context = "the river was long"
    output = pipe(question="which river is long?", context=context)
    assert (output.answer, output.start) == ("river", context.index("river"))
    # Peak only in the question: the answer still comes from the context.
    output = pipe(question="which river is long?", context="the city was old")
    assert output.answer and "the city was old"[output.start : output.end] == output.answer


def test_end_before_start_or_too_long_is_not_a_span(tiny_tokenizer, peak_engine):
    river, city = _id(tiny_tokenizer, "river"), _id(tiny_tokenizer, "city")
    context = "the city and the river"
    pipe = _pipeline(tiny_tokenizer, peak_engine(river, city, buckets=[32]))
    output = pipe(question="where?", context=context)
    assert output.score < 20.0  # (river, city) would end before it starts
    context = "river " + "the " * 20 + "city"
    output = _pipeline(
        tiny_tokenizer, peak_engine(river, city, buckets=[64]), max_answer_length=15
    )(question="where?", context=context)
    assert output.score < 20.0 and output.answer != context  # 22 tokens > max_answer_length


def test_engine_output_order_is_read_by_name(tiny_tokenizer, peak_engine):
    river, city = _id(tiny_tokenizer, "river"), _id(tiny_tokenizer, "city")
    engine = peak_engine(river, city, buckets=[32], output_names=["end_logits", "start_logits"])
    assert _pipeline(tiny_tokenizer, engine)(question="q?", context="a river city").answer == (
        "river city"
    )


UNICODE_CONTEXT = (
    "😀😀 北京 Ça   coûte 5 €  à  Zürich —\u3000东\t🎉  Crème brûlée.\n\n  naïve Cafe\u0301 ok"
)


@pytest.mark.parametrize(
    "start_token, end_token, expected",
    [
        ("zurich", "zurich", "Zürich"),
        ("北", "京", "北京"),
        ("ca", "##ute", "Ça   coûte"),
        ("zurich", "br", "Zürich —\u3000东\t🎉  Crème br"),
        ("##ule", "naive", "ûlée.\n\n  naïve"),
        ("cafe", "cafe", "Cafe\u0301"),  # decomposed é: the combining accent stays with its letter
    ],
)
def test_unicode_offsets(minilm_tokenizer, peak_engine, start_token, end_token, expected):
    engine = peak_engine(
        _id(minilm_tokenizer, start_token), _id(minilm_tokenizer, end_token), buckets=[64, 128]
    )
    pipe = _pipeline(minilm_tokenizer, engine)
    output = pipe(question="What?", context=UNICODE_CONTEXT)
    assert output.answer == expected
    assert UNICODE_CONTEXT[output.start : output.end] == expected
    assert output.start == UNICODE_CONTEXT.index(expected)  # code points, not bytes or UTF-16


def test_unicode_offsets_across_windows(minilm_tokenizer, peak_engine):
    # Emoji, CJK and runs of whitespace before the answer, many windows of 32 tokens.
    zurich = _id(minilm_tokenizer, "zurich")
    context = "😀 北京  é\u0301\t " * 60 + "Zürich" + " 🎉 东京 " * 40
    pipe = _pipeline(minilm_tokenizer, peak_engine(zurich, zurich, buckets=[32]))
    output = pipe(question="Where?", context=context)
    assert (output.answer, output.start) == ("Zürich", context.index("Zürich"))


# -- windows, routing, batching ------------------------------------------------------------------


def _windows(tokenizer_path: str, question: str, context: str, length: int, stride: int) -> int:
    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.enable_truncation(length, stride=stride, strategy="only_second")
    return 1 + len(tokenizer.encode(question, context).overflowing)


def test_long_context_windows_are_batched(tiny_tokenizer, peak_engine, recording_engine):
    river = _id(tiny_tokenizer, "river")
    context = "the city of the north " * 60 + "by the river " + "and the south " * 40
    question = "where is it?"
    engine = recording_engine(peak_engine(river, river, buckets=[16, 64], max_batch_size=8))
    output = _pipeline(tiny_tokenizer, engine)(question=question, context=context)
    assert (output.answer, output.start) == ("river", context.index("river"))

    windows = _windows(tiny_tokenizer, question, context, 64, default_doc_stride(64))
    assert windows > 8
    assert sum(batch for batch, _ in engine.calls) == windows
    assert all(batch <= 8 for batch, _ in engine.calls)
    # Full chunks of max_batch_size: as few engine calls as the buckets allow.
    per_bucket = {}
    for batch, length in engine.calls:
        per_bucket[length] = per_bucket.get(length, 0) + batch
    assert len(engine.calls) == sum(math.ceil(n / 8) for n in per_bucket.values())


def test_windows_of_all_questions_share_engine_calls(tiny_tokenizer, peak_engine, recording_engine):
    river = _id(tiny_tokenizer, "river")
    engine = recording_engine(peak_engine(river, river, buckets=[16, 32, 64], max_batch_size=4))
    pipe = _pipeline(tiny_tokenizer, engine)
    contexts = ["a river", "the long river is old", "the river " + "and the north " * 20]
    outputs = pipe(question=["where?"] * 3, context=contexts)
    assert [o.answer for o in outputs] == ["river"] * 3
    assert [c[o.start : o.end] for o, c in zip(outputs, contexts)] == ["river"] * 3
    # Each window goes to the smallest bucket that holds it; one call per bucket here.
    lengths = [length for _, length in engine.calls]
    assert sorted(lengths) == sorted(set(lengths))
    assert 16 in lengths and 64 in lengths


def test_sequence_length_restricts_buckets(tiny_tokenizer, peak_engine, recording_engine):
    river = _id(tiny_tokenizer, "river")
    engine = recording_engine(peak_engine(river, river, buckets=[16, 32, 64]))
    pipe = _pipeline(tiny_tokenizer, engine, sequence_length=[32])
    assert pipe.buckets == [32] and pipe.doc_stride == 16
    pipe(question="where?", context="a river " * 30)
    assert {length for _, length in engine.calls} == {32}
    with pytest.raises(ValueError, match=r"\[16, 32, 64\]"):
        _pipeline(tiny_tokenizer, engine, sequence_length=128)


def test_long_question_shrinks_the_overlap(tiny_tokenizer, peak_engine):
    # 20 question tokens in windows of 32 leave 9 context tokens, fewer than doc_stride 16:
    # the overlap drops to 4 instead of the tokenizer failing.
    river = _id(tiny_tokenizer, "river")
    question = " ".join(["the"] * 19) + "?"
    context = "and the north " * 20 + "river"
    pipe = _pipeline(tiny_tokenizer, peak_engine(river, river, buckets=[32]))
    output = pipe(question=question, context=context)
    assert (output.answer, output.start) == ("river", context.index("river"))


def test_engine_without_token_type_ids(tiny_tokenizer, peak_engine):
    river = _id(tiny_tokenizer, "river")
    seen = []

    class Engine(peak_engine):
        def run(self, inputs):
            seen.append(sorted(inputs))
            return super().run(inputs)

    engine = Engine(river, river, buckets=[16], input_names=["input_ids", "attention_mask"])
    assert _pipeline(tiny_tokenizer, engine)(question="q?", context="the river").answer == "river"
    assert seen == [["attention_mask", "input_ids"]]


# -- no answer (SQuAD v2.0) ----------------------------------------------------------------------


def test_version_2_null_answer(tiny_tokenizer, peak_engine):
    river = _id(tiny_tokenizer, "river")
    engine = peak_engine(river, river, buckets=[32], null_logit=15.0)  # null 30 > span 20
    context = "the river"
    v1 = _pipeline(tiny_tokenizer, engine)(question="q?", context=context)
    assert v1.answer == "river"
    v2 = _pipeline(tiny_tokenizer, engine, version_2_with_negative=True)
    assert v2(question="q?", context=context) == QuestionAnsweringOutput(30.0, "", 0, 0)
    lenient = _pipeline(
        tiny_tokenizer, engine, version_2_with_negative=True, null_score_diff_threshold=10.0
    )
    assert lenient(question="q?", context=context).answer == "river"


def test_context_without_tokens_has_the_empty_answer(tiny_tokenizer, peak_engine):
    # Control and zero-width characters are not blank to str.strip but yield no tokens.
    pipe = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]))
    output = pipe(question="q?", context="\u200b\x07")
    assert (output.answer, output.start, output.end) == ("", 0, 0)


# -- call forms and errors -----------------------------------------------------------------------


def test_call_forms_agree(tiny_tokenizer, peak_engine):
    river = _id(tiny_tokenizer, "river")
    pipe = _pipeline(tiny_tokenizer, peak_engine(river, river, buckets=[32]))
    pairs = [("where?", "the river"), ("and?", "a big river here")]
    singles = [pipe(question=q, context=c) for q, c in pairs]
    assert pipe(question=[q for q, _ in pairs], context=[c for _, c in pairs]) == singles
    assert pipe([{"question": q, "context": c} for q, c in pairs]) == singles
    assert pipe({"question": "where?", "context": "the river"}) == singles[0]
    assert pipe(question=[], context=[]) == []


@pytest.mark.parametrize("question", ["", "   ", "\n\t "])
def test_empty_question(tiny_tokenizer, peak_engine, question):
    pipe = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]))
    with pytest.raises(ValueError, match="question is empty"):
        pipe(question=question, context="the river")


@pytest.mark.parametrize("context", ["", "  \n "])
def test_empty_context(tiny_tokenizer, peak_engine, context):
    pipe = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]))
    with pytest.raises(ValueError, match="context is empty"):
        pipe(question="where?", context=context)


@pytest.mark.parametrize(
    "call, message",
    [
        ({"question": 3, "context": "c"}, "question must be a str, got int"),
        ({"question": "q", "context": b"c"}, "context must be a str, got bytes"),
        (
            {"question": "q", "context": ["c"]},
            "question and context must both be str or both lists",
        ),
        ({"question": ["q"], "context": [None]}, "context must be a str, got NoneType"),
        ({"inputs": [{"question": 1.5, "context": "c"}]}, "question must be a str, got float"),
        ({"inputs": ["q"]}, "input 0 must be a mapping"),
        ({"question": "q"}, "both question and context are required"),
    ],
)
def test_wrong_types(tiny_tokenizer, peak_engine, call, message):
    pipe = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]))
    call = dict(call)
    inputs = call.pop("inputs", None)
    with pytest.raises(TypeError, match=message):
        pipe(inputs, **call)


def test_malformed_batches(tiny_tokenizer, peak_engine):
    pipe = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]))
    with pytest.raises(ValueError, match="differ in length: 2 and 1"):
        pipe(question=["a?", "b?"], context=["c"])
    with pytest.raises(ValueError, match="input 1 lacks context"):
        pipe([{"question": "a?", "context": "c"}, {"question": "b?"}])


def test_question_too_long(tiny_tokenizer, peak_engine):
    pipe = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[128]))
    with pytest.raises(ValueError, match="65 tokens, more than max_question_length=64"):
        pipe(question=" ".join(["the"] * 65), context="the river")
    pipe(question=" ".join(["the"] * 64), context="the river")  # at the limit: fine
    small = _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]))
    with pytest.raises(ValueError, match="no room for context"):
        small(question=" ".join(["the"] * 13), context="the river")


def test_engine_contract_is_checked_at_construction(tiny_tokenizer, peak_engine):
    with pytest.raises(ValueError, match=r"outputs \['logits'\]"):
        _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16], output_names=["logits"]))
    with pytest.raises(ValueError, match="unknown .'position_ids'"):
        _pipeline(
            tiny_tokenizer,
            peak_engine(
                5, 5, buckets=[16], input_names=["input_ids", "attention_mask", "position_ids"]
            ),
        )
    with pytest.raises(ValueError, match="missing .'attention_mask'"):
        _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16], input_names=["input_ids"]))
    with pytest.raises(ValueError, match="doc_stride"):
        _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]), doc_stride=16)
    with pytest.raises(ValueError, match="max_answer_length"):
        _pipeline(tiny_tokenizer, peak_engine(5, 5, buckets=[16]), max_answer_length=0)


def test_padding_settings_of_the_tokenizer_file(
    tiny_tokenizer, peak_engine, recording_engine, tmp_path
):
    # A tokenizer.json saved with padding on: its pad id is used, its padding is not (windows are
    # padded per bucket by the pipeline).
    tokenizer = Tokenizer.from_file(tiny_tokenizer)
    tokenizer.enable_padding(pad_id=3, pad_token="[UNK]", length=64)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    river = _id(tiny_tokenizer, "river")
    engine = recording_engine(peak_engine(river, river, buckets=[16, 64]))
    pipe = _pipeline(str(path), engine)
    assert pipe.pad_id == 3
    assert pipe(question="where?", context="the river").answer == "river"
    assert engine.calls == [(1, 16)]
    assert _pipeline(tiny_tokenizer, peak_engine(river, river, buckets=[16])).pad_id == 1
