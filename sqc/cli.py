"""The `sqc` command line. Thin: each subcommand maps its arguments onto the library API."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

import sqc

app = typer.Typer(
    name="sqc",
    help="sqc: compile ONNX question-answering models to fast native code, and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """A user-facing error: one line, no traceback, non-zero exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors():
    """The exceptions that are the user's to fix, shown as one line."""
    from sqc.compiler.ir import CompileError
    from sqc.runtime.engine import ArtifactError, EngineInputError

    return (CompileError, ArtifactError, EngineInputError, FileNotFoundError, ValueError, TypeError)


@app.command("compile")
def compile_cmd(
    model: Path = typer.Argument(..., help="The ONNX model (.onnx; external data beside it)."),
    buckets: str = typer.Option(
        "128",
        "--buckets",
        "-b",
        help="Sequence lengths to specialize for, comma-separated, "
        "e.g. 16,128,384. Inputs go to the smallest that holds them.",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Artifact directory (default: artifacts/MODEL-NAME)."
    ),
    batch_size: int = typer.Option(
        64,
        "--batch-size",
        help="Largest batch one call may run (batch is a run-time argument up to this).",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="Default threads per call (default: the physical cores of the machine that runs it).",
    ),
    target: str = typer.Option(
        "native", "--target", help="Instruction set: native (this CPU), avx512 or avx2."
    ),
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="tokenizer.json (or its folder) to bundle (default: the one beside the model).",
    ),
    dump_after: str | None = typer.Option(
        None,
        "--dump-after",
        help="Write the graph after this pass to <output>/dumps/ (see --list-passes).",
    ),
    disable: list[str] = typer.Option([], "--disable", help="Skip an optional pass (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an identical build exists."),
    list_passes: bool = typer.Option(False, "--list-passes", help="Print the passes and exit."),
) -> None:
    """Compile MODEL into an artifact: generated C, library, weights.bin, manifest.json."""
    from sqc.compiler.driver import compile_model
    from sqc.compiler.pipeline import PASS_NAMES

    if list_passes:
        typer.echo("\n".join(PASS_NAMES))
        return
    try:
        with err.status("compiling", spinner="dots") as status:

            def progress(message: str) -> None:
                status.update(message)
                err.print(f"  {message}", highlight=False)

            path = compile_model(
                model,
                buckets,
                output,
                max_batch_size=batch_size,
                threads=threads,
                target=target,
                dump_after=dump_after,
                disable=disable,
                tokenizer=tokenizer,
                force=force,
                progress=progress,
            )
    except user_errors() as e:
        fail(str(e))
    typer.echo(str(path))


def _pipeline(artifact: Path | None, threads: int | None, **qa_options):
    from sqc.api import Pipeline

    with err.status("loading the model (compiled on first use)", spinner="dots") as status:
        return Pipeline.create(
            "question-answering",
            artifact,
            threads=threads,
            progress=lambda m: status.update(f"compiling: {m}"),
            **qa_options,
        )


