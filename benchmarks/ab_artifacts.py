"""Two sqc artifacts of the same model, A and B, on the same inputs, interleaved: is B faster,
and are its outputs the same bits?

    python benchmarks/ab_artifacts.py ARTIFACT_A ARTIFACT_B [--batch 16] [--seq 128]
        [--threads 1] [--repeats 9] [--pause 0.0]

For a kernel or codegen change: build the model once with the old code (e.g. from a `git stash`
checkout) and once with the new, then compare here. Calls alternate (B, A, B, A, ...); the figure
to read is the median of the per-pair ratios A / B (above 1: B is faster). On this 2-vCPU host,
timings of one engine taken minutes apart drift by several percent, more than most single
changes are worth, so sequential runs mislead where this does not. --pause sleeps before every
call (0.2 s is what compare_onnxruntime.py does: the thread pool's helpers go to sleep and each
call pays their wake-up). Outputs are compared first: identical, or the largest difference.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see compare_onnxruntime.py

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_onnxruntime import interleave  # noqa: E402

from sqc.runtime.engine import Engine, generate_random_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="artifact A (the baseline)")
    parser.add_argument("b", help="artifact B (the change)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=None, help="bucket (default: A's first)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9, help="pairs of timed calls")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds before every call")
    args = parser.parse_args()
    a, b = Engine(args.a), Engine(args.b)
    if a.input_names != b.input_names or a.output_names != b.output_names:
        raise SystemExit("A and B have different inputs or outputs: not builds of one model")
    seq = args.seq or a.buckets[0]
    inputs = generate_random_inputs(a, args.batch, seq, seed=0)

    out_a, out_b = a.run(inputs, threads=args.threads), b.run(inputs, threads=args.threads)
    diffs = [float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(out_a, out_b)]
    same = all(np.array_equal(x, y) for x, y in zip(out_a, out_b))
    print("outputs: " + ("identical" if same else f"differ, max |A - B| = {max(diffs):.3g}"))

    # the ratio is A's time over B's: above 1, B is faster
    (ms_b, ms_a), (ratio,) = interleave(
        [lambda: b.run(inputs, threads=args.threads), lambda: a.run(inputs, threads=args.threads)],
        args.repeats,
        args.pause,
    )
    ms_a, ms_b = ms_a * 1e3, ms_b * 1e3
    verdict = f"{'B faster' if ratio > 1 else 'B slower'} by {abs(ratio - 1) * 100:.1f}%"
    print(
        f"{args.batch} x {seq}, {args.threads} thread(s), {args.repeats} pairs: "
        f"A {ms_a:.2f} ms, B {ms_b:.2f} ms, A / B {ratio:.3f} ({verdict})"
    )


if __name__ == "__main__":
    main()
