"""fp32 peak of this machine, and sqc_f32_gemm against it and against numpy, at bert-base shapes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm_peak.py

(OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where the machine sets them, force an older OpenBLAS
kernel: unset them in this command only, for a fair numpy reading; the script prints the kernel
numpy's OpenBLAS runs.)

Options: --section int8 (or f32; default both), --int8-isa / --int8-knobs (as --isa / --knobs
for the int8 tables), --isa avx2 (default: every variant this CPU runs natively), --knobs
mr=6,kc=320 to try other knobs than packing.py's table (for tuning), --threads 1,2, --quick
(M=2048 N=K=768 only), --rounds 3 (each figure the best of 3 passes of the whole table: for a
machine shared with other processes, where a core taken for a moment wrecks a multi-thread reading).

Peak probe: a tight loop of independent FMAs on as many vector registers as the ISA has
(12 ymm / 24 zmm accumulators: enough to cover FMA latency x throughput), 1 and 2 threads.
GFLOP/s counts 2*M*N*K per GEMM; each figure is the best of several timed repeats.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
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
from sqc.compiler.codegen.packing import (
    int8_gemm_lda,
    pack_f32_panels,
    pack_s8_gemm_weights,
    s8_gemm_col_sums,
)
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


# ---- int8: VNNI peak and sqc_u8s8_gemm ---------------------------------------------------------

VNNI_PEAK_C = """
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#if defined(SQC_ZMM)
typedef __m512i vec;
#define VBYTES 64
#define NACC 24
#define vset1 _mm512_set1_epi32
#define SQC_DP_ASM "vpdpbusd %2, %1, %0" : "+v"
#define vadd _mm512_add_epi32
#define vstore(p, v) _mm512_storeu_si512((void *)(p), v)
#else
typedef __m256i vec;
#define VBYTES 32
#define NACC 12
#define vset1 _mm256_set1_epi32
#define SQC_DP_ASM "%{vex%} vpdpbusd %2, %1, %0" : "+x"
#define vadd _mm256_add_epi32
#define vstore(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#endif

/* NACC named accumulators (an array made gcc spill them to the stack every iteration) */
#define SQC_ACCS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) SQC_ACCS_HI(X)
#if NACC == 24
#define SQC_ACCS_HI(X) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
#else
#define SQC_ACCS_HI(X)
#endif
#define SQC_DECL(i) vec acc##i = vset1(i);
/* inline asm, as the kernel: through the intrinsic gcc 12 copies and spills the accumulators */
#define SQC_DP(i) __asm__(SQC_DP_ASM(acc##i) : "x"(x), "x"(y));
#define SQC_SUM(i) s = vadd(s, acc##i);

static int32_t dp_loop(long iters)
{
    const vec x = vset1(0x01010101), y = vset1(0x01ff01ff);
    SQC_ACCS(SQC_DECL)
    for (long it = 0; it < iters; it++) {
        SQC_ACCS(SQC_DP)
        __asm__ volatile("" ::: "memory");
    }
    vec s = vset1(0);
    SQC_ACCS(SQC_SUM)
    int32_t out[VBYTES / 4];
    vstore(out, s);
    return out[0];
}