@app.command("run")
def run_cmd(
    artifact: Path | None = typer.Argument(
        None, help="Artifact directory or .onnx model (default: the bundled model)."
    ),
    question: str | None = typer.Option(None, "--question", "-q", help="The question."),
    context: str | None = typer.Option(None, "--context", "-c", help="The context text."),
    context_file: Path | None = typer.Option(
        None, "--context-file", help="Read the context from this file (UTF-8)."
    ),
    input_file: Path | None = typer.Option(
        None,
        "--input",
        help='JSON Lines: one {"question", "context"} '
        "object per line; answers stream out, one "
        "per line.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON ({score, answer, start, end})."),
    max_answer_length: int = typer.Option(15, "--max-answer-length", help="In tokens."),
    doc_stride: int | None = typer.Option(
        None, "--doc-stride", help="Window overlap in tokens for long contexts."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Threads per engine call."),
) -> None:
    """Answer a question about a context (or many, from --input)."""
    import json

    if input_file is None:
        if question is None:
            fail("give --question (with --context or --context-file), or --input FILE.jsonl")
        if (context is None) == (context_file is None):
            fail("give exactly one of --context and --context-file")
        if context_file is not None:
            try:
                context = context_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                fail(f"cannot read {context_file}: {e}")
    try:
        qa = _pipeline(
            artifact, threads, max_answer_length=max_answer_length, doc_stride=doc_stride
        )
        if input_file is None:
            out = qa(question=question, context=context)
            typer.echo(json.dumps(out.to_dict(), ensure_ascii=False) if as_json else out.answer)
            return
        _run_jsonl(qa, input_file)
    except user_errors() as e:
        fail(str(e))


def _run_jsonl(qa, input_file: Path) -> None:
    """Stream answers for a JSON Lines file: one result line per input line, in order. A bad line
    gets an {"error": ...} line and the rest go on; the exit code is 1 if any line failed."""
    import json

    from rich.progress import Progress

    try:
        lines = input_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {input_file}: {e}")
    failed = 0
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("answering", total=len(lines))
        for number, line in enumerate(lines, 1):
            if not line.strip():
                bar.advance(task)
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise ValueError("expected a JSON object with question and context")
                answer = qa(question=item.get("question"), context=item.get("context"))
                result = answer.to_dict()
                if "id" in item:
                    result = {"id": item["id"], **result}
            except (ValueError, TypeError) as e:
                failed += 1
                result = {"line": number, "error": str(e)}
            typer.echo(json.dumps(result, ensure_ascii=False))
            bar.advance(task)
    if failed:
        err.print(f"{failed} of {len(lines)} lines failed")
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    artifact: Path | None = typer.Argument(
        None, help="Artifact directory or .onnx model (default: the bundled model)."
    ),
    squad: Path = typer.Option(..., "--squad", help="SQuAD-format JSON (v1.1 or v2.0)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N questions."),
    version: int = typer.Option(
        1, "--version", help="1: SQuAD v1.1 metric; 2: v2.0 (with unanswerable questions)."
    ),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="Write {id: answer} JSON here."
    ),
    max_answer_length: int = typer.Option(
        30, "--max-answer-length", help="In tokens (30: the SQuAD convention)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Questions per pipeline call."),
    threads: int | None = typer.Option(None, "--threads", help="Threads per engine call."),
    score: Path | None = typer.Option(
        None, "--score", help="Score this {id: answer} predictions JSON instead of running a model."
    ),
) -> None:
    """Score a model on SQuAD: exact match, F1 and questions per second."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from sqc.runtime.squad import evaluate_pipeline, evaluate_predictions

    if version not in (1, 2):
        fail("--version must be 1 or 2")
    if score is not None:
        try:
            metrics = evaluate_predictions(squad, json.loads(score.read_text()), version=version)
        except (OSError, ValueError, KeyError, TypeError) as e:
            fail(f"cannot score {score} against {squad}: {e}")
        typer.echo(
            f"exact_match {metrics['exact_match']:.2f}  f1 {metrics['f1']:.2f}  "
            f"questions {metrics['total']}"
        )
        return
    if limit is not None and limit < 1:
        fail("--limit must be a positive integer")
    try:
        qa = _pipeline(
            artifact,
            threads,
            max_answer_length=max_answer_length,
            version_2_with_negative=version == 2,
        )
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("questions", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            metrics, preds = evaluate_pipeline(
                qa, squad, limit=limit, batch_size=batch_size, version=version, progress=progress
            )
    except (json.JSONDecodeError, KeyError) as e:
        fail(f"{squad}: not a SQuAD-format file ({e})")
    except user_errors() as e:
        fail(str(e))
    if predictions is not None:
        predictions.write_text(json.dumps(preds, ensure_ascii=False, indent=1))
    typer.echo(
        f"exact_match {metrics['exact_match']:.2f}  f1 {metrics['f1']:.2f}  "
        f"questions {metrics['total']}  "
        f"{metrics['questions_per_second']:.1f} questions/s"
    )
    if version == 2:
        typer.echo(json.dumps({k: v for k, v in metrics.items() if "answer" in k}, indent=1))


@app.callback(invoke_without_command=True)
def main_callback(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"sqc {sqc.__version__}")
        raise typer.Exit()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
