"""The SQuAD evaluator reproduces the official scripts (v1.1 and v2.0)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sqc.runtime.squad import (
    SquadQuestion,
    evaluate,
    evaluate_pipeline,
    evaluate_predictions,
    exact_match_score,
    f1_score,
    load_squad,
    normalize_answer,
)


def test_reference_predictions_score_the_published_numbers(squad_dev, squad_reference_predictions):
    # Google's BERT-large ensemble: EM 86.21 / F1 92.20 on SQuAD v1.1 dev (official leaderboard).
    predictions = json.loads(squad_reference_predictions.read_text(encoding="utf-8"))
    metrics = evaluate_predictions(squad_dev, predictions, version=1)
    assert metrics["total"] == 10570 and metrics["missing"] == 0
    assert round(metrics["exact_match"], 2) == 86.21
    assert round(metrics["f1"], 2) == 92.20


def test_load_squad_reads_every_question(squad_dev):
    questions = load_squad(squad_dev)
    assert len(questions) == 10570
    assert sum(len(q.answers) for q in questions) == 34726
    assert len({q.id for q in questions}) == 10570


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  a   cat, an  apple and the  dog. ", "cat apple and dog"),
        ("theory", "theory"),  # articles are whole words only
        ("the-end", "theend"),  # punctuation goes before articles are matched
        ("Café", "café"),  # only ASCII punctuation goes; accents stay
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_and_f1():
    assert exact_match_score("the Broncos", "Broncos.") == 1.0
    assert exact_match_score("Denver Broncos", "Broncos") == 0.0
    # precision 1/2, recall 1/1 -> F1 2/3
    assert f1_score("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    assert f1_score("Carolina Panthers", "Broncos") == 0.0
    assert f1_score("", "Broncos") == 0.0
    # An empty prediction against no-answer gold: v2.0 scores 1, v1.1 scores 0.
    assert f1_score("", "", version=2) == 1.0
    assert f1_score("", "", version=1) == 0.0


def _v2_file(tmp_path):
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "Mark is batman. Bruce is not.",
                        "qas": [
                            {
                                "id": "has",
                                "question": "Who is Mark?",
                                "answers": [{"text": "batman", "answer_start": 8}],
                                "is_impossible": False,
                            },
                            {
                                "id": "none",
                                "question": "Who is Alfred?",
                                "answers": [],
                                "plausible_answers": [{"text": "Bruce", "answer_start": 16}],
                                "is_impossible": True,
                            },
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_v2_scores_no_answer_questions_and_breaks_down(tmp_path):
    path = _v2_file(tmp_path)
    right = evaluate_predictions(path, {"has": "batman", "none": ""}, version=2)
    assert right["exact_match"] == 100.0 and right["f1"] == 100.0
    assert right["has_answer_total"] == 1 and right["no_answer_total"] == 1

    wrong = evaluate_predictions(path, {"has": "", "none": "Bruce"}, version=2)
    assert wrong["exact_match"] == 0.0 and wrong["f1"] == 0.0
    assert wrong["has_answer_exact_match"] == 0.0 and wrong["no_answer_f1"] == 0.0

    half = evaluate_predictions(path, {"has": "batman", "none": "Bruce"}, version=2)
    assert half["exact_match"] == 50.0
    assert half["has_answer_exact_match"] == 100.0 and half["no_answer_exact_match"] == 0.0


def test_v1_refuses_questions_without_gold(tmp_path):
    with pytest.raises(ValueError, match="version=2"):
        evaluate_predictions(_v2_file(tmp_path), {"has": "batman", "none": ""}, version=1)


def test_missing_predictions_score_zero():
    questions = [
        SquadQuestion("a", "q", "c", ("x",)),
        SquadQuestion("b", "q", "c", ("y",)),
    ]
    metrics = evaluate(questions, {"a": "x"})
    assert metrics == {"exact_match": 50.0, "f1": 50.0, "total": 2, "missing": 1}
    with pytest.raises(ValueError, match="version"):
        evaluate(questions, {}, version=3)


def test_evaluate_pipeline_batches_and_reports_throughput(tmp_path):
    calls = []

    def pipeline(*, question, context):
        calls.append(len(question))
        return [SimpleNamespace(answer="batman") for _ in question]

    pipeline.version_2_with_negative = True
    progress = []
    metrics, predictions = evaluate_pipeline(
        pipeline, _v2_file(tmp_path), batch_size=1, progress=lambda d, n: progress.append((d, n))
    )
    assert calls == [1, 1] and progress == [(1, 2), (2, 2)]
    assert predictions == {"has": "batman", "none": "batman"}
    assert metrics["exact_match"] == 50.0  # version 2 chosen from the pipeline
    assert metrics["questions_per_second"] > 0 and metrics["seconds"] >= 0

    metrics, predictions = evaluate_pipeline(pipeline, _v2_file(tmp_path), limit=1, version=1)
    assert list(predictions) == ["has"] and metrics["total"] == 1
