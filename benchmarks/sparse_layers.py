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


def op_nodes(node: str) -> tuple[str, ...]:
    """The group names of the graph nodes one profiled op ran: a fused op's name joins them
    with " + " (e.g. the FFN's two sparse layers as one call, or a layer and its activation)."""
    return tuple(group_name(n) for n in node.split(" + "))


def join_groups(ops: list[dict[tuple[str, tuple[str, ...]], float]]) -> dict:
    """Per-build seconds by group, where a group is every op (of either build) that shares a
    graph node with another, transitively: the sparse build's fused FFN call and the dense
    build's two FFN layers become one row, timed in both. Keys: (op types, node names), each
    joined with " + " in order of first appearance."""
    parent: dict[str, str] = {}

    def find(n: str) -> str:
        while parent.setdefault(n, n) != n:
            n = parent[n]
        return n

    for build in ops:
        for _, nodes in build:
            for n in nodes[1:]:
                parent[find(n)] = find(nodes[0])
    names: dict[str, list[str]] = defaultdict(list)
    types: dict[str, list[str]] = defaultdict(list)
    for build in ops:
        for op, nodes in build:
            root = find(nodes[0])
            for n in nodes:
                if n not in names[root]:
                    names[root].append(n)
            for t in op.split("+"):
                if t not in types[root]:
                    types[root].append(t)
    out = [defaultdict(float) for _ in ops]
    for i, build in enumerate(ops):
        for (_op, nodes), seconds in build.items():
            root = find(nodes[0])
            out[i][("+".join(types[root]), " + ".join(names[root]))] += seconds
    return out


def profile_pair(sparse: Engine, dense: Engine, inputs, threads: int, repeats: int):
    """Per-group seconds (mean over repeats) of both builds (join_groups), both end-to-end
    medians, and the K x N of each linear layer's group."""
    ops = [defaultdict(float), defaultdict(float)]
    ends: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, engine in enumerate((sparse, dense)):
            time.sleep(PAUSE)
            report = engine.profile(inputs, threads=threads, repeats=1)
            ends[i].append(report["end_to_end_seconds"])
            for op in report["ops"]:
                ops[i][(op["op"], op_nodes(op["node"]))] += op["seconds"] / repeats
    groups = join_groups(ops)
    dims: dict[str, str] = {}
    for layer in sparse.manifest["layers"]:
        if "k" in layer:
            dims[group_name(layer["name"])] = f"{layer['k']} x {layer['n']}"
    shapes = {
        key[1]: ", ".join(dims[n] for n in key[1].split(" + ") if n in dims) for key in groups[1]
    }
    return groups, [statistics.median(e) for e in ends], shapes


def _short(name: str, width: int = 60) -> str:
    """A group's node names for the table: each one's last `width` characters (fused groups:
    each part's last width / 2)."""
    parts = name.split(" + ")
    w = width if len(parts) == 1 else width // 2
    return " + ".join(p[-w:] for p in parts)


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
                        f"| {key[0]} {_short(key[1])} | {dims.get(key[1], '')} | {d * 1e3:.2f} "
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
