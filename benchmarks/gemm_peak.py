"""fp32 peak of this machine, and sqc_f32_gemm against it and against numpy, at bert-base shapes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm_peak.py

(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where the machine sets them, force an older OpenBLAS
kernel: unset them in this command only, for a fair numpy reading; the script prints the kernel
numpy's OpenBLAS runs.)

Options: --isa avx2 (default: every variant this CPU runs natively), --knobs mr=6,kc=320 to try
other knobs than packing.py's table (for tuning), --threads 1,2, --quick (M=2048 N=K=768 only),
--rounds 3 (each figure the best of 3 passes of the whole table: for a machine shared with other
processes, where a core taken for a moment wrecks a multi-thread reading).

Peak probe: a tight loop of independent FMAs on as many vector registers as the ISA has
(12 ymm / 24 zmm accumulators: enough to cover FMA latency x throughput), 1 and 2 threads.
GFLOP/s counts 2*M*N*K per GEMM; each figure is the best of several timed repeats.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cffi import FFI

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.kernels.harness

from sqc.compiler.codegen.kernels import KERNEL_VARIANTS, KernelVariant
from sqc.compiler.codegen.packing import pack_f32_panels
from tests.kernels import harness

SHAPES_M = (128, 2048)
SHAPES_NK = ((768, 768), (3072, 768), (768, 3072))

PEAK_C = """
#include <immintrin.h>
#include <omp.h>
#if defined(__AVX512F__)
typedef __m512 vec;
#define VFLOATS 16
#define NACC 24
#define vset1 _mm512_set1_ps
#define vfma _mm512_fmadd_ps
#define vadd _mm512_add_ps
#define vstore _mm512_storeu_ps
#else
typedef __m256 vec;
#define VFLOATS 8
#define NACC 12
#define vset1 _mm256_set1_ps
#define vfma _mm256_fmadd_ps
#define vadd _mm256_add_ps
#define vstore _mm256_storeu_ps
#endif

static float fma_loop(long iters)
{
    vec acc[NACC];
    const vec x = vset1(0.999999f), y = vset1(1e-6f);
    for (int i = 0; i < NACC; i++)
        acc[i] = vset1((float)i);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 32
        for (int i = 0; i < NACC; i++)
            acc[i] = vfma(acc[i], x, y);
    }
    vec s = acc[0];
    for (int i = 1; i < NACC; i++)
        s = vadd(s, acc[i]);
    float out[VFLOATS];
    vstore(out, s);
    return out[0];
}

/* GFLOP/s of nthreads threads each running iters iterations of NACC vector FMAs */
double sqc_peak_gflops(long iters, int nthreads, float *sink)
{
    float total = 0.0f;
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nthreads) reduction(+ : total)
    total += fma_loop(iters);
    double t = omp_get_wtime() - t0;
    *sink = total;
    return (double)nthreads * (double)iters * NACC * VFLOATS * 2.0 / t / 1e9;
}
"""


def build_peak(isa: str, build_dir: str):
    ffi = FFI()
    ffi.cdef("double sqc_peak_gflops(long iters, int nthreads, float *sink);")
    name = f"_sqc_peak_{isa}_{os.getpid()}"
    ffi.set_source(
        name,
        PEAK_C,
        extra_compile_args=["-O3", "-fopenmp"] + harness.ISA_CFLAGS[isa],
        extra_link_args=["-fopenmp"],
    )
    path = ffi.compile(tmpdir=build_dir)
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak(module, threads: list[int]) -> dict[int, float]:
    """{threads: GFLOP/s} of the FMA loop in ``module`` (from build_peak)."""
    sink = module.ffi.new("float *")
    module.lib.sqc_peak_gflops(1_000_000, 1, sink)  # warm up the clocks
    return {
        nt: max(module.lib.sqc_peak_gflops(100_000_000, nt, sink) for _ in range(3))
        for nt in threads
    }


def aligned_empty(shape, align: int = 64) -> np.ndarray:
    """float32 array whose data starts on an ``align``-byte boundary (as generated C places it)."""
    size = int(np.prod(shape))
    raw = np.empty(size + align // 4, dtype=np.float32)
    offset = (-raw.ctypes.data % align) // 4
    return raw[offset : offset + size].reshape(shape)


def best_seconds(fn, min_total: float = 0.3, repeats: int = 5) -> float:
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 > min_total / repeats:
            break
        n *= 2
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


class OpenBlasThreads:
    """numpy's OpenBLAS thread count and core name, via threadpoolctl or the library itself."""

    def __init__(self) -> None:
        self.lib = None
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1]
            if "openblas" in path.lower() and ".so" in path:
                self.lib = ctypes.CDLL(path)
                break

    def _symbol(self, *names):
        for name in names:
            if self.lib is not None and hasattr(self.lib, name):
                return getattr(self.lib, name)
        return None

    def set(self, n: int) -> bool:
        fn = self._symbol(
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        )
        if fn is None:
            return False
        fn(ctypes.c_int(n))
        return True

    def corename(self) -> str:
        fn = self._symbol(
            "scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"
        )
        if fn is None:
            return "unknown"
        fn.restype = ctypes.c_char_p
        return fn().decode()


