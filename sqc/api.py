"""The public API: compile_model, Engine, Pipeline (familiar to DeepSparse and Hugging Face users).

``Pipeline.create(task="question-answering", model_path=...)`` takes an artifact directory or an
.onnx file; an .onnx file is compiled on first use into sqc's cache and reused after that (the
one path where the runtime calls the compiler).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from sqc.runtime.engine import Engine, load_manifest
from sqc.runtime.integrity import ArtifactError, verify_artifact
from sqc.runtime.qa import QuestionAnsweringOutput, QuestionAnsweringPipeline

QA_TASKS = ("question-answering", "question_answering", "qa")
DEFAULT_BUCKETS = (128, 384)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "examples" / "models" / "minilm-l6-qa" / "model.onnx"


def cache_dir() -> Path:
    """Where compiled-on-first-use artifacts live: $SQC_CACHE_DIR, else ~/.cache/sqc."""
    root = os.environ.get("SQC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sqc"
    )
    return Path(root)


def default_model_path() -> Path:
    path = Path(os.environ.get("SQC_DEFAULT_MODEL", DEFAULT_MODEL))
    if not path.exists():
        raise FileNotFoundError(
            f"the bundled default model is not at {path}; run sqc from its "
            "git checkout (pip install -e .) or name a model"
        )
    return path


def ensure_artifact(
    model_path: str | os.PathLike,
    buckets: Sequence[int] | None = None,
    batch_size: int | None = None,
    progress=None,
) -> Path:
    """An artifact directory for ``model_path``: itself, or the cached compilation of an .onnx."""
    path = Path(model_path)
    if path.is_dir():
        load_manifest(path)  # fails clearly if it is not an artifact
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.suffix != ".onnx":
        raise ValueError(f"{path}: expected an artifact directory or an .onnx file")
    from sqc.compiler.driver import DEFAULT_MAX_BATCH, compile_model, parse_buckets

    buckets = parse_buckets(list(buckets) if buckets else list(DEFAULT_BUCKETS))
    batch_size = batch_size or DEFAULT_MAX_BATCH
    key = hashlib.sha256(f"{path.resolve()}|{buckets}|{batch_size}".encode()).hexdigest()[:16]
    out = cache_dir() / f"{path.stem}-{key}"
    artifact = compile_model(path, buckets, out, max_batch_size=batch_size, progress=progress)
    try:
        verify_artifact(artifact, load_manifest(artifact))
    except ArtifactError:
        # A damaged cached build is sqc's to repair, not the user's: build it again.
        artifact = compile_model(
            path, buckets, out, max_batch_size=batch_size, progress=progress, force=True
        )
    return artifact


class Pipeline:
    """``Pipeline.create(task="question-answering", model_path=...)`` as in DeepSparse."""

    @staticmethod
    def create(
        task: str = "question-answering",
        model_path: str | os.PathLike | None = None,
        *,
        sequence_length: int | Sequence[int] | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        verify: bool | None = None,
        progress=None,
        **qa_options,
    ) -> QuestionAnsweringPipeline:
        """A question-answering pipeline over a compiled model.

        model_path: an artifact directory, or an .onnx file compiled on first use (buckets from
        ``sequence_length``, default 128 and 384) and cached; default: the bundled model.
        qa_options: doc_stride, max_answer_length, n_best_size, max_question_length,
        version_2_with_negative, null_score_diff_threshold (see QuestionAnsweringPipeline).
        verify: check the sha256 of weights.bin when loading (default: on unless SQC_VERIFY=0).
        """
        if task not in QA_TASKS:
            raise ValueError(f"task '{task}' is not supported; sqc runs {', '.join(QA_TASKS)}")
        if isinstance(sequence_length, int):
            buckets = [sequence_length]
        else:
            buckets = list(sequence_length) if sequence_length else None
        artifact = ensure_artifact(
            model_path or default_model_path(), buckets, batch_size, progress
        )
        engine = Engine(artifact, threads=threads, verify=verify)
        tokenizer = artifact / "tokenizer.json"
        if not tokenizer.exists():
            raise FileNotFoundError(
                f"{artifact} has no tokenizer.json: compile with --tokenizer "
                "or put tokenizer.json beside the .onnx model"
            )
        # For an artifact, sequence_length picks among its buckets; an .onnx was compiled
        # with exactly those buckets already.
        restrict = buckets if artifact == Path(model_path or "") else None
        return QuestionAnsweringPipeline(engine, tokenizer, sequence_length=restrict, **qa_options)

    def __new__(cls, task: str = "question-answering", model_path=None, **kwargs):
        return cls.create(task, model_path, **kwargs)


def compile_model(model, buckets=DEFAULT_BUCKETS, output=None, **options) -> Path:
    """Compile an ONNX model into an artifact directory (see sqc.compiler.driver)."""
    from sqc.compiler.driver import compile_model as _compile

    return _compile(model, buckets, output, **options)


__all__ = ["Engine", "Pipeline", "QuestionAnsweringOutput", "compile_model"]
