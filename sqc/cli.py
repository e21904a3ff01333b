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
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors():
    """The exceptions that are the user's to fix, shown as one line."""
    from sqc.compiler.ir import CompileError
    from sqc.runtime.engine import ArtifactError, EngineInputError

    return (CompileError, ArtifactError, EngineInputError, FileNotFoundError, ValueError, TypeError)


def _print_passes(value: bool) -> None:
    """--list-passes: the pipeline's passes in order, then exit (before MODEL is asked for)."""
    if value:
        from sqc.compiler.pipeline import PASS_NAMES

        typer.echo("\n".join(PASS_NAMES))
        raise typer.Exit()


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
        "native",
        "--target",
        help="Instruction set: native (this CPU), avx512amx (AVX-512 with AMX int8), avx512vbmi "
        "(AVX-512 with VNNI and VBMI), avx512 (with VNNI), avxvnni or avx2.",
    ),
    quantize: str = typer.Option(
        "none",
        "--quantize",
        help="dynamic: int8 linear layers for a float model (int8 weights per column made now, "
        "activations quantized per example at run time). Quantized models need nothing.",
    ),
    sparse: str = typer.Option(
        "auto",
        "--sparse",
        help="auto: each linear layer with enough zeros runs a sparse kernel where a cost model "
        "says it beats dense (see `sqc inspect`); never: all dense; always: all sparse.",
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
    list_passes: bool = typer.Option(
        False,
        "--list-passes",
        help="Print the passes and exit (no MODEL needed).",
        is_eager=True,
        callback=_print_passes,
    ),
) -> None:
    """Compile MODEL into an artifact: generated C, library, weights.bin, manifest.json."""
    from sqc.compiler.driver import compile_model

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
                quantize=quantize,
                sparse=sparse,
            )
    except user_errors() as e:
        fail(str(e))
    typer.echo(str(path))


