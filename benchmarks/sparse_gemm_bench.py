"""Sparse GEMM kernels against the dense ones of the same target, at bert-base linear shapes.

    python benchmarks/sparse_gemm_bench.py                 # every target this CPU runs
    python benchmarks/sparse_gemm_bench.py --quick         # M=128, (768, 768) only
    python benchmarks/sparse_gemm_bench.py --kind int8 --threads 1 --M 128,2048

For each (K, N) in (768, 768), (768, 3072), (3072, 768), each M, sparsity and pattern
(unstructured, 1o4i: 4 consecutive k for one output; 4o1i: 4 consecutive outputs for one k), it
times sqc_f32_spmm vs sqc_f32_gemm and sqc_u8s8_spmm vs sqc_u8s8_gemm on the same weights, in one
process, interleaved (sparse, dense, sparse, dense, ...), each figure the best of --rounds
rounds, at 1 and 2 threads. It prints the times and the speedup dense / sparse, and the cost
model's estimate (sparse_packing.sparse_gain) next to it. The int8 timings are the GEMMs alone
(the activations are already quantized; quantization costs the same for both).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.kernels.harness

from sqc.compiler.codegen.kernels import KERNEL_VARIANTS, SPARSE_GEMM_TEMPLATE  # noqa: E402
from sqc.compiler.codegen.packing import (  # noqa: E402
    int8_gemm_lda,
    pack_f32_gemm_weights,
    pack_s8_gemm_weights,
    s8_gemm_col_sums,
)
from sqc.compiler.codegen.sparse_packing import (  # noqa: E402
    pack_f32_sparse,
    pack_s8_sparse,
    sparse_gain,
    spmm_scratch_bytes,
)
from tests.kernels import harness  # noqa: E402

SHAPES_KN = ((768, 768), (768, 3072), (3072, 768))
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def aligned(nbytes: int) -> np.ndarray:
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off : off + nbytes]


def aligned_copy(a: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
    out = aligned(flat.size)
    out[:] = flat
    return out


def mask(K: int, N: int, sparsity: float, pattern: str, rng) -> np.ndarray:
    keep = 1.0 - sparsity
    if pattern == "unstructured":
        return rng.random((K, N)) < keep
    if pattern == "1o4i":
        return np.repeat(rng.random((-(-K // 4), N)) < keep, 4, axis=0)[:K]
    return np.repeat(rng.random((K, -(-N // 4))) < keep, 4, axis=1)[:, :N]


def calls_for(fn, target: float = 0.02) -> int:
    """Calls per timed round so that a round lasts about ``target`` seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(target / one))


def interleaved(fns, rounds: int) -> list[float]:
    """Best seconds per call of each of ``fns``, timed in turn, ``rounds`` times."""
    ns = [calls_for(f) for f in fns]
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, (f, n) in enumerate(zip(fns, ns)):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            best[i] = min(best[i], (time.perf_counter() - t0) / n)
    return best


