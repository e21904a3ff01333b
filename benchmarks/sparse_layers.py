"""sqc's sparse kernels against its own dense kernels, per layer and end to end, on one pruned file.

    python benchmarks/sparse_layers.py [--models bert-base-pruned90-1o4i-int8-dynamic]
        [--shapes 1x128,16x128] [--threads 1,2] [--repeats 5] [--write BENCHMARKS.md]
        [--target native] [--section NAME]

Two builds of the same file: `--sparse auto` (the kernels the cost model chose) and
`--sparse never` (every layer dense). Both run under `Engine.profile` (each op timed by the
generated code), interleaved A, B, A, B; the table groups the ops by their name with the layer
number taken out (so `encoder/layer.N/intermediate/dense/MatMul` sums over the 12 layers) and
gives, per group, the milliseconds of each build and the gain; then the end-to-end medians. So
the sparse gain is visible apart from the int8 gain (both builds are int8 when the file is).
--target builds both for another target than this CPU's best (e.g. avx512: the VNNI code, on a
CPU with AMX too; artifacts in artifacts/bench/KIND-TARGET); --section writes the table between
its own markers (`sparse_layers:NAME`), so that tables of several targets can stand side by side.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS helper threads spin for a while after each call and would take a core from
# the engines being timed (seen in perf as blas_thread_server); neither engine uses them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_onnxruntime import PAUSE, artifact_folder, markers, write_section  # noqa: E402
from make_models import model_path  # noqa: E402

from sqc.compiler.driver import compile_model  # noqa: E402
from sqc.runtime.benchmark import cpu_info  # noqa: E402
from sqc.runtime.engine import Engine, generate_random_inputs  # noqa: E402


def group_name(node: str) -> str:
    """The op's name with its layer number taken out: one group per role in the encoder."""
    return re.sub(r"layer\.\d+", "layer.N", node).strip("/")


def profile_pair(sparse: Engine, dense: Engine, inputs, threads: int, repeats: int):
    """Per-group seconds (mean over repeats) of both builds, and both end-to-end medians."""
    groups = [defaultdict(float), defaultdict(float)]
    ends: list[list[float]] = [[], []]
    shapes: dict[str, str] = {}
    for _ in range(repeats):
        for i, engine in enumerate((sparse, dense)):
            time.sleep(PAUSE)
            report = engine.profile(inputs, threads=threads, repeats=1)
            ends[i].append(report["end_to_end_seconds"])
            for op in report["ops"]:
                groups[i][(group_name(op["node"]), op["op"])] += op["seconds"] / repeats
    for layer in sparse.manifest["layers"]:
        if "k" in layer:
            shapes[group_name(layer["name"])] = f"{layer['k']} x {layer['n']}"
    return groups, [statistics.median(e) for e in ends], shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert-base-pruned90-1o4i-int8-dynamic")
    parser.add_argument("--shapes", default="1x128,16x128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--target", default="native", help="sqc's compile target")
    parser.add_argument("--section", default=None, help="which marked table to write")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    begin, end = markers(args.section, "sparse_layers")
    on = f" (sqc target {args.target})" if args.target != "native" else ""
    lines = [
        begin,
        f"Measured {datetime.date.today().isoformat()} on {cpu_info()['model']}{on}. Command: "
        f"`python benchmarks/sparse_layers.py --models {args.models} --shapes {args.shapes} "
        f"--threads {args.threads} --repeats {args.repeats} --write BENCHMARKS.md"
        f"{f' --target {args.target}' if args.target != 'native' else ''}"
        f"{f' --section {args.section}' if args.section else ''}`",
        "",
    ]
    for kind in args.models.split(","):
        path = model_path(kind)
        buckets = sorted({s for _, s in shapes})
        batch = max(b for b, _ in shapes)
        out = ROOT / "artifacts" / "bench"
        folder = artifact_folder(kind, args.target)
        build = dict(max_batch_size=batch, target=args.target)
        sparse = Engine(compile_model(path, buckets, out / folder, **build))
        dense = Engine(
            compile_model(path, buckets, out / f"{folder}-dense-kernels", sparse="never", **build)
        )
        for t in [int(x) for x in args.threads.split(",")]:
            for b, s in shapes:
                inputs = generate_random_inputs(sparse, b, s, seed=0)
                groups, ends, dims = profile_pair(sparse, dense, inputs, t, args.repeats)
                lines += [
                    f"**{kind}, {b} x {s}, {t} thread(s)**: end to end {ends[0] * 1e3:.1f} ms "
                    f"sparse vs {ends[1] * 1e3:.1f} ms dense kernels: "
                    f"**{ends[1] / ends[0]:.2f}x**",
                    "",
                    "| op (summed over layers) | K x N | dense kernels ms | sparse ms | gain |",
                    "|---|---|---|---|---|",
                ]
                keys = sorted(groups[1], key=lambda k: -groups[1][k])
                for key in keys:
                    d, sp = groups[1][key], groups[0].get(key, 0.0)
                    if d < 0.01 * ends[1]:
                        continue  # under 1% of the call: noise
                    gain = f"{d / sp:.2f}x" if sp else ""
                    lines.append(
                        f"| {key[1]} {key[0][-60:]} | {dims.get(key[0], '')} | {d * 1e3:.2f} "
                        f"| {sp * 1e3:.2f} | {gain} |"
                    )
                lines.append("")
                print("\n".join(lines[-len(keys) - 5 :]), flush=True)
    lines.append(end)
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(args.write, table, begin, end)


if __name__ == "__main__":
    main()
