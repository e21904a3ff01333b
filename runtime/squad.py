"""SQuAD data and the official SQuAD evaluation (v1.1 and v2.0), plus a driver that scores a
question-answering pipeline on a SQuAD file.

The metrics reproduce the official scripts (`evaluate-v1.1.py`, `evaluate-v2.0.py` from
rajpurkar/SQuAD-explorer): answers are normalized (lower case, punctuation removed, articles
a/an/the removed, whitespace collapsed), exact match and token F1 take the maximum over the gold
answers, and totals are percentages (x100). One deliberate difference: a question without a
prediction scores 0 in both versions and is counted in `missing` (the v1.1 script does the same
and warns; the v2.0 script would fail or skip it).
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "SquadQuestion",
    "evaluate",
    "evaluate_pipeline",
    "evaluate_predictions",
    "exact_match_score",
    "f1_score",
    "iter_squad",
    "load_squad",
    "normalize_answer",
]


@dataclass(frozen=True)
class SquadQuestion:
    """One question of a SQuAD file. `answers` holds the gold answer texts, in file order; it is
    empty for an unanswerable SQuAD v2.0 question."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]


def iter_squad(data: Mapping[str, Any]) -> Iterator[SquadQuestion]:
    """The questions of a parsed SQuAD json (v1.1 or v2.0 layout: data / paragraphs / qas), in file
    order."""
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = tuple(answer["text"] for answer in qa.get("answers", []))
                yield SquadQuestion(qa["id"], qa["question"], context, answers)


def load_squad(path: str | Path) -> list[SquadQuestion]:
    """All questions of a SQuAD json file, in file order."""
    with open(path, encoding="utf-8") as file:
        return list(iter_squad(json.load(file)))


# -- the official metrics ----------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace; in the
    official order (articles are matched after punctuation is gone)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalized answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, *, version: int = 1) -> float:
    """Token F1 of the normalized answers (bag of words). When either normalizes to nothing:
    version 2 scores 1.0 if both do, else 0.0 (how v2.0 scores no-answer gold); version 1 scores
    0.0, as the v1.1 script does."""
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if version == 2 and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def evaluate(
    questions: list[SquadQuestion], predictions: Mapping[str, str], version: int = 1
) -> dict[str, float | int]:
    """SQuAD metrics of `predictions` (question id -> answer text) on `questions`.

    version 1 (v1.1): `exact_match`, `f1` over all questions; every question needs a gold answer.
    version 2 (v2.0): gold answers that normalize to nothing are dropped and a question left with
    none has the gold [""] (only the empty prediction is right); adds `has_answer_*` and
    `no_answer_*` (the official `HasAns_*` / `NoAns_*`) for the subsets that are present.
    Always: `total` (questions), `missing` (questions without a prediction; they score 0).
    Scores are percentages, not rounded.
    """
    if version not in (1, 2):
        raise ValueError(f"version must be 1 (SQuAD v1.1) or 2 (SQuAD v2.0), got {version!r}")
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    missing = 0
    for question in questions:
        gold = list(question.answers)
        has_answer[question.id] = bool(gold)
        if version == 2:
            gold = [answer for answer in gold if normalize_answer(answer)] or [""]
        elif not gold:
            raise ValueError(
                f"question {question.id} has no gold answer; evaluate SQuAD v2.0 data with "
                "version=2"
            )
        prediction = predictions.get(question.id)
        if prediction is None:
            missing += 1
            exact[question.id] = f1[question.id] = 0.0
            continue
        exact[question.id] = max(exact_match_score(prediction, answer) for answer in gold)
        f1[question.id] = max(f1_score(prediction, answer, version=version) for answer in gold)

    def percent(scores: dict[str, float], ids: list[str]) -> float:
        return 100.0 * sum(scores[i] for i in ids) / len(ids) if ids else 0.0

    ids = [question.id for question in questions]
    metrics: dict[str, float | int] = {
        "exact_match": percent(exact, ids),
        "f1": percent(f1, ids),
        "total": len(ids),
        "missing": missing,
    }
    if version == 2:
        for name, subset in (
            ("has_answer", [i for i in ids if has_answer[i]]),
            ("no_answer", [i for i in ids if not has_answer[i]]),
        ):
            if subset:
                metrics[f"{name}_exact_match"] = percent(exact, subset)
                metrics[f"{name}_f1"] = percent(f1, subset)
                metrics[f"{name}_total"] = len(subset)
    return metrics


def evaluate_predictions(
    dataset_path: str | Path, predictions: Mapping[str, str], version: int = 1
) -> dict[str, float | int]:
    """`evaluate` on the questions of a SQuAD json file."""
    return evaluate(load_squad(dataset_path), predictions, version)


# -- scoring a pipeline ------------------------------------------------------------------------


class _AnswersPairs(Protocol):
    version_2_with_negative: bool

    def __call__(self, *, question: list[str], context: list[str]) -> list[Any]: ...


def evaluate_pipeline(
    pipeline: _AnswersPairs,
    dataset_path: str | Path,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    version: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, float | int], dict[str, str]]:
    """Answer the questions of a SQuAD file with `pipeline` and score them.

    `pipeline` is a `QuestionAnsweringPipeline` (anything called as
    `pipeline(question=[...], context=[...])` that returns answers with `.answer`). Questions go in
    file order, `batch_size` per call (so the engine sees all their windows at once); `limit` keeps
    the first questions only, and the metrics cover those. `version` defaults to 2 when the
    pipeline has `version_2_with_negative`, else 1. `progress(done, total)` is called after each
    batch.

    Returns (metrics, predictions): the metrics of `evaluate` plus `seconds` (wall time in the
    pipeline) and `questions_per_second`; predictions map question id -> answer text, the format
    of the official scripts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    questions = load_squad(dataset_path)
    if limit is not None:
        questions = questions[:limit]
    if version is None:
        version = 2 if getattr(pipeline, "version_2_with_negative", False) else 1

    predictions: dict[str, str] = {}
    seconds = 0.0
    for first in range(0, len(questions), batch_size):
        batch = questions[first : first + batch_size]
        began = time.perf_counter()
        answers = pipeline(question=[q.question for q in batch], context=[q.context for q in batch])
        seconds += time.perf_counter() - began
        for question, answer in zip(batch, answers):
            predictions[question.id] = answer.answer
        if progress is not None:
            progress(first + len(batch), len(questions))

    metrics = evaluate(questions, predictions, version)
    metrics["seconds"] = seconds
    metrics["questions_per_second"] = len(questions) / seconds if seconds > 0 else 0.0
    return metrics, predictions