def bench_variant(variant: KernelVariant, module, threads: list[int], shapes) -> dict:
    """{(M, N, K, threads): GFLOP/s} of the built ``module`` of ``variant``."""
    ffi, lib = module.ffi, module.lib
    rng = np.random.default_rng(0)
    rows = {}
    for M, N, K in shapes:
        A = aligned_empty((M, K))
        A[:] = rng.standard_normal((M, K), dtype=np.float32)
        W = rng.standard_normal((K, N), dtype=np.float32)
        packed = pack_f32_panels(W, variant.knobs["nr"])
        Wp = aligned_empty(packed.shape)
        Wp[:] = packed
        bias = rng.standard_normal(N, dtype=np.float32)
        C = aligned_empty((M, N))
        pa, pw, pb, pc = (ffi.cast("float *", x.ctypes.data) for x in (A, Wp, bias, C))
        for nt in threads:
            args = (M, N, K, pa, K, pw, pb, ffi.NULL, pc, N, 0, nt)
            seconds = best_seconds(lambda args=args: lib.sqc_test_f32_gemm(*args))
            rows[(M, N, K, nt)] = 2.0 * M * N * K / seconds / 1e9
        ref = A.astype(np.float64) @ W.astype(np.float64) + bias
        err = np.abs(C - ref).max() / np.abs(ref).max()
        assert err < 1e-4, f"wrong result at {M}x{N}x{K}: rel err {err}"
    return rows


def bench_numpy(threads: list[int], shapes) -> dict:
    blas = OpenBlasThreads()
    rng = np.random.default_rng(0)
    out = {}
    for nt in threads:
        if not blas.set(nt):
            return {}
        for M, N, K in shapes:
            A = rng.standard_normal((M, K), dtype=np.float32)
            W = rng.standard_normal((K, N), dtype=np.float32)
            C = np.empty((M, N), dtype=np.float32)
            seconds = best_seconds(lambda A=A, W=W, C=C: np.matmul(A, W, out=C))
            out[(M, N, K, nt)] = 2.0 * M * N * K / seconds / 1e9
    return out


def parse_knobs(text: str) -> dict[str, int]:
    knobs = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        knobs[key.strip()] = int(value)
    return knobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isa", choices=["avx512", "avx2"])
    parser.add_argument("--knobs", default="", help="override knobs, e.g. mr=6,nr=16,kc=256")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--quick", action="store_true", help="M=2048, N=K=768 only")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="best of this many passes")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = (
        [(2048, 768, 768)] if args.quick else [(M, N, K) for M in SHAPES_M for N, K in SHAPES_NK]
    )

    variants = [v for v in KERNEL_VARIANTS if args.isa in (None, v.isa)]
    runnable = [v for v in variants if harness.cpu_supports(v.isa)]
    for v in variants:
        if v not in runnable:
            print(f"{v.name}: not timed, {harness.how_to_run(v.isa)[1]}")
    if not runnable:
        sys.exit("no variant runs natively on this CPU")
    overrides = parse_knobs(args.knobs)

    with tempfile.TemporaryDirectory(prefix="sqc_gemm_bench_") as build_dir:
        built = []
        for variant in runnable:
            knobs = {**variant.knobs, **overrides}
            name = f"sqc_f32_gemm_{knobs['mr']}x{knobs['nr']}__{variant.isa}"
            variant = KernelVariant(name, variant.template, variant.isa, knobs)
            built.append((variant, harness.build_f32_gemm(variant, build_dir)))
        peak_modules = {v.isa: build_peak(v.isa, build_dir) for v, _ in built}

        # Each figure is the best over --rounds passes of the whole table: on a shared machine,
        # another process holding a core for a moment wrecks a multi-thread reading.
        peaks: dict[str, dict[int, float]] = {}
        sqc_rows: dict[str, dict] = {}
        numpy_rows: dict = {}
        for _ in range(args.rounds):
            for isa, module in peak_modules.items():
                for nt, g in peak(module, threads).items():
                    peaks.setdefault(isa, {})[nt] = max(g, peaks.get(isa, {}).get(nt, 0.0))
            # sqc before numpy: numpy's OpenBLAS threads keep spinning after a call and would
            # steal the cores from the OpenMP threads timed next.
            for variant, module in built:
                rows = sqc_rows.setdefault(variant.name, {})
                for key, g in bench_variant(variant, module, threads, shapes).items():
                    rows[key] = max(g, rows.get(key, 0.0))
            if not args.no_numpy:
                for key, g in bench_numpy(threads, shapes).items():
                    numpy_rows[key] = max(g, numpy_rows.get(key, 0.0))

        if not args.no_numpy:
            blas = OpenBlasThreads()
            print(
                f"numpy {np.__version__}, OpenBLAS core: {blas.corename()}, "
                f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
            )
        for isa, by_threads in peaks.items():
            print(
                f"fp32 FMA peak ({isa}): "
                + ", ".join(
                    f"{nt} thread{'s' * (nt > 1)} {g:.1f} GFLOP/s" for nt, g in by_threads.items()
                )
            )
            one = by_threads.get(1)
            for nt, g in by_threads.items():
                if one and nt > 1 and g < 0.9 * nt * one:
                    print(
                        f"WARNING: {nt}-thread peak is {g / one:.2f}x the 1-thread peak: other "
                        f"processes hold cores (load average {os.getloadavg()[0]:.2f}); "
                        "multi-thread figures below are not meaningful, rerun on a quiet machine"
                    )
        for variant, _ in built:
            print(
                f"\n{variant.name}  knobs: "
                + " ".join(f"{k}={v}" for k, v in variant.knobs.items())
            )
            print(
                f"{'M':>5} {'N':>5} {'K':>5} {'thr':>3} {'GFLOP/s':>8} {'% peak':>7} {'numpy':>8}"
            )
            for (M, N, K, nt), g in sqc_rows[variant.name].items():
                ref = numpy_rows.get((M, N, K, nt))
                ref_text = f"{ref:8.1f}" if ref else f"{'-':>8}"
                print(
                    f"{M:5d} {N:5d} {K:5d} {nt:3d} {g:8.1f} "
                    f"{100 * g / peaks[variant.isa][nt]:6.1f}% {ref_text}"
                )


if __name__ == "__main__":
    main()
