"""sqc vs onnxruntime on the same ONNX file, same inputs, same threads, in one process run.

    python benchmarks/compare_onnxruntime.py [--models bert-base] [--shapes 1x128,16x128]
        [--threads 1,2] [--repeats 7] [--write BENCHMARKS.md] [--section int8] [--dense-too]
        [--target native] [--withhold-amx]

Models are the kinds of benchmarks/make_models.py (bert-base-int8-qdq: onnxruntime's QDQ file,
run by both engines). --section names the marked table of BENCHMARKS.md to replace, so the
fp32 and int8 tables are regenerated separately.

The two engines are interleaved (A, B, A, B, ...) so that host load hits both alike; each
configuration reports the median time of each engine and the median of the per-pair ratios.
onnxruntime runs with all graph optimizations on and intra-op threads = threads.

--withhold-amx (Linux, x86-64): this process is refused the AMX permission before either engine
runs (sqc.runtime.cpu.withhold_amx), so on a Xeon with AMX both engines run the VNNI code a
CPU without AMX runs (onnxruntime's MLAS then takes its VNNI GEMMs); pair it with the target
such a CPU compiles for: --target avx512vbmi (Ice Lake, Zen 4) or avx512 (Cascade Lake).
Artifacts go to artifacts/bench/KIND-TARGET for any target but native.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS helper threads spin for a while after each call and would take a core from
# the engines being timed (seen in perf as blas_thread_server); neither engine uses them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from make_models import base_kind, model_path  # noqa: E402

from sqc.compiler.driver import compile_model  # noqa: E402
from sqc.runtime.benchmark import cpu_info  # noqa: E402
from sqc.runtime.cpu import withhold_amx  # noqa: E402
from sqc.runtime.engine import Engine, generate_random_inputs  # noqa: E402

PAUSE = 0.2  # seconds between engine calls
MARK_BEGIN = "<!-- compare_onnxruntime:begin -->"
MARK_END = "<!-- compare_onnxruntime:end -->"


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def flops_per_item(seq: int, hidden: int, layers: int, ffn: int) -> float:
    """Multiply-adds x 2 of one sequence through the encoder (linears + attention matmuls)."""
    linear = 2 * seq * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * 2 * seq * seq * hidden
    return layers * (linear + attention)


SIZES = {
    "bert-base": (768, 12, 3072),
    "distilbert-base": (768, 6, 3072),
    "minilm-l6-qa": (384, 6, 1536),
}


def interleave(calls, repeats: int, pause: float = PAUSE):
    """Each of ``calls`` once to warm up, then ``repeats`` rounds of all of them in turn, each
    after ``pause`` seconds. Returns the median seconds of each call, and the medians of the
    per-round ratios of every other call's time to the first's (above 1: the first is faster)."""
    times: list[list[float]] = [[] for _ in calls]
    for call in calls:  # warm-up
        call()
    for _ in range(repeats):
        for call, series in zip(calls, times):
            # Both runtimes leave their worker threads spinning for a while after a call
            # (sqc's thread pool's and onnxruntime's spin-wait); a pause lets them go idle,
            # so no engine starts with the other's threads still burning the cores.
            time.sleep(pause)
            t0 = time.perf_counter()
            call()
            series.append(time.perf_counter() - t0)
    medians = [statistics.median(t) for t in times]
    ratios = [statistics.median(o / s for s, o in zip(times[0], t)) for t in times[1:]]
    return medians, ratios


def measure(engine: Engine, session, inputs, threads: int, repeats: int, dense=None):
    """Median times of sqc, onnxruntime (and sqc's dense build), and the medians of the ratios
    of each interleaved pair: onnxruntime / sqc (and sqc dense / sqc)."""
    feeds = dict(zip(engine.input_names, inputs))
    calls = [lambda: engine.run(inputs, threads=threads), lambda: session.run(None, feeds)]
    if dense is not None:
        calls.append(lambda: dense.run(inputs, threads=threads))
    return interleave(calls, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert-base")
    parser.add_argument("--shapes", default="1x128,16x128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--write",
        type=Path,
        default=None,
        help="replace the table between the markers of this Markdown file",
    )
    parser.add_argument(
        "--section", default="", help="which marked table (default: the dense fp32 one)"
    )
    parser.add_argument(
        "--dense-too",
        action="store_true",
        help="also time sqc's build of the same file with --sparse never (every layer dense), "
        "interleaved, to show the sparse kernels' own gain",
    )
    parser.add_argument("--target", default="native", help="sqc's compile target")
    parser.add_argument(
        "--withhold-amx",
        action="store_true",
        help="refuse this process the AMX permission first: both engines run their VNNI code",
    )
    args = parser.parse_args()
    if args.withhold_amx:
        try:
            withhold_amx()
        except OSError as e:
            raise SystemExit(f"--withhold-amx: {e}") from None
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    rows = []
    for kind in args.models.split(","):
        path = model_path(kind)
        folder = artifact_folder(kind, args.target)
        buckets = sorted({s for _, s in shapes})
        max_batch = max(b for b, _ in shapes)
        began = time.perf_counter()
        artifact = compile_model(
            path,
            buckets,
            ROOT / "artifacts" / "bench" / folder,
            max_batch_size=max_batch,
            target=args.target,
            progress=None,
        )
        compile_s = time.perf_counter() - began
        began = time.perf_counter()
        engine = Engine(artifact)
        load_s = time.perf_counter() - began
        dense = None
        if args.dense_too:
            dense_artifact = compile_model(
                path,
                buckets,
                ROOT / "artifacts" / "bench" / f"{folder}-dense-kernels",
                max_batch_size=max_batch,
                target=args.target,
                progress=None,
                sparse="never",
            )
            dense = Engine(dense_artifact)
        print(f"{kind}: compile {compile_s:.1f} s, load {load_s:.2f} s", flush=True)
        for t in threads:
            session = ort_session(path, t)
            for batch, seq in shapes:
                inputs = generate_random_inputs(engine, batch, seq, seed=0)
                medians, ratios = measure(engine, session, inputs, t, args.repeats, dense)
                s, o = medians[:2]
                gflops = flops_per_item(seq, *SIZES[base_kind(kind)]) * batch / s / 1e9
                row = [kind, f"{batch} x {seq}", t, s * 1e3, o * 1e3, ratios[0], gflops]
                line = (
                    f"  {kind} {batch}x{seq} threads {t}: sqc {s * 1e3:.1f} ms, onnxruntime "
                    f"{o * 1e3:.1f} ms, ratio {ratios[0]:.2f}x, sqc {gflops:.0f} GFLOP/s"
                )
                if dense is not None:
                    row += [medians[2] * 1e3, ratios[1]]
                    line += f", sqc dense kernels {medians[2] * 1e3:.1f} ms ({ratios[1]:.2f}x)"
                rows.append(row)
                print(line, flush=True)
    table = render(rows, args)
    print(table)
    if args.write:
        write_section(args.write, table, *markers(args.section))


def artifact_folder(kind: str, target: str) -> str:
    """The folder under artifacts/bench of a benchmark build of ``kind`` for ``target``."""
    return kind if target == "native" else f"{kind}-{target}"


def markers(section: str | None, tool: str = "compare_onnxruntime") -> tuple[str, str]:
    """The begin / end markers of ``tool``'s table named ``section`` in a Markdown file (none:
    the tool's default table), e.g. ``<!-- compare_onnxruntime:int8:begin -->``."""
    name = f"{tool}:{section}" if section else tool
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def render(rows, args) -> str:
    import onnxruntime

    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    cpu = cpu_info()
    begin, end = markers(args.section)
    lines = [
        begin,
        f"Measured {datetime.date.today().isoformat()} on {cpu['model']} "
        f"({cpu['cores_available']} cores available"
        f"{'; AMX withheld from both engines' if args.withhold_amx else ''}), Python "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}, {gcc}.",
        "",
        "Command: `python benchmarks/compare_onnxruntime.py "
        f"--models {args.models} --shapes {args.shapes} --threads {args.threads} "
        f"--repeats {args.repeats} --write BENCHMARKS.md"
        f"{f' --section {args.section}' if args.section else ''}"
        f"{' --dense-too' if args.dense_too else ''}"
        f"{f' --target {args.target}' if args.target != 'native' else ''}"
        f"{' --withhold-amx' if args.withhold_amx else ''}`",
        "",
        "| model | batch x seq | threads | sqc ms | onnxruntime ms | speed-up (median of pairs) "
        "| sqc G(FL)OP/s |"
        + (" sqc, every layer dense: ms | sparse gain |" if args.dense_too else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if args.dense_too else ""),
    ]
    for kind, shape, t, s, o, ratio, gflops, *dense in rows:
        line = f"| {kind} | {shape} | {t} | {s:.1f} | {o:.1f} | {ratio:.2f}x | {gflops:.0f} |"
        if dense:
            line += f" {dense[0]:.1f} | {dense[1]:.2f}x |"
        lines.append(line)
    lines.append(end)
    return "\n".join(lines)


def write_section(path: Path, table: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    """Replace the text between the begin/end markers of ``path`` (append if absent)."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + table + tail
    else:
        text = text + ("\n" if text else "") + table + "\n"
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