/* GOP/s (2 ops per u8 x s8 product: VBYTES products per instruction) of nthreads threads */
double sqc_vnni_peak_gops(long iters, int nthreads, int32_t *sink)
{
    int32_t total = 0;
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nthreads) reduction(+ : total)
    total += dp_loop(iters);
    double t = omp_get_wtime() - t0;
    *sink = total;
    return (double)nthreads * (double)iters * NACC * VBYTES * 2.0 / t / 1e9;
}
"""


def build_vnni_peak(isa: str, build_dir: str):
    """The vpdpbusd peak probe: zmm (24 chains) for avx512_vnni, ymm (12 chains) for avx_vnni."""
    import importlib.util

    ffi = FFI()
    ffi.cdef("double sqc_vnni_peak_gops(long iters, int nthreads, int32_t *sink);")
    name = f"_sqc_vnni_peak_{isa}_{os.getpid()}"
    defines = ["-DSQC_ZMM"] if isa == "avx512_vnni" else []
    ffi.set_source(
        name,
        VNNI_PEAK_C,
        extra_compile_args=["-O3", "-fopenmp", *defines] + harness.ISA_CFLAGS[isa],
        extra_link_args=["-fopenmp"],
    )
    path = ffi.compile(tmpdir=build_dir)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vnni_peak(module, threads: list[int]) -> dict[int, float]:
    sink = module.ffi.new("int32_t *")
    module.lib.sqc_vnni_peak_gops(1_000_000, 1, sink)  # warm up the clocks
    return {
        nt: max(module.lib.sqc_vnni_peak_gops(50_000_000, nt, sink) for _ in range(3))
        for nt in threads
    }


def quantize_activations(lib, M, K, px, paq, ldq, scale, zp, a_scale, a_zp, ptrs, nt) -> None:
    """DynamicQuantizeLinear of the whole M x K input, as the generated code runs it.
    ptrs: (a_scale, a_zp, rowsum) as C pointers."""
    lib.sqc_test_dynamic_qparams_u8(M, K, px, K, scale, zp)
    a_scale[:] = scale[0]
    a_zp[:] = zp[0]
    lib.sqc_test_quantize_rows_u8(M, K, px, K, ptrs[0], ptrs[1], paq, ldq, ptrs[2], nt)


def bench_int8_variant(variant: KernelVariant, module, threads: list[int], shapes) -> dict:
    """{(M, N, K, threads): GOP/s} of sqc_u8s8_gemm (bias, w_zp, no activation), and
    {(M, K, threads): seconds} of sqc_dynamic_qparams_u8 + sqc_quantize_rows_u8 on M x K."""
    ffi, lib = module.ffi, module.lib
    rng = np.random.default_rng(0)
    gemm_rows, quant_rows = {}, {}
    for M, N, K in shapes:
        ldq = int8_gemm_lda(K, variant.isa)
        X = aligned_empty((M, K))
        X[:] = rng.standard_normal((M, K), dtype=np.float32)
        Aq = np.zeros((M, ldq), dtype=np.uint8)
        W = rng.integers(-128, 128, (K, N), dtype=np.int8)
        packed = pack_s8_panels_for_bench(W, variant)
        Wp = aligned_empty((packed.size + 3) // 4).view(np.int8)[: packed.size]
        Wp[:] = packed.ravel()
        a_scale = np.full(M, 0.02, dtype=np.float32)
        a_zp = np.full(M, 128, dtype=np.int32)
        rowsum = np.zeros(M, dtype=np.int32)
        w_scale = np.full(N, 1e-3, dtype=np.float32)
        w_zp = np.zeros(N, dtype=np.int32)
        col_comp = (-s8_gemm_col_sums(W)).astype(np.int32)
        bias = rng.standard_normal(N, dtype=np.float32)
        C = aligned_empty((M, N))
        scale = ffi.new("float *")
        zp = ffi.new("int32_t *")

        def p(array, ctype):
            return ffi.cast(ctype, array.ctypes.data)

        px, paq = p(X, "float *"), p(Aq, "uint8_t *")
        pas, pazp, prs = p(a_scale, "float *"), p(a_zp, "int32_t *"), p(rowsum, "int32_t *")
        for nt in threads:
            quantize = functools.partial(
                quantize_activations,
                lib,
                M,
                K,
                px,
                paq,
                ldq,
                scale,
                zp,
                a_scale,
                a_zp,
                (pas, pazp, prs),
                nt,
            )
            quant_rows[(M, K, nt)] = best_seconds(quantize)
            args = (
                M,
                N,
                K,
                paq,
                ldq,
                p(Wp, "int8_t *"),
                pas,
                pazp,
                p(col_comp, "int32_t *"),
                p(w_zp, "int32_t *"),
                prs,
                p(w_scale, "float *"),
                p(bias, "float *"),
                ffi.NULL,
                p(C, "float *"),
                N,
                0,
                nt,
            )
            seconds = best_seconds(lambda args=args: lib.sqc_test_u8s8_gemm(*args))
            gemm_rows[(M, N, K, nt)] = 2.0 * M * N * K / seconds / 1e9
        acc = Aq[:, :K].astype(np.int64) @ W.astype(np.int64) + a_zp[:, None] * col_comp
        ref = acc.astype(np.float32) * (a_scale[:, None] * w_scale) + bias
        err = np.abs(C - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"wrong int8 result at {M}x{N}x{K}: rel err {err}"
    return gemm_rows, quant_rows


def pack_s8_panels_for_bench(W: np.ndarray, variant: KernelVariant) -> np.ndarray:
    """pack_s8_gemm_weights, but for this variant's (possibly overridden) nr."""
    from sqc.compiler.codegen import packing

    saved = packing._INT8_GEMM_KNOBS[variant.isa]
    packing._INT8_GEMM_KNOBS[variant.isa] = {k: variant.knobs[k] for k in ("mr", "nr", "mc", "nc")}
    try:
        return pack_s8_gemm_weights(W, variant.isa)
    finally:
        packing._INT8_GEMM_KNOBS[variant.isa] = saved


