"""The `sqc` command line. Thin: each subcommand maps its arguments onto the library API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
    return (CompileError, ArtifactError, EngineInputError, FileNotFoundError, ValueError,
            TypeError)


@app.command("compile")
def compile_cmd(
    model: Path = typer.Argument(..., help="The ONNX model (.onnx; external data beside it)."),
    buckets: str = typer.Option("128", "--buckets", "-b",
                                help="Sequence lengths to specialize for, comma-separated, "
                                     "e.g. 16,128,384. Inputs go to the smallest that holds them."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Artifact directory (default: artifacts/MODEL-NAME)."),
    batch_size: int = typer.Option(64, "--batch-size",
                                   help="Largest batch one call may run (batch is a run-time "
                                        "argument up to this)."),
    threads: Optional[int] = typer.Option(None, "--threads",
                                          help="Default threads per call (default: the "
                                               "physical cores of the machine that runs it)."),
    target: str = typer.Option("native", "--target",
                               help="Instruction set: native (this CPU), avx512 or avx2."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer",
                                             help="tokenizer.json (or its folder) to bundle "
                                                  "(default: the one beside the model)."),
    dump_after: Optional[str] = typer.Option(None, "--dump-after",
                                             help="Write the graph after this pass to "
                                                  "<output>/dumps/ (see --list-passes)."),
    disable: list[str] = typer.Option([], "--disable",
                                      help="Skip an optional pass (repeatable)."),
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
            path = compile_model(model, buckets, output, max_batch_size=batch_size,
                                 threads=threads, target=target, dump_after=dump_after,
                                 disable=disable, tokenizer=tokenizer, force=force,
                                 progress=progress)
    except user_errors() as e:
        fail(str(e))
    typer.echo(str(path))


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
