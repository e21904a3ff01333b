"""The integer attention kernel alone (sqc_attention_q8 of templates/kernels/ops.h), for A/B work.

    python benchmarks/attention_q8_bench.py [--batch 2] [--seq 384] [--repeats 30]
        [--target avx512vbmi] [--rev GIT_REV ...] [TEMPLATES_DIR ...]

Builds the kernel from each git revision's templates (--rev) and each templates folder (none
given: this checkout's), then times the builds interleaved (A, B, A, B, ...) on the same
inputs: 12 heads of 64 features, a QDQ graph's stages (stage 1 and 2 on stage 0's grid scaled
by 1/8, so the softmax takes the fold12 path), a zero mask shared by the rows, operands and
output as levels' bytes, one thread. Prints each build's median and best time and whether its
output bytes equal the first build's. The scores spread over about +-30 of stage 0's levels,
like the random-weight bench models' (nearly uniform attention).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jinja2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.kernels.harness

from sqc.compiler.codegen.build import BASE_CFLAGS, TARGETS  # noqa: E402
from tests.kernels import harness  # noqa: E402
from tests.kernels.test_attention_q8 import CDEF, WRAPPER  # noqa: E402

# the attention's entry point only: older templates lack the other test helpers
CDEF = CDEF.split("void sqc_test_exp_table")[0]
WRAPPER = WRAPPER.split("void sqc_test_exp_table")[0]


def build(templates: Path, target: str, out: Path):
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    source = env.get_template("kernels/ops.h").render() + WRAPPER
    name = f"attq8_{uuid.uuid4().hex[:8]}_"
    return harness.compile_module(name, CDEF, source, BASE_CFLAGS + TARGETS[target]["cflags"], out)


def revision_templates(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "templates"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "templates"


def inputs(batch: int, seq: int):
    H, D = 12, 64
    rng = np.random.default_rng(0)

    def levels(zp, spread):
        return np.clip(np.rint(rng.normal(zp, spread, (batch, seq, H, D))), -128, 127)

    lq, lk, lv = levels(-3, 25), levels(2, 25), levels(-1, 40)
    spread = float(np.std((lq[0, :, 0] + 3) @ (lk[0, :, 0] - 2).T)) * 0.05 * 0.04
    s0 = spread / 30
    s1 = s0 / 8
    fq = np.array(
        [s0, 1, -128, 127, s1, 1, -128, 127, s1, 1, -128, 127]
        + [1 / 255, -128, -128, 127, 0.004, 3, -128, 127],
        np.float32,
    )
    grids = np.array([0.05, -3, -128, 127, 0.04, 2, -128, 127, 0.03, -1, -128, 127], np.float32)
    as_bytes = [(x + 128).astype(np.uint8) for x in (lq, lk, lv)]
    return H, D, fq, grids, as_bytes, np.zeros((batch, seq), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("templates", nargs="*", type=Path)
    parser.add_argument("--rev", action="append", default=[], help="a git revision's templates")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--target", default="avx512vbmi", choices=sorted(TARGETS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="attq8_"))
    dirs = [(str(rev), revision_templates(rev, work / f"rev{i}")) for i, rev in enumerate(args.rev)]
    dirs += [(str(d), d) for d in args.templates] or [("this checkout", ROOT / "templates")]
    mods = [build(d, args.target, work / f"build{i}") for i, (_, d) in enumerate(dirs)]

    B, S = args.batch, args.seq
    H, D, fq, grids, (q8, k8, v8), mask = inputs(B, S)
    out8 = np.zeros((B, S, H, D), np.uint8)

    def call(m):
        ffi = m.ffi

        def view():
            return ffi.new("int64_t[5]", [0, D, H * D, 1, S * H * D])

        def ptr(a, t):
            return ffi.cast(t, a.ctypes.data)

        m.lib.sqc_test_attention_q8(
            B, H, S, S, D, ffi.NULL, view(), ffi.NULL, view(), ffi.NULL, view(),
            ptr(mask, "float *"), ffi.new("int64_t[5]", [0, 0, 0, 1, S]), ffi.NULL, view(),
            ptr(fq, "float *"), 1.0, 0.125, ptr(grids, "float *"), ptr(q8, "uint8_t *"),
            ptr(k8, "uint8_t *"), ptr(v8, "uint8_t *"), ptr(out8, "uint8_t *"), 1,
        )  # fmt: skip
        return out8.copy()

    first = call(mods[0])
    same = [np.array_equal(call(m), first) for m in mods]
    times = [[] for _ in mods]
    for _ in range(args.repeats):
        for i, m in enumerate(mods):
            t = time.perf_counter()
            call(m)
            times[i].append(time.perf_counter() - t)
    print(f"sqc_attention_q8, {B} x {S}, 12 heads of 64, 1 thread, target {args.target}")
    for (name, _), t, eq in zip(dirs, times, same):
        print(
            f"  {name}: median {1e3 * np.median(t):.2f} ms, best {1e3 * min(t):.2f} ms"
            + ("" if eq else "  (output bytes differ from the first build's)")
        )


if __name__ == "__main__":
    main()
