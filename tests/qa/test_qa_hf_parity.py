"""The sqc QA pipeline on a compiled model against Hugging Face and against an own reference.

1. Single window: the tiny fixture BERT (`bert_qa_opset17.onnx`, compiled by sqc) answers like
   `transformers.pipeline("question-answering")` on the same torch model (rebuilt with
   `examples/export_fixtures.py`'s `build_model`) and the same tokenizer, wrapped as a
   `PreTrainedTokenizerFast`. Same text, start and end. The scores differ by design: transformers
   reports a softmax probability, sqc the raw start logit + end logit, which is checked against the
   torch model's logits at the answer's tokens.
2. Several windows: for contexts of 1,000 to 25,000 characters, the answer is the best span by raw
   score over all windows, decoded here independently (transformers' tokenizer for the windows,
   onnxruntime on each window unpadded for the logits, a small n-best decode written out below),
   and the windows of one request reach the compiled engine in batches of `max_batch_size`.

The fixture model has 64 position embeddings, so the buckets are 32 and 64 (a 256-token bucket
cannot be compiled for it) and a window is at most 64 tokens. Its weights are random: answers are
arbitrary spans, which is fine for a parity test.

Needs torch and transformers (not project dependencies): skipped without them.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sqc.runtime.qa import QuestionAnsweringPipeline
from sqc.runtime.reference import OnnxRuntimeEngine

# transformers 4.x's QA postprocessing trips a numpy 2 deprecation (np.array(p_mask), copy=False)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
EXPORT_SCRIPT = REPO / "examples" / "export_fixtures.py"
MODEL_NAME = "bert_qa_opset17.onnx"
BUCKETS = [32, 64]  # the model's max_position_embeddings is 64
MAX_SEQ = BUCKETS[-1]
MAX_BATCH = 8
MAX_ANSWER_LEN = 15
N_BEST = 20  # the pipeline's n_best_size (DESIGN.md "QA semantics")

# (question, context): each fits one window of 64 tokens (asserted below).
SINGLE_WINDOW_CASES = [
    ("who was the king?", "the king was old."),
    ("where?", "in london."),
    ("what was released?", "the band released a new album in the summer of 1984."),
    (
        "who played the music?",
        "the music was played by the national orchestra of the city, and later by a small band.",
    ),
    ("what happened?", "The Film Was Released In The United States And Europe."),
    ("which river?", "the  river\tnear   the\n\ncity is   long and   wide ."),
    ("when was she born?", "   she was born in paris in 1950, then moved to new york.   "),
    ("what did he eat?", "he ate a crêpe at the café near the old station, très bon."),
    ("who wrote it?", "the novel was written by José García Márquez, an author from Colombia."),
    (
        "what state?",
        "the e\u0301tat of the nation was strong; the army was large and the king rich.",
    ),
    ("where is the city?", "東京 is a city in japan, near the sea and the mountains."),
    ("what is the weather?", "the weather today is warm 🙂 and the sun is bright over the lake."),
    ("how many?", "there were 12,345 people, 6 dogs and 3.5 million birds in the park."),
    ("what is the code?", "the code is x-42/b (version 7), used by the software system."),
    ("what color?", "red, blue, green: the colors of the flag were chosen by the king."),
    (
        "who leads?",
        (
            "the president leads the government, and the party holds most seats in the national "
            "election. the court and the army follow the law of the land."
        ),
    ),
    ("name?", "Zyxwvut Qwerty"),
    (
        "what did the team win?",
        (
            "after a long season the team won the league title, then the final game against the "
            "club from the north, and the players and fans went home happy that night."
        ),
    ),
    ("which language?", "they speak english, french and german; some speak spanish or italian."),
    (
        "who reported it?",
        (
            "the international university, originally created by the federal government, currently "
            "offers several different programs including science, history, languages and technical "
            "courses; the president reported that information about services is especially "
            "important, particularly for american children."
        ),
    ),
]

NEEDLE = "The secret code word of the old museum is pineapple, said the king."
QUESTION_LONG = "what is the secret code word of the museum?"
# vocabulary words of the tiny tokenizer, for the filler sentences
SENTENCE_WORDS = (
    "the city river team king music film album school church road station park village "
    "army court party game season night summer winter north south old new small large "
    "played released built moved won lost opened closed wrote sold found held"
)


@pytest.fixture(scope="session")
def export_fixtures():
    spec = importlib.util.spec_from_file_location("sqc_export_fixtures", EXPORT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def torch_model(export_fixtures):
    return export_fixtures.build_model(MODEL_NAME)


@pytest.fixture(scope="session")
def hf_tokenizer(tiny_tokenizer):
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=tiny_tokenizer,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=MAX_SEQ,
        padding_side="right",
    )


@pytest.fixture(scope="session")
def hf_pipeline(torch_model, hf_tokenizer):
    return transformers.pipeline(
        "question-answering", model=torch_model, tokenizer=hf_tokenizer, device="cpu"
    )


@pytest.fixture(scope="session")
def sqc_engine(compile_onnx, fixture_models):
    return compile_onnx(fixture_models / MODEL_NAME, BUCKETS, max_batch_size=MAX_BATCH)


def _hf_options(pipe) -> dict:
    options = {
        "top_k": 1,
        "max_answer_len": MAX_ANSWER_LEN,
        "handle_impossible_answer": False,
        "max_seq_len": MAX_SEQ,
        "doc_stride": MAX_SEQ // 2,
    }
    if "align_to_words" in inspect.signature(pipe._sanitize_parameters).parameters:
        options["align_to_words"] = False  # keep the tokens' own offsets, as sqc does
    return options


def _token_index(encoding, start: int, end: int) -> tuple[int, int]:
    """The context tokens of a pair encoding whose offsets begin at `start` and end at `end`."""
    context = [i for i, s in enumerate(encoding.sequence_ids) if s == 1]
    first = [i for i in context if encoding.offsets[i][0] == start]
    last = [i for i in context if encoding.offsets[i][1] == end]
    assert first and last, (start, end)
    return first[0], last[-1]


def test_single_window_matches_transformers_pipeline(
    sqc_engine, tiny_tokenizer, hf_tokenizer, hf_pipeline, torch_model
):
    pipe = QuestionAnsweringPipeline(sqc_engine, tiny_tokenizer, max_answer_length=MAX_ANSWER_LEN)
    options = _hf_options(hf_pipeline)
    ours = pipe(
        question=[q for q, _ in SINGLE_WINDOW_CASES], context=[c for _, c in SINGLE_WINDOW_CASES]
    )
    assert len(SINGLE_WINDOW_CASES) == 20
    for (question, context), got in zip(SINGLE_WINDOW_CASES, ours):
        encoded = hf_tokenizer(question, context, return_tensors="pt")
        assert encoded["input_ids"].shape[1] <= MAX_SEQ, "the case must fit one window"
        assert 10 <= len(context) <= 300

        want = hf_pipeline(question=question, context=context, **options)
        assert (got.answer, got.start, got.end) == (want["answer"], want["start"], want["end"]), (
            question,
            context,
        )
        assert context[got.start : got.end] == got.answer and got.answer

        # transformers scores a softmax probability; sqc the raw start + end logit.
        s, e = _token_index(encoded.encodings[0], got.start, got.end)
        with torch.no_grad():
            out = torch_model(**encoded)
        logit_sum = float(out.start_logits[0, s] + out.end_logits[0, e])
        assert got.score == pytest.approx(logit_sum, abs=1e-3)


# -- several windows --------------------------------------------------------------------------


def _long_context(n_chars: int, seed: int) -> str:
    """Seeded random sentences (no two windows alike) with NEEDLE in the middle, n_chars long."""
    rng = random.Random(seed)
    sentences: list[str] = []
    total = 0
    while total < n_chars - len(NEEDLE):
        words = rng.choices(SENTENCE_WORDS.split(), k=rng.randint(5, 12))
        sentence = " ".join(words).capitalize() + f" in {rng.randint(1800, 2020)}."
        sentences.append(sentence)
        total += len(sentence) + 1
    sentences.insert(len(sentences) // 2, NEEDLE)
    return " ".join(sentences)[:n_chars]


def _reference_answer(question, context, hf_tokenizer, ort_engine, stride):
    """Best span by start + end logit over all windows, decoded here (not by sqc's pipeline).

    Windows: transformers' tokenizer, `max_length` 64 tokens overlapping by `stride` (truncating
    the context only). Logits: onnxruntime on each window alone, unpadded. Candidates per window:
    the N_BEST best starts x the N_BEST best ends among context tokens, start <= end, at most
    MAX_ANSWER_LEN tokens. The best candidate of all windows wins, the earlier on a tie.
    Returns (answer, start, end, score, window lengths).
    """
    encoded = hf_tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=MAX_SEQ,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    best = (-math.inf, None, None, None)
    lengths = []
    for w, encoding in enumerate(encoded.encodings):
        ids = np.asarray(encoding.ids, dtype=np.int64)[None]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.asarray(encoding.type_ids, dtype=np.int64)[None],
        }
        start_logits, end_logits = (x[0] for x in ort_engine.run(feeds))
        lengths.append(ids.shape[1])
        context_tokens = np.array([i for i, s in enumerate(encoding.sequence_ids) if s == 1])
        by_start = context_tokens[np.argsort(-start_logits[context_tokens], kind="stable")][:N_BEST]
        by_end = context_tokens[np.argsort(-end_logits[context_tokens], kind="stable")][:N_BEST]
        for s in by_start:
            for e in by_end:
                if s <= e < s + MAX_ANSWER_LEN:
                    score = float(start_logits[s]) + float(end_logits[e])
                    if score > best[0]:
                        best = (score, w, s, e)
    score, w, s, e = best
    offsets = encoded.encodings[w].offsets
    start, end = offsets[s][0], offsets[e][1]
    return context[start:end], start, end, score, lengths


@pytest.mark.parametrize("n_chars", [1_000, 5_000, 25_000])
def test_best_span_across_windows_and_batched_calls(
    n_chars, sqc_engine, fixture_models, tiny_tokenizer, hf_tokenizer, recording_engine
):
    context = _long_context(n_chars, seed=n_chars)
    assert len(context) == n_chars and context.count("pineapple") == 1

    engine = recording_engine(sqc_engine)
    pipe = QuestionAnsweringPipeline(engine, tiny_tokenizer, max_answer_length=MAX_ANSWER_LEN)
    got = pipe(question=QUESTION_LONG, context=context)

    # onnxruntime accepts any length up to 64, so each window runs alone, unpadded
    ort_engine = OnnxRuntimeEngine(fixture_models / MODEL_NAME, list(range(1, MAX_SEQ + 1)), 1, 1)
    answer, start, end, score, lengths = _reference_answer(
        QUESTION_LONG, context, hf_tokenizer, ort_engine, stride=pipe.doc_stride
    )
    assert len(lengths) > 1
    assert (got.answer, got.start, got.end) == (answer, start, end)
    assert got.score == pytest.approx(score, abs=1e-3)

    # every window went through the engine once, in full batches per bucket
    windows_per_bucket = Counter(min(b for b in BUCKETS if b >= n) for n in lengths)
    calls_per_bucket = Counter(seq for _, seq in engine.calls)
    rows_per_bucket = Counter()
    for batch, seq in engine.calls:
        rows_per_bucket[seq] += batch
        assert batch <= MAX_BATCH
    assert rows_per_bucket == windows_per_bucket
    for bucket, windows in windows_per_bucket.items():
        assert calls_per_bucket[bucket] <= math.ceil(windows / MAX_BATCH)
