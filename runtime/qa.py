"""Extractive question answering around any engine: tokenize, window, route, batch, decode.

Data moves one way through `QuestionAnsweringPipeline.__call__`:

1. validate: question and context are strings; the question is not blank and has at most
   `max_question_length` tokens; the context is not blank.
2. tokenize: `[CLS] question [SEP] context [SEP]` with `tokenizers`, truncating the context only
   ("only_second") into windows of the largest bucket that overlap by `doc_stride` tokens, as the
   Hugging Face fast tokenizer does with `return_overflowing_tokens=True, stride=doc_stride`.
3. route and batch: each window goes to the smallest bucket that holds its exact token length,
   padded with the pad id and attention mask 0. Windows of every question in the call are grouped
   by bucket and sent to the engine in chunks of at most `engine.max_batch_size`.
4. decode: per window, the `n_best_size` best start and end context tokens by logit form the
   candidate spans (start <= end, at most `max_answer_length` tokens); a span scores
   start logit + end logit (raw logits, not softmax probabilities); the best span over all
   windows of a question wins (the earlier window on a tie) and is mapped to character offsets
   of the context through the tokenizer's offsets (code points of the str as given, so accents,
   CJK, emoji and runs of whitespace map back exactly; combining marks that an accent-stripping
   normalizer drops after the last token are kept with the answer).

These are the post-processing semantics of Hugging Face's `run_qa.py` (`postprocess_qa_predictions`)
and of DeepSparse's question-answering pipeline. On a single window they pick the same span as the
transformers 4.x question-answering pipeline (whose softmax is constant per window), except that
the transformers pipeline widens a span that starts or ends inside a word to whole words, while
this pipeline keeps the tokens' own offsets.

The engine is anything with `buckets`, `max_batch_size`, `input_names`, `output_names` and
`run(inputs) -> outputs` (see `QuestionAnsweringEngine`): the compiled `Engine` and the reference
`OnnxRuntimeEngine` both qualify.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

__all__ = [
    "QuestionAnsweringEngine",
    "QuestionAnsweringOutput",
    "QuestionAnsweringPipeline",
    "default_doc_stride",
]

# The engine inputs the pipeline knows how to fill. input_ids and attention_mask are required:
# windows are padded up to their bucket, and without a mask the model would attend to the padding.
KNOWN_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
REQUIRED_INPUT_NAMES = ("input_ids", "attention_mask")
REQUIRED_OUTPUT_NAMES = ("start_logits", "end_logits")

# Tried in order when the tokenizer file sets no padding: BERT family, RoBERTa family.
PAD_TOKEN_CANDIDATES = ("[PAD]", "<pad>")


class QuestionAnsweringEngine(Protocol):
    """What the pipeline needs from an engine.

    `run` takes int64 arrays [batch, S] with S in `buckets` and batch <= `max_batch_size`, keyed
    by `input_names`, and returns float arrays [batch, S] in `output_names` order.
    """

    buckets: list[int]
    max_batch_size: int
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class QuestionAnsweringOutput:
    """One answer.

    `score` is start logit + end logit of the chosen span (raw logits, not probabilities; only
    comparable between answers of the same model). `start` and `end` are character offsets into
    the context as given, end exclusive, so `context[start:end] == answer`. The empty answer
    ("no answer", or no candidate span at all) is `answer == ""` with `start == end == 0`.
    """

    score: float
    answer: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        """`{"score", "answer", "start", "end"}`, JSON-serializable."""
        return asdict(self)


def default_doc_stride(max_bucket: int) -> int:
    """The window overlap used when none is given: 128 tokens for windows of 384 tokens or more
    (the SQuAD convention), else half the window (64 for 128)."""
    return 128 if max_bucket >= 384 else max_bucket // 2


@dataclass
class _Window:
    """One window of one question: its tokens and where its context tokens lie."""

    request: int  # index of the (question, context) pair in the call
    encoding: Encoding
    context_begin: int  # context tokens are [context_begin, context_end) of the window
    context_end: int
    bucket: int


class QuestionAnsweringPipeline:
    """Answers questions about contexts with an extractive QA engine.

    Call with `question=str, context=str` for one `QuestionAnsweringOutput`; with
    `question=[...], context=[...]` (equal lengths) or a list of `{"question", "context"}` mappings
    for a list of them, in order. All windows of all questions of one call go through the engine
    together, grouped by bucket, in chunks of `engine.max_batch_size`.

    Parameters:
        engine: see `QuestionAnsweringEngine`. Its outputs must include `start_logits` and
            `end_logits`, its inputs `input_ids` and `attention_mask` (`token_type_ids` optional).
        tokenizer_path: a `tokenizer.json` for `tokenizers.Tokenizer.from_file`.
        sequence_length: one bucket or a list of buckets to use, each one of `engine.buckets`;
            default all of them. Windows are cut at the largest.
        doc_stride: overlap in tokens between consecutive windows; default
            `default_doc_stride(largest bucket)`. When a long question leaves no more than
            `doc_stride` context tokens in a window, the overlap for that question is half of what
            is left (the tokenizer cannot overlap windows by their whole length).
        max_answer_length: longest answer in tokens (15; 30 is the SQuAD evaluation convention).
        n_best_size: start and end candidates per window, the best by logit.
        max_question_length: longest question in tokens, special tokens not counted; a longer
            question is a ValueError, never silently truncated.
        version_2_with_negative: allow "no answer" (SQuAD v2.0). The null score of a question is
            the minimum over its windows of start_logit[0] + end_logit[0] (the [CLS] token); the
            answer is empty, with score = null score, when
            null score - best span score > `null_score_diff_threshold` (default 0.0).

    Errors (raised before anything runs, so a bad item fails its whole call):
        TypeError: question or context is not a str (the message names the field and the type).
        ValueError: the question is empty or blank ("question is empty"); the context is empty or
            blank ("context is empty"); the question is longer than `max_question_length` tokens or
            leaves no room for context in the largest bucket; the question or context is not valid
            unicode text (a lone surrogate, as a JSON "\\ud800" escape makes: "is not valid
            unicode").

    A context that is not blank but yields no context tokens (only characters the tokenizer drops,
    such as control characters) has no candidate span: its answer is the empty answer with
    score = null score.
    """

    def __init__(
        self,
        engine: QuestionAnsweringEngine,
        tokenizer_path: str | os.PathLike[str],
        *,
        sequence_length: int | Sequence[int] | None = None,
        doc_stride: int | None = None,
        max_answer_length: int = 15,
        n_best_size: int = 20,
        max_question_length: int = 64,
        version_2_with_negative: bool = False,
        null_score_diff_threshold: float = 0.0,
    ) -> None:
        self.engine = engine
        self._check_engine_names(engine)
        self.buckets = self._select_buckets(engine, sequence_length)
        self.max_bucket = self.buckets[-1]
        self.doc_stride = default_doc_stride(self.max_bucket) if doc_stride is None else doc_stride
        if not 0 <= self.doc_stride < self.max_bucket:
            raise ValueError(
                f"doc_stride must be in [0, {self.max_bucket}) for windows of {self.max_bucket} "
                f"tokens, got {self.doc_stride}"
            )
        for name, value in (
            ("max_answer_length", max_answer_length),
            ("n_best_size", n_best_size),
            ("max_question_length", max_question_length),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.max_answer_length = max_answer_length
        self.n_best_size = n_best_size
        self.max_question_length = max_question_length
        self.version_2_with_negative = bool(version_2_with_negative)
        self.null_score_diff_threshold = float(null_score_diff_threshold)

        self.tokenizer_path = str(tokenizer_path)
        tokenizer = Tokenizer.from_file(self.tokenizer_path)
        self.pad_id = self._find_pad_id(tokenizer)
        tokenizer.no_padding()  # windows are padded per bucket here, not by the tokenizer
        self.num_special_tokens = tokenizer.num_special_tokens_to_add(True)
        # Questions are measured alone, without special tokens, before any pair is encoded:
        # the pair tokenizer panics if the overlap does not fit beside the question.
        self._question_tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._question_tokenizer.no_truncation()
        self._tokenizer_json = tokenizer.to_str()
        self._pair_tokenizers: dict[int, Tokenizer] = {}
        self._pair_tokenizers_lock = threading.Lock()
        self._pair_tokenizer(self.doc_stride)

        names = engine.output_names
        self._start_index = names.index("start_logits")
        self._end_index = names.index("end_logits")
        self._input_names = list(engine.input_names)

    # -- construction helpers ------------------------------------------------------------------

    @staticmethod
    def _check_engine_names(engine: QuestionAnsweringEngine) -> None:
        outputs = list(engine.output_names)
        missing = [name for name in REQUIRED_OUTPUT_NAMES if name not in outputs]
        if missing:
            raise ValueError(
                f"a question-answering engine must output {list(REQUIRED_OUTPUT_NAMES)}; "
                f"this one outputs {outputs} (missing {missing})"
            )
        inputs = list(engine.input_names)
        unknown = [name for name in inputs if name not in KNOWN_INPUT_NAMES]
        missing = [name for name in REQUIRED_INPUT_NAMES if name not in inputs]
        if unknown or missing:
            raise ValueError(
                f"a question-answering engine takes {list(REQUIRED_INPUT_NAMES)} and optionally "
                f"token_type_ids; this one takes {inputs}"
                + (f" (unknown {unknown})" if unknown else "")
                + (f" (missing {missing})" if missing else "")
            )

    @staticmethod
    def _select_buckets(
        engine: QuestionAnsweringEngine, sequence_length: int | Sequence[int] | None
    ) -> list[int]:
        available = sorted(int(b) for b in engine.buckets)
        if not available:
            raise ValueError("the engine has no buckets")
        if sequence_length is None:
            return available
        if isinstance(sequence_length, (int, np.integer)):
            wanted = [int(sequence_length)]
        else:
            wanted = [int(b) for b in sequence_length]
        absent = [b for b in wanted if b not in available]
        if not wanted or absent:
            raise ValueError(
                f"sequence_length {sequence_length!r} must name buckets of the engine, "
                f"which has {available}"
            )
        return sorted(set(wanted))

    @staticmethod
    def _find_pad_id(tokenizer: Tokenizer) -> int:
        if tokenizer.padding is not None:
            return int(tokenizer.padding["pad_id"])
        for token in PAD_TOKEN_CANDIDATES:
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        # The value under attention_mask 0 does not change the logits of real tokens.
        return 0

    def _pair_tokenizer(self, stride: int) -> Tokenizer:
        """A tokenizer that cuts (question, context) into windows of the largest bucket that
        overlap by `stride` tokens; one per stride, made on first use."""
        tokenizer = self._pair_tokenizers.get(stride)
        if tokenizer is None:
            with self._pair_tokenizers_lock:
                tokenizer = self._pair_tokenizers.get(stride)
                if tokenizer is None:
                    tokenizer = Tokenizer.from_str(self._tokenizer_json)
                    tokenizer.enable_truncation(
                        self.max_bucket, stride=stride, strategy="only_second"
                    )
                    self._pair_tokenizers[stride] = tokenizer
        return tokenizer

    # -- call ----------------------------------------------------------------------------------

    def __call__(
        self,
        inputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        *,
        question: str | Sequence[str] | None = None,
        context: str | Sequence[str] | None = None,
    ) -> QuestionAnsweringOutput | list[QuestionAnsweringOutput]:
        """Answer one question (str arguments or one mapping) or a list of them (lists or a list
        of mappings). See the class docstring for semantics and errors."""
        pairs, single = _parse_call(inputs, question, context)
        answers = self.answer_pairs(pairs)
        return answers[0] if single else answers

    def answer_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[QuestionAnsweringOutput]:
        """Answer each (question, context) pair, in order, in one batched pass."""
        for question, context in pairs:
            _check_text("question", question)
            _check_text("context", context)
        if not pairs:
            return []
        windows = self._windows(pairs)
        logits = self._forward(windows)
        per_request: list[list[int]] = [[] for _ in pairs]
        for index, window in enumerate(windows):
            per_request[window.request].append(index)
        return [
            self._decode(
                pairs[request][1], [windows[i] for i in indices], [logits[i] for i in indices]
            )
            for request, indices in enumerate(per_request)
        ]

    # -- tokenize and route --------------------------------------------------------------------

    def _windows(self, pairs: Sequence[tuple[str, str]]) -> list[_Window]:
        questions = [question for question, _ in pairs]
        question_lengths = [
            len(encoding.ids)
            for encoding in self._question_tokenizer.encode_batch(
                questions, add_special_tokens=False
            )
        ]
        by_stride: dict[int, list[int]] = {}
        for request, length in enumerate(question_lengths):
            if length > self.max_question_length:
                raise ValueError(
                    f"question has {length} tokens, more than max_question_length="
                    f"{self.max_question_length}: {questions[request][:80]!r}"
                )
            context_budget = self.max_bucket - self.num_special_tokens - length
            if context_budget < 1:
                raise ValueError(
                    f"question has {length} tokens and leaves no room for context in the "
                    f"largest bucket ({self.max_bucket} tokens)"
                )
            # The tokenizer needs overlap < context tokens per window whenever it must cut.
            stride = self.doc_stride if self.doc_stride < context_budget else context_budget // 2
            by_stride.setdefault(stride, []).append(request)

        windows: list[_Window] = []
        for stride, requests in by_stride.items():
            encodings = self._pair_tokenizer(stride).encode_batch([pairs[r] for r in requests])
            for request, encoding in zip(requests, encodings):
                for window in [encoding, *encoding.overflowing]:
                    windows.append(self._window(request, window))
        return windows

    def _window(self, request: int, encoding: Encoding) -> _Window:
        sequence_ids = encoding.sequence_ids
        # Context tokens are contiguous and second in the pair; list.index scans in C.
        try:
            context_begin = sequence_ids.index(1)
            context_end = len(sequence_ids) - sequence_ids[::-1].index(1)
        except ValueError:  # no context token in this window
            context_begin = context_end = 0
        length = len(encoding.ids)
        bucket = next(b for b in self.buckets if b >= length)  # length <= max_bucket by truncation
        return _Window(request, encoding, context_begin, context_end, bucket)

    # -- engine --------------------------------------------------------------------------------

    def _forward(self, windows: Sequence[_Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits of each window, trimmed to its tokens, in window order."""
        logits: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(windows)
        by_bucket: dict[int, list[int]] = {}
        for index, window in enumerate(windows):
            by_bucket.setdefault(window.bucket, []).append(index)
        chunk = max(1, int(self.engine.max_batch_size))
        for bucket in sorted(by_bucket):
            indices = by_bucket[bucket]
            for first in range(0, len(indices), chunk):
                batch = indices[first : first + chunk]
                inputs = self._engine_inputs([windows[i] for i in batch], bucket)
                outputs = self.engine.run(inputs)
                start_logits = np.asarray(outputs[self._start_index])
                end_logits = np.asarray(outputs[self._end_index])
                expected = (len(batch), bucket)
                if start_logits.shape != expected or end_logits.shape != expected:
                    raise RuntimeError(
                        f"engine returned start_logits {start_logits.shape} and end_logits "
                        f"{end_logits.shape} for inputs of shape {expected}"
                    )
                for row, index in enumerate(batch):
                    length = len(windows[index].encoding.ids)
                    logits[index] = (start_logits[row, :length], end_logits[row, :length])
        return logits  # type: ignore[return-value]  # every window was filled above

    def _engine_inputs(self, windows: Sequence[_Window], bucket: int) -> dict[str, np.ndarray]:
        input_ids = np.full((len(windows), bucket), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(windows), bucket), dtype=np.int64)
        token_type_ids = np.zeros((len(windows), bucket), dtype=np.int64)
        for row, window in enumerate(windows):
            length = len(window.encoding.ids)
            input_ids[row, :length] = window.encoding.ids
            attention_mask[row, :length] = 1
            token_type_ids[row, :length] = window.encoding.type_ids
        arrays = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        return {name: arrays[name] for name in self._input_names}

    # -- decode --------------------------------------------------------------------------------

    def _decode(
        self,
        context: str,
        windows: Sequence[_Window],
        logits: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> QuestionAnsweringOutput:
        best_score = -np.inf
        best: tuple[_Window, int, int] | None = None
        null_score = np.inf
        for window, (start_logits, end_logits) in zip(windows, logits):
            null_score = min(null_score, float(start_logits[0] + end_logits[0]))
            span = self._best_span(window, start_logits, end_logits)
            # Strictly greater: on a tie the earlier window wins, as a stable sort would pick.
            if span is not None and span[2] > best_score:
                best_score = span[2]
                best = (window, span[0], span[1])

        if best is None:
            return QuestionAnsweringOutput(score=null_score, answer="", start=0, end=0)
        if (
            self.version_2_with_negative
            and null_score - best_score > self.null_score_diff_threshold
        ):
            return QuestionAnsweringOutput(score=null_score, answer="", start=0, end=0)
        window, start_token, end_token = best
        offsets = window.encoding.offsets
        start, end = offsets[start_token][0], offsets[end_token][1]
        # Accent-stripping normalizers drop combining marks (category Mn, as in decomposed "e"
        # + U+0301) and leave them outside every token's offsets; keep them with the answer.
        while end < len(context) and unicodedata.category(context[end]) == "Mn":
            end += 1
        return QuestionAnsweringOutput(
            score=float(best_score), answer=context[start:end], start=start, end=end
        )

    def _best_span(
        self, window: _Window, start_logits: np.ndarray, end_logits: np.ndarray
    ) -> tuple[int, int, float] | None:
        """(start token, end token, score) of the best span of context tokens in one window, or
        None when no candidate is valid. Candidates: the n_best_size best starts x the n_best_size
        best ends among context tokens, with start <= end < start + max_answer_length."""
        begin, end = window.context_begin, window.context_end
        if begin == end:
            return None
        starts = begin + _top_k_descending(start_logits[begin:end], self.n_best_size)
        ends = begin + _top_k_descending(end_logits[begin:end], self.n_best_size)
        span_lengths = ends[None, :] - starts[:, None] + 1
        valid = (span_lengths >= 1) & (span_lengths <= self.max_answer_length)
        if not valid.any():
            return None
        scores = start_logits[starts][:, None] + end_logits[ends][None, :]
        scores = np.where(valid, scores, -np.inf)
        # Row-major argmax: the first maximum in (start rank, end rank) order.
        start_rank, end_rank = np.unravel_index(int(np.argmax(scores)), scores.shape)
        return int(starts[start_rank]), int(ends[end_rank]), float(scores[start_rank, end_rank])


def _top_k_descending(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first, as `np.argsort(values)[::-1][:k]`."""
    return np.argsort(values)[::-1][:k]


def _check_text(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{field} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # the tokenizer (Rust) cannot take it: say where it is
        raise ValueError(
            f"{field} is not valid unicode: a lone surrogate {value[e.start]!r} at index {e.start}"
        ) from None


def _parse_call(
    inputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None,
    question: str | Sequence[str] | None,
    context: str | Sequence[str] | None,
) -> tuple[list[tuple[str, str]], bool]:
    """The (question, context) pairs of a call and whether it asked for one answer (not a list)."""
    if inputs is not None:
        if question is not None or context is not None:
            raise TypeError("pass either inputs or question= and context=, not both")
        if isinstance(inputs, Mapping):
            return [_pair_from_mapping(inputs, 0)], True
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(
                "inputs must be a mapping with question and context or a list of them, "
                f"got {type(inputs).__name__}"
            )
        return [_pair_from_mapping(item, i) for i, item in enumerate(inputs)], False

    if question is None or context is None:
        raise TypeError("both question and context are required")
    if isinstance(question, str) and isinstance(context, str):
        return [(question, context)], True
    if isinstance(question, str) or isinstance(context, str):
        for field, value in (("question", question), ("context", context)):
            if isinstance(value, bytes) or not isinstance(value, (str, Sequence)):
                raise TypeError(f"{field} must be a str, got {type(value).__name__}")
        raise TypeError(
            "question and context must both be str or both lists, got "
            f"{type(question).__name__} and {type(context).__name__}"
        )
    for field, value in (("question", question), ("context", context)):
        if isinstance(value, bytes) or not isinstance(value, Sequence):
            raise TypeError(f"{field} must be a str or a list of str, got {type(value).__name__}")
    if len(question) != len(context):
        raise ValueError(
            f"question and context lists differ in length: {len(question)} and {len(context)}"
        )
    return list(zip(question, context)), False


def _pair_from_mapping(item: object, index: int) -> tuple[str, str]:
    if not isinstance(item, Mapping):
        raise TypeError(
            f"input {index} must be a mapping with question and context, got {type(item).__name__}"
        )
    missing = [key for key in ("question", "context") if key not in item]
    if missing:
        raise ValueError(f"input {index} lacks {', '.join(missing)}")
    return item["question"], item["context"]
