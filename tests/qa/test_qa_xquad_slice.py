"""The first 200 XQuAD-en questions through the pipeline and the SQuAD evaluator.

The MiniLM model's reference.json gives EM 42.77 / F1 57.75 on all 1,190 questions (windows 384,
stride 128, n_best 20, max_answer_length 30); this pipeline reproduces those figures exactly on the
full set. On the first 200 questions the same settings give EM 46.00 / F1 55.96; the band below
allows a few answers to flip where another CPU rounds logits differently (one answer = 0.5 EM).
"""

from __future__ import annotations

from sqc.runtime.qa import QuestionAnsweringPipeline
from sqc.runtime.squad import evaluate_pipeline


def test_first_200_xquad_questions(minilm_engine, minilm_tokenizer, xquad_en):
    pipe = QuestionAnsweringPipeline(
        minilm_engine, minilm_tokenizer, sequence_length=[128, 384], max_answer_length=30
    )
    metrics, predictions = evaluate_pipeline(pipe, xquad_en, limit=200, batch_size=32)
    assert metrics["total"] == 200 and len(predictions) == 200 and metrics["missing"] == 0
    assert abs(metrics["exact_match"] - 46.00) <= 1.5, metrics
    assert abs(metrics["f1"] - 55.96) <= 1.5, metrics
    assert metrics["questions_per_second"] > 0