def int8_section(args, threads: list[int]) -> None:
    shapes = (
        [(2048, 768, 768)] if args.quick else [(M, N, K) for M in SHAPES_M for N, K in SHAPES_NK]
    )
    variants = [
        v
        for v in KERNEL_VARIANTS
        if v.template == "kernels/int8_gemm.h.j2" and args.int8_isa in (None, v.isa)
    ]
    runnable = [v for v in variants if harness.cpu_supports(v.isa)]
    for v in variants:
        if v not in runnable:
            print(f"{v.name}: not timed, CPU lacks {harness.ISA_CPU_FLAGS[v.isa]}")
    overrides = parse_knobs(args.int8_knobs)
    with tempfile.TemporaryDirectory(prefix="sqc_int8_bench_") as build_dir:
        built = []
        for variant in runnable:
            knobs = {**variant.knobs, **overrides}
            name = f"sqc_u8s8_gemm_{knobs['mr']}x{knobs['nr']}__{variant.isa}"
            variant = KernelVariant(name, variant.template, variant.isa, knobs)
            built.append((variant, harness.build_int8_gemm(variant, build_dir)))
        peak_isas = [i for i in ("avx512_vnni", "avx_vnni") if harness.cpu_supports(i)]
        peak_modules = {isa: build_vnni_peak(isa, build_dir) for isa in peak_isas}
        peaks: dict[str, dict[int, float]] = {}
        gemm_rows: dict[str, dict] = {}
        quant_rows: dict[str, dict] = {}
        for _ in range(args.rounds):
            for isa, module in peak_modules.items():
                for nt, g in vnni_peak(module, threads).items():
                    peaks.setdefault(isa, {})[nt] = max(g, peaks.get(isa, {}).get(nt, 0.0))
            for variant, module in built:
                g_rows, q_rows = bench_int8_variant(variant, module, threads, shapes)
                rows = gemm_rows.setdefault(variant.name, {})
                for key, g in g_rows.items():
                    rows[key] = max(g, rows.get(key, 0.0))
                rows = quant_rows.setdefault(variant.name, {})
                for key, t in q_rows.items():
                    rows[key] = min(t, rows.get(key, float("inf")))
        for isa, by_threads in peaks.items():
            print(
                f"vpdpbusd peak ({'zmm' if isa == 'avx512_vnni' else 'ymm'}, {isa}): "
                + ", ".join(
                    f"{nt} thread{'s' * (nt > 1)} {g:.1f} GOP/s" for nt, g in by_threads.items()
                )
            )
        best_peak = {
            nt: max((p.get(nt, 0.0) for p in peaks.values()), default=0.0) for nt in threads
        }
        for variant, _ in built:
            print(
                f"\n{variant.name}  knobs: "
                + " ".join(f"{k}={v}" for k, v in variant.knobs.items())
            )
            print(
                f"{'M':>5} {'N':>5} {'K':>5} {'thr':>3} {'GOP/s':>8} {'% peak':>7} "
                f"{'quant ms':>8} {'% gemm':>6}"
            )
            for (M, N, K, nt), g in gemm_rows[variant.name].items():
                own = peaks.get(variant.isa, {}).get(nt) or best_peak.get(nt) or float("nan")
                q = quant_rows[variant.name][(M, K, nt)]
                gemm_s = 2.0 * M * N * K / g / 1e9
                print(
                    f"{M:5d} {N:5d} {K:5d} {nt:3d} {g:8.1f} {100 * g / own:6.1f}% "
                    f"{1e3 * q:8.3f} {100 * q / gemm_s:5.1f}%"
                )
        print(
            "\n% peak: of the vpdpbusd peak of the variant's own vector width (avx2: of the best "
            "VNNI peak); quant ms: sqc_dynamic_qparams_u8 + sqc_quantize_rows_u8 of the M x K "
            "input, % gemm: that time over the GEMM's."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--isa", choices=["avx512", "avx2"])
    parser.add_argument("--knobs", default="", help="override knobs, e.g. mr=6,nr=16,kc=256")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--quick", action="store_true", help="M=2048, N=K=768 only")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="best of this many passes")
    parser.add_argument(
        "--section", choices=["all", "f32", "int8"], default="all", help="which tables to run"
    )
    parser.add_argument("--int8-isa", choices=["avx512_vnni", "avx512_amx", "avx_vnni", "avx2"])
    parser.add_argument("--int8-knobs", default="", help="override int8 knobs, e.g. mr=8,nr=32")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = (
        [(2048, 768, 768)] if args.quick else [(M, N, K) for M in SHAPES_M for N, K in SHAPES_NK]
    )

    if args.section in ("all", "int8"):
        int8_section(args, threads)
    if args.section == "int8":
        return

    variants = [
        v
        for v in KERNEL_VARIANTS
        if v.template == "kernels/f32_gemm.h.j2" and args.isa in (None, v.isa)
    ]
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
