"""Property tests of the question-answering pipeline and the server's JSON with hostile text:
any unicode (control characters, NUL, right-to-left text, emoji with joiners, combining marks,
lone surrogates), empty and blank strings, and very long ones.

The contract (README, "Question answering"): a blank question or context, text with a lone
surrogate (not valid unicode: the tokenizer cannot take it), or a question over
`max_question_length` tokens or with no room left for context, is a ValueError naming the
problem; anything else gets an answer with `context[start:end] == answer`. Over HTTP, no input
gets a 500, and every error is JSON `{"error": ...}`.

The server's documented routes are already fuzzed from its OpenAPI document by
tests/server/test_fuzz.py (schemathesis, valid and invalid bodies); the test here adds what a
schema does not generate: arbitrary JSON values and nesting, bodies that are not UTF-8 or not
JSON, and lone surrogates in JSON string escapes.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqc import Pipeline

EXAMPLES = 150

HOSTILE = [
    "\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\u200d", "\u200e", "\u200f",
    "\u202e", "\u2028", "\ufeff", "\ufffd", "\uffff", "\U0010ffff", "\ud800", "\udfff",
    "\u0301", "\u0651", "ש", "ל", "ו", "م", "ر", "ح", "ب", "ا", "🧑\u200d🚀", "👍🏽", "🇫🇷",
    "\t", "\n", "\r", " ", "\u3000", "中", "文", "ﬁ", "Å", "ß", "İ", "a", "b", "the", ".",
]  # fmt: skip
text = st.one_of(
    st.lists(st.sampled_from(HOSTILE), max_size=40).map("".join),
    st.text(st.characters(codec=None), max_size=60),  # any code point, surrogates included
    st.text(max_size=200),
    st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "\u202e", "🙂", "\x00"])).map(
        " ".join
    ),
)


def _surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


@pytest.fixture(scope="module")
def qa(tiny_artifact):
    return Pipeline.create(model_path=tiny_artifact)


def _check_answer(question: str, context: str, call) -> str:
    """How one call ended: 'answer', 'empty' (blank input), 'not unicode' (a lone surrogate),
    'too long' (a question over the limits); fails the test on anything else."""
    try:
        out = call()
    except ValueError as e:
        message = str(e)
        for field, value in (("question", question), ("context", context)):
            if not value.strip():
                assert message == f"{field} is empty"
                return "empty"
            if _surrogate(value):
                assert message.startswith(f"{field} is not valid unicode: a lone surrogate")
                return "not unicode"
        assert "max_question_length" in message or "no room for context" in message, message
        return "too long"
    assert question.strip() and context.strip()
    assert not _surrogate(question) and not _surrogate(context)
    assert 0 <= out.start <= out.end <= len(context)
    assert context[out.start : out.end] == out.answer
    assert isinstance(out.score, float) and not math.isnan(out.score)
    return "answer"


@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(question=text, context=text)
def test_any_text_gets_an_answer_or_a_clear_error(qa, question, context, request):
    ended = _check_answer(question, context, lambda: qa(question=question, context=context))
    tally = request.config.stash.setdefault(_TALLY, {})
    tally[ended] = tally.get(ended, 0) + 1


_TALLY = pytest.StashKey[dict]()


def test_tally_of_the_property_test(request):
    """Prints how the property test's examples ended (when it ran before this test)."""
    tally = request.config.stash.get(_TALLY, {})
    print(f"\nhostile QA text: {sum(tally.values())} calls: {tally}")


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(pairs=st.lists(st.tuples(text, text), min_size=1, max_size=6))
def test_batches_of_hostile_pairs(qa, pairs):
    if any(not q.strip() or not c.strip() for q, c in pairs):
        with pytest.raises(ValueError, match="is empty|not valid unicode"):
            qa(question=[q for q, _ in pairs], context=[c for _, c in pairs])
        return
    try:
        answers = qa(question=[q for q, _ in pairs], context=[c for _, c in pairs])
    except ValueError as e:
        assert any(
            m in str(e) for m in ("max_question_length", "no room for context", "not valid unicode")
        ), e
        return
    assert len(answers) == len(pairs)
    for (_, context), out in zip(pairs, answers):
        assert context[out.start : out.end] == out.answer


EDGE_CASES = {
    "blank-question": ("", "context"),
    "whitespace-question": ("   \t\n", "context"),
    "empty-context": ("q?", ""),
    "unicode-blank-context": ("q?", "\u3000\u2028 \n"),
    "nul-context": ("What?", "\x00" * 5000),
    "many-windows": ("What?", "the cat sat on the mat. " * 200),  # 4,800 characters
    "emoji-zwj": ("What?", "🧑\u200d🚀" * 3000),
    "rtl-override": ("What?", "\u202eשלום עולם " * 1000),
    "lone-surrogates": ("\ud800?", "lone \udfff surrogates"),
    "long-question": ("the " * 200, "a long question"),
    "one-100k-word": ("What?", "x" * 100_000),
}


@pytest.mark.parametrize("question,context", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases(qa, question, context):
    _check_answer(question, context, lambda: qa(question=question, context=context))


# ------------------------------------------------------------------ the server's JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["question", "context", "x", ""]) | text, children, max_size=4
        )
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity as Python writes them
    st.fixed_dictionaries({"question": text, "context": text}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b'{"question": "\\ud800", "context": "\\udfff x"}',
            b'{"question": "q", "context": "' + b"\\u0000" * 10 + b'"}',
            b"[" * 5000 + b"]" * 5000,
            b'{"question": "q", "context": "c"' + b", " * 3 + b"}",
            b"\xff\xfe{\x00}",
            b'{"question": 1e999, "context": -1e999}',
        ]
    ),
)


@pytest.fixture(scope="module")
def client(tiny_artifact):
    from sqc.server import create_app

    app = create_app({"endpoints": [{"model": str(tiny_artifact)}], "max_context_chars": 2000})
    yield app.test_client()
    app.extensions["sqc"].close()


@settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(body=bodies)
def test_server_answers_any_body_without_a_500(client, body):
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code < 500, (body[:200], response.get_data()[:300])
    payload = response.get_json()
    if response.status_code >= 400:
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str)
    else:
        answers = payload if isinstance(payload, list) else [payload]
        assert all(set(a) == {"score", "answer", "start", "end"} for a in answers)


def test_a_lone_surrogate_over_http_is_a_422_that_says_so(client):
    body = b'{"question": "Who?", "context": "Mark \\udc00 is batman."}'
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 422
    assert "context is not valid unicode: a lone surrogate" in response.get_json()["error"]
