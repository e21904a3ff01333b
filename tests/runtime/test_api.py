"""The public API as users coming from DeepSparse and Hugging Face write it."""

from __future__ import annotations

import pytest

import sqc
from tests.conftest import FIXTURES

TOKENIZER = FIXTURES / "tiny-bert-tokenizer.json"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "tiny"
    return sqc.compile_model(
        FIXTURES / "bert_qa_opset17.onnx", [32, 64], out, max_batch_size=8, tokenizer=TOKENIZER
    )


@pytest.mark.parametrize("task", ["question-answering", "qa", "question_answering"])
def test_pipeline_create_aliases(artifact, task):
    qa = sqc.Pipeline.create(task=task, model_path=artifact, max_answer_length=10)
    out = qa(question="who is mark?", context="mark is batman.")
    assert isinstance(out, sqc.QuestionAnsweringOutput)
    assert "mark is batman."[out.start : out.end] == out.answer
    assert qa.max_answer_length == 10


def test_pipeline_constructor_and_sequence_length_picks_buckets(artifact):
    qa = sqc.Pipeline("question-answering", model_path=artifact, sequence_length=32)
    assert qa.buckets == [32]
    outs = qa(question=["who?", "what?"], context=["mark is batman.", "a cat sat."])
    assert len(outs) == 2


def test_pipeline_from_onnx_compiles_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SQC_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    model.write_bytes((FIXTURES / "bert_qa_opset17.onnx").read_bytes())
    (tmp_path / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
    messages = []
    qa = sqc.Pipeline.create(model_path=model, sequence_length=[32, 64], progress=messages.append)
    assert qa.engine.buckets == [32, 64] and any("build C" in m for m in messages)
    messages.clear()
    sqc.Pipeline.create(model_path=model, sequence_length=[32, 64], progress=messages.append)
    assert messages and all("reusing" in m for m in messages)


def test_pipeline_errors(artifact):
    with pytest.raises(ValueError, match="task 'summarization'"):
        sqc.Pipeline.create(task="summarization", model_path=artifact)
    with pytest.raises(FileNotFoundError):
        sqc.Pipeline.create(model_path="/nonexistent/model.onnx")
    qa = sqc.Pipeline.create(model_path=artifact)
    with pytest.raises(TypeError, match="question"):
        qa(question=3, context="x")
    with pytest.raises(ValueError, match="question is empty"):
        qa(question="", context="x")


def test_engine_from_top_level(artifact):
    from sqc.runtime.engine import generate_random_inputs

    engine = sqc.Engine(artifact)
    start, end = engine(generate_random_inputs(engine, 2, 32))
    assert start.shape == end.shape == (2, 32)