@app.command("prune")
def prune_cmd(
    model: Path = typer.Argument(..., help="The float ONNX model to prune."),
    sparsity: float = typer.Option(
        ..., "--sparsity", help="Fraction of each linear layer's weights to zero, e.g. 0.9."
    ),
    block: str = typer.Option(
        "unstructured",
        "--block",
        help="unstructured, 1o4i (4 consecutive inputs of one output: the int8 VNNI quad) or "
        "4o1i (4 consecutive outputs of one input).",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The pruned model to write (.onnx)."),
) -> None:
    """One-shot magnitude pruning of MODEL's encoder linear weights (per layer).

    Zeros the smallest weights (or 4-weight blocks) of every linear layer; the QA head stays
    dense. One-shot pruning COSTS ACCURACY: without fine-tuning afterwards (as sparse models
    from SparseML or Hugging Face's movement pruning are), a 90% pruned model answers badly.
    Use it to make sparse models for speed measurements, or prune and then fine-tune.
    """
    from sqc.compiler.prune import prune_model

    try:
        layers = prune_model(
            model,
            output,
            sparsity,
            block,
            progress=lambda message: err.print(f"  {message}", highlight=False),
        )
    except user_errors() as e:
        fail(str(e))
    zeros = sum(layer.sparsity * layer.k * layer.n for layer in layers)
    total = sum(layer.k * layer.n for layer in layers)
    err.print(
        f"pruned {len(layers)} linear layers ({block}): {zeros / total:.1%} of their "
        f"{total / 1e6:.1f}M weights are zero; not fine-tuned, so accuracy drops",
        highlight=False,
    )
    typer.echo(str(output))


@app.command("inspect")
def inspect_cmd(
    artifact: Path = typer.Argument(
        ..., help="Artifact directory (from sqc compile), or an .onnx model (compiled first)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
    profile: bool = typer.Option(
        False, "--profile", help="Run the model and show the measured time of every op."
    ),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Batch for --profile."),
    sequence_length: int | None = typer.Option(
        None, "--sequence-length", help="Bucket for --profile (default: the largest)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Threads for --profile."),
    repeats: int = typer.Option(10, "--repeats", help="Profiled calls to average."),
) -> None:
    """Per layer: op, shape, format (dense/sparse, pattern), sparsity, quantized form, the
    kernel that runs it and why; with --profile, measured time per op and per op type."""
    import json

    from sqc.runtime.engine import load_manifest

    try:
        if artifact.suffix == ".onnx" and not artifact.is_dir():
            from sqc.api import ensure_artifact

            artifact = ensure_artifact(
                artifact,
                [sequence_length or 128],
                max(batch_size, 1),
                progress=lambda m: err.print(f"  {m}", highlight=False),
            )
        manifest = load_manifest(artifact)
        if profile:
            report = _profile(artifact, batch_size, sequence_length, threads, repeats)
    except user_errors() as e:
        fail(str(e))
    layers = manifest.get("layers", [])
    if as_json:
        typer.echo(
            json.dumps({"layers": layers, "profile": report} if profile else layers, indent=1)
        )
        return
    if profile:
        _print_profile(report, layers)
        return
    target = manifest["target"]
    typer.echo(
        f"{artifact}: {manifest['source_model']['file']}, "
        f"target {target['isa']}, buckets {', '.join(map(str, manifest['buckets']))}, "
        f"quantize {manifest.get('quantize', 'none')}"
    )
    header = (
        f"{'layer':<40} {'op':<13} {'K x N':>11} {'sparsity':>8} {'format':<19} "
        f"{'quantization':<22} kernel"
    )
    typer.echo(header)
    for layer in layers:
        q = layer.get("quantization", "")
        q = (
            q.get("form", "") + (f" ({q['weights']})" if "weights" in q else "")
            if isinstance(q, dict)
            else q
        )
        shape = f"{layer['k']} x {layer['n']}" if "k" in layer else ""
        sparsity = f"{layer['sparsity']:.2f}" if "sparsity" in layer else ""
        fmt = ""
        if "format" in layer:
            pattern = layer.get("pattern", "dense")
            fmt = layer["format"] + (f" ({pattern})" if pattern != "dense" else "")
            by_bucket = set(layer.get("format_by_bucket", {}).values())
            if len(by_bucket) > 1:
                fmt += "*"
        typer.echo(
            f"{layer['name'][-40:]:<40} {layer['op']:<13} {shape:>11} {sparsity:>8} {fmt:<19} "
            f"{q:<22} {layer['kernel']}"
        )
        if layer.get("why"):
            typer.echo(f"{'':<4}why: {layer['why']}")
        quant = layer.get("quantization")
        if isinstance(quant, dict) and quant.get("epilogue"):
            typer.echo(f"{'':<4}epilogue: {quant['epilogue']}")
    linear = [x for x in layers if "format" in x]
    if linear:
        sparse = sum(x["format"] == "sparse" for x in linear)
        weights = sum(x["k"] * x["n"] for x in linear)
        zeros = sum(x["k"] * x["n"] * x["sparsity"] for x in linear)
        typer.echo(
            f"{sparse} of {len(linear)} linear layers sparse; {zeros / weights:.1%} of their "
            f"{weights / 1e6:.1f}M weights are zero"
            + (
                "; * = the kernel differs by bucket (see --json)"
                if any(len(set(x.get("format_by_bucket", {}).values())) > 1 for x in linear)
                else ""
            )
        )


def _profile(artifact, batch, seq, threads, repeats) -> dict:
    from sqc.runtime.engine import Engine, generate_random_inputs

    engine = Engine(artifact, threads=threads)
    seq = seq or engine.buckets[-1]
    if seq not in engine.buckets:
        raise ValueError(f"sequence length {seq} is not a bucket of {artifact} ({engine.buckets})")
    inputs = generate_random_inputs(engine, batch, seq, seed=0)
    return engine.profile(inputs, threads=threads, repeats=repeats)


def _print_profile(report: dict, layers: list[dict]) -> None:
    formats = {
        x["name"]: x["format"]
        + (f" {x['pattern']}" if x.get("pattern", "dense") != "dense" else "")
        for x in layers
        if "format" in x
    }
    ops = report["ops"]
    total = sum(op["seconds"] for op in ops)
    e2e = report["end_to_end_seconds"]
    typer.echo(
        f"profile: batch {report['batch']} x sequence {report['sequence']}, "
        f"{report['threads']} threads; mean of the profiled calls"
    )
    typer.echo(
        f"{'#':>3} {'op':<18} {'node':<44} {'format':<19} {'ms':>8} {'share':>6} {'GFLOP/s':>8}"
    )
    for i, op in enumerate(ops):
        gflops = f"{op['flops'] / op['seconds'] / 1e9:.0f}" if op["flops"] and op["seconds"] else ""
        typer.echo(
            f"{i:>3} {op['op']:<18} {op['node'][-44:]:<44} {formats.get(op['node'], ''):<19} "
            f"{op['seconds'] * 1e3:>8.3f} "
            f"{op['seconds'] / total:>6.1%} {gflops:>8}"
        )
    typer.echo("")
    typer.echo(f"{'op type':<22} {'count':>5} {'ms':>8} {'share':>6} {'GFLOP/s':>8}")
    by_type: dict[str, list] = {}
    for op in ops:
        entry = by_type.setdefault(op["op"], [0, 0.0, 0])
        entry[0] += 1
        entry[1] += op["seconds"]
        entry[2] += op["flops"]
    for name, (count, seconds, flops) in sorted(by_type.items(), key=lambda x: -x[1][1]):
        gflops = f"{flops / seconds / 1e9:.0f}" if flops and seconds else ""
        typer.echo(
            f"{name:<22} {count:>5} {seconds * 1e3:>8.3f} {seconds / total:>6.1%} {gflops:>8}"
        )
    typer.echo(
        f"sum of ops {total * 1e3:.2f} ms; end to end (unprofiled, median) {e2e * 1e3:.2f} ms: "
        f"the ops account for {total / e2e:.1%} of it"
    )


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


@app.command("benchmark")
def benchmark_cmd(
    model: Path | None = typer.Argument(
        None, help="Artifact directory or .onnx model (default: the bundled model)."
    ),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Items per engine call."),
    sequence_length: int | None = typer.Option(
        None, "--sequence-length", help="Tokens per item (default: the largest bucket, or 128)."
    ),
    input_shapes: str | None = typer.Option(
        None, "--input-shapes", "-i", help='DeepSparse syntax, e.g. "[64,384]" (batch,sequence).'
    ),
    scenario: str = typer.Option("sync", "--scenario", "-s", help="sync or async."),
    nstreams: int | None = typer.Option(
        None, "-nstreams", "--nstreams", help="Concurrent streams for async (default: cores/2)."
    ),
    seconds: float = typer.Option(10.0, "--time", "-t", help="Seconds to measure."),
    warmup: float = typer.Option(2.0, "--warmup-time", "-w", help="Seconds of warm-up."),
    threads: int | None = typer.Option(None, "--threads", help="Threads in all (default: cores)."),
    engine: str = typer.Option("sqc", "--engine", "-e", help="sqc or onnxruntime."),
    compare: str | None = typer.Option(
        None, "--compare", help="onnxruntime: run it too on the same inputs and print the ratio."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the results."),
    export_path: Path | None = typer.Option(
        None, "--export-path", "-x", help="Write the results as JSON here."
    ),
) -> None:
    """Measure throughput and latency (as deepsparse.benchmark does), optionally against
    onnxruntime on the same file and inputs."""
    import json

    from sqc.runtime.benchmark import describe, parse_input_shapes, report_header, run_benchmark
    from sqc.runtime.cpu import physical_cores

    try:
        if input_shapes:
            batch_size, sequence_length = parse_input_shapes(input_shapes)[0]
        engines = [engine] + ([compare] if compare else [])
        for name in engines:
            if name not in ("sqc", "onnxruntime"):
                fail(f"engine '{name}' is not sqc or onnxruntime")
        if "onnxruntime" in engines and model is not None and model.is_dir():
            source = json.loads((model / "manifest.json").read_text())["source_model"]["file"]
            fail(f"onnxruntime needs the .onnx file; pass it instead of the artifact ({source})")
        total_threads = threads or physical_cores()
        streams = nstreams or max(1, total_threads // 2)
        per_call = max(1, total_threads // streams) if scenario == "async" else total_threads
        report = report_header(batch_size, sequence_length or 0, total_threads)
        report["results"] = []
        for name in engines:
            runner, seq = _benchmark_engine(
                name, model, batch_size, sequence_length, per_call, quiet
            )
            report["sequence_length"] = seq
            result = run_benchmark(
                runner,
                batch_size,
                seconds=seconds,
                warmup=warmup,
                scenario=scenario,
                streams=streams,
            )
            result["engine"] = name
            report["results"].append(result)
            typer.echo(describe(result))
        if compare:
            ratio = (
                report["results"][0]["items_per_second"] / report["results"][1]["items_per_second"]
            )
            report["speedup"] = ratio
            typer.echo(f"{engine} / {compare} throughput: {ratio:.2f}x")
    except user_errors() as e:
        fail(str(e))
    if export_path is not None:
        export_path.write_text(json.dumps(report, indent=1))
        if not quiet:
            err.print(f"wrote {export_path}")


def _benchmark_engine(name, model, batch, seq, threads, quiet):
    """A zero-argument function running one batch on engine ``name``, and the sequence length."""
    from sqc.api import default_model_path, ensure_artifact
    from sqc.runtime.engine import Engine, generate_random_inputs

    model = model or default_model_path()
    say = (lambda m: None) if quiet else (lambda m: err.print(f"  {m}", highlight=False))
    if Path(model).is_dir():
        artifact = Path(model)
        compiled = Engine(artifact, threads=threads)
        seq = seq or compiled.buckets[-1]
    else:
        seq = seq or 128
        artifact = ensure_artifact(model, [seq], max(batch, 1), progress=say)
        compiled = Engine(artifact, threads=threads)
    if seq not in compiled.buckets:
        raise ValueError(
            f"sequence length {seq} is not a bucket of {artifact} ({compiled.buckets})"
        )
    inputs = generate_random_inputs(compiled, batch, seq, seed=0)
    if name == "sqc":
        return (lambda: compiled.run(inputs, threads=threads)), seq
    from sqc.runtime.reference import OnnxRuntimeEngine

    ort = OnnxRuntimeEngine(model, [seq], max_batch_size=batch, threads=threads)
    feeds = dict(zip(compiled.input_names, inputs))
    return (lambda: ort.run(feeds)), seq


@app.command("serve")
def serve_cmd(
    artifacts: list[Path] | None = typer.Argument(
        None,
        help="Artifact directories or .onnx models, one endpoint each (default: the bundled "
        "model).",
    ),
    config_file: Path | None = typer.Option(
        None, "--config", "--config-file", help="Server configuration YAML (see README)."
    ),
    model_path: Path | None = typer.Option(
        None, "--model_path", "--model-path", help="A model to serve (as deepsparse.server)."
    ),
    task: str = typer.Option(
        "question-answering", "--task", help="The task (question-answering only)."
    ),
    host: str | None = typer.Option(
        None, "--host", help="Address to bind (default 127.0.0.1: this machine only)."
    ),
    port: int | None = typer.Option(None, "--port", help="TCP port (default 5543; 0: any free)."),
    workers: int | None = typer.Option(
        None, "--workers", help="HTTP requests handled at once (default 64)."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="Engine threads per model (default: the physical cores): all for a lone request, "
        "shared by engine calls side by side under load.",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Most questions gathered into one batch (default 32)."
    ),
    buckets: str | None = typer.Option(
        None,
        "--buckets",
        "--sequence-length",
        help="Buckets of the models named here, e.g. 64,384 (an .onnx is compiled with them).",
    ),
    batch_wait_ms: float | None = typer.Option(
        None, "--batch-wait-ms", help="Longest wait for a batch to fill under load (default 5)."
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="SQC_API_KEY",
        show_envvar=True,
        help="Require this key on every route but health.",
    ),
) -> None:
    """Serve question answering over HTTP (DeepSparse Server routes) until SIGTERM or Ctrl-C."""
    import logging

    from sqc.server import ConfigError, EndpointConfig, ServerConfig, load_config, serve
    from sqc.server.config import check_endpoint, check_server, model_name

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    models = list(artifacts or []) + ([model_path] if model_path is not None else [])
    try:
        if config_file is not None:
            if models:
                fail("name models either on the command line or in --config, not both")
            config = load_config(config_file)
        else:
            try:
                lengths = [int(b) for b in buckets.split(",")] if buckets else None
            except ValueError:
                fail(f"--buckets: expected integers separated by commas, got {buckets!r}")
            endpoints = [
                EndpointConfig(
                    name="question_answering" if len(models) <= 1 else model_name(str(model)),
                    model=str(model) if model is not None else None,
                    task=task,
                    sequence_length=lengths,
                )
                for model in (models or [None])
            ]
            config = ServerConfig(endpoints=endpoints)
        overrides = {
            "host": host,
            "port": port,
            "workers": workers,
            "threads": threads,
            "api_key": api_key,
            "max_batch_wait_ms": batch_wait_ms,
        }
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        for endpoint in config.endpoints:
            if batch_size is not None:
                endpoint.batch_size = batch_size
            check_endpoint(endpoint)
        check_server(config)

        def say(message: str) -> None:
            err.print(message, highlight=False, soft_wrap=True)

        def ready(server) -> None:
            for endpoint in config.endpoints:
                say(f"serving {endpoint.name} at {server.url}/v2/models/{endpoint.name}/infer")
            if len(config.endpoints) == 1:
                say(f"serving {config.endpoints[0].name} at {server.url}/predict")
            say(f"docs at {server.url}/docs; stop with Ctrl-C or SIGTERM")

        with err.status("loading the models (compiled on first use)", spinner="dots") as status:

            def progress(message: str) -> None:
                status.update(f"compiling: {message}")

            def on_ready(server) -> None:
                status.stop()
                ready(server)

            serve(config, progress=progress, on_ready=on_ready)
    except ConfigError as e:
        fail(str(e))
    except OSError as e:
        if e.errno is not None and e.strerror:
            fail(f"cannot listen on {config.host}:{config.port}: {e.strerror}")
        fail(str(e))
    except user_errors() as e:
        fail(str(e))


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