def bench_target(variant, module, args) -> None:
    ffi, lib = module.ffi, module.lib
    isa, int8_isa = variant.knobs["isa"], variant.knobs["int8_isa"]
    rng = np.random.default_rng(0)
    p = lambda a, t: ffi.cast(t, a.ctypes.data)  # noqa: E731
    dense_int8 = args.dense_int8 or int8_isa  # the cost model's key for the int8 rows
    print(f"\n== {variant.name} (dense int8: {dense_int8})")
    print(
        f"{'kind':5} {'M':>5} {'K':>5} {'N':>5} {'pattern':>12} {'sp':>5} {'thr':>3} "
        f"{'dense ms':>9} {'sparse ms':>9} {'speedup':>7} {'model':>6}"
    )
    for K, N in args.shapes:
        for M in args.M:
            X = rng.standard_normal((M, K)).astype(np.float32)
            C = aligned(M * N * 4).view(np.float32)
            bias = rng.standard_normal(N).astype(np.float32)
            if "f32" in args.kind:
                W = rng.standard_normal((K, N)).astype(np.float32)
                Wd = aligned_copy(pack_f32_gemm_weights(W, isa))
                scratch = aligned(spmm_scratch_bytes(M, K, N, "f32", isa))
                for pattern in ("unstructured", "1o4i", "4o1i"):
                    for sp in args.sparsity:
                        Ws = W * mask(K, N, sp, pattern, rng)
                        blob = aligned_copy(pack_f32_sparse(Ws, isa))
                        gain = sparse_gain("f32", isa, Ws, M)
                        for nt in args.threads:
                            x, c, b = p(X, "float *"), p(C, "float *"), p(bias, "float *")
                            dense = partial(lib.sqc_test_f32_gemm, M, N, K, x, K,
                                            p(Wd, "float *"), b, ffi.NULL, c, N, 0, nt)  # fmt: skip
                            sparse = partial(lib.sqc_test_f32_spmm, M, N, K, x, K,
                                             p(blob, "void *"), b, ffi.NULL, c, N, 0,
                                             p(scratch, "void *"), nt)  # fmt: skip
                            td, ts = interleaved([dense, sparse], args.rounds)
                            print(
                                f"{'f32':5} {M:5} {K:5} {N:5} {pattern:>12} {sp:5.2f} {nt:3} "
                                f"{td * 1e3:9.3f} {ts * 1e3:9.3f} {td / ts:7.2f} {gain:6.2f}",
                                flush=True,
                            )
            if "int8" in args.kind:
                ldq = int8_gemm_lda(K, int8_isa)
                Aq = rng.integers(0, 256, (M, ldq), dtype=np.uint8)
                a_scale = np.full(M, 0.02, np.float32)
                a_zp = rng.integers(0, 256, M, dtype=np.int32)
                rowsum = Aq[:, :K].sum(axis=1, dtype=np.int64).astype(np.int32)
                w_scale = np.full(N, 1e-3, np.float32)
                W = rng.integers(-128, 128, (K, N), dtype=np.int8)
                Wd = aligned_copy(pack_s8_gemm_weights(W, int8_isa))
                scratch = aligned(spmm_scratch_bytes(M, K, N, "int8", int8_isa))
                for pattern in ("unstructured", "1o4i"):
                    for sp in args.sparsity:
                        Ws = W * mask(K, N, sp, pattern, rng).astype(np.int8)
                        blob = aligned_copy(pack_s8_sparse(Ws, int8_isa))
                        col_comp = (-s8_gemm_col_sums(Ws)).astype(np.int32)
                        gain = sparse_gain("int8", dense_int8, Ws, M)
                        common = (
                            p(a_scale, "float *"), p(a_zp, "int32_t *"), p(col_comp, "int32_t *"),
                            ffi.NULL, p(rowsum, "int32_t *"), p(w_scale, "float *"),
                            p(bias, "float *"), ffi.NULL, p(C, "float *"), N, 0,
                        )  # fmt: skip
                        for nt in args.threads:
                            aq = p(Aq, "uint8_t *")
                            dense = partial(lib.sqc_test_u8s8_gemm, M, N, K, aq, ldq,
                                            p(Wd, "int8_t *"), *common, nt)  # fmt: skip
                            sparse = partial(lib.sqc_test_u8s8_spmm, M, N, K, aq, ldq,
                                             p(blob, "void *"), *common, p(scratch, "void *"),
                                             nt)  # fmt: skip
                            td, ts = interleaved([dense, sparse], args.rounds)
                            print(
                                f"{'int8':5} {M:5} {K:5} {N:5} {pattern:>12} {sp:5.2f} {nt:3} "
                                f"{td * 1e3:9.3f} {ts * 1e3:9.3f} {td / ts:7.2f} {gain:6.2f}",
                                flush=True,
                            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="f32,int8", help="f32, int8 or both (comma separated)")
    ap.add_argument("--isa", default=None, help="fp32 isa of the target (default: all runnable)")
    ap.add_argument("--int8-isa", default=None, help="int8 isa of the target")
    ap.add_argument(
        "--dense-int8",
        default=None,
        help="the dense int8 GEMM to time against, e.g. avx512_amx (the avx512amx target's; "
        "default: the target's int8 isa)",
    )
    ap.add_argument("--M", default="128,2048", help="token counts, comma separated")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--sparsity", default=",".join(str(s) for s in SPARSITIES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="M=128, (768, 768) only")
    args = ap.parse_args()
    args.kind = args.kind.split(",")
    args.M = [128] if args.quick else [int(m) for m in args.M.split(",")]
    args.threads = [int(t) for t in args.threads.split(",")]
    args.sparsity = [float(s) for s in args.sparsity.split(",")]
    args.shapes = [(768, 768)] if args.quick else list(SHAPES_KN)
    variants = [
        v
        for v in KERNEL_VARIANTS
        if v.template == SPARSE_GEMM_TEMPLATE
        and args.isa in (None, v.knobs["isa"])
        and args.int8_isa in (None, v.knobs["int8_isa"])
    ]
    with tempfile.TemporaryDirectory() as build:
        for v in variants:
            ok, why = harness.sparse_gemm_runnable(v)
            if not ok:
                print(f"skip: {why}")
                continue
            bench_target(v, harness.build_sparse_gemm(v, build, args.dense_int8), args)


if __name__ == "__main__":
    main()
