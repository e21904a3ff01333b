"""Build sqc kernel templates into small cffi modules for kernel tests and benchmarks.

A rendered kernel header only defines ``static`` functions; the harness wraps them in exported
``sqc_test_*`` functions, compiles with the ISA's flags and loads the module from a folder.

AVX-512 on a machine without it: SIMDe (https://github.com/simd-everywhere/simde) implements the
``_mm512_*`` intrinsics on AVX2, so the avx512 variant's C (tiling, tails, masks, epilogue) can be
checked, not timed, anywhere. Its headers come from the ``simde-py`` wheel (or a system SIMDe
>= 0.8).

int8 GEMMs (templates/kernels/int8_gemm.h.j2, ISAs avx512_vnni, avx_vnni, avx2) are rendered after
an f32 GEMM header (whose GELU helpers they use) and run natively only: there is no emulation of
VNNI, a CPU without it skips them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
from cffi import FFI

from sqc.compiler.codegen.build import BASE_CFLAGS, TARGETS  # the flags an artifact is built with
from sqc.compiler.codegen.kernels import KernelVariant, render_kernel

# Kernel ISAs and the compile targets (sqc.compiler.codegen.build.TARGETS) whose flags and
# /proc/cpuinfo features they take: a kernel is tested with the flags an artifact is built with.
# "avx512" is the f32 kernels' ISA alone: the avx512 target without VNNI, which they do not use.
_ISA_TARGET = {
    "avx512": "avx512",
    "avx2": "avx2",
    "avx512_vnni": "avx512",
    "avx512_amx": "avx512amx",
    "avx_vnni": "avxvnni",
}
_NOT_F32 = {"-mavx512vnni", "avx512_vnni"}
ISA_CFLAGS: dict[str, list[str]] = {
    isa: [f for f in TARGETS[t]["cflags"] if isa != "avx512" or f not in _NOT_F32]
    for isa, t in _ISA_TARGET.items()
}
ISA_CPU_FLAGS: dict[str, set[str]] = {
    isa: {f for f in TARGETS[t]["cpu_features"] if isa != "avx512" or f not in _NOT_F32}
    for isa, t in _ISA_TARGET.items()
}
# The f32 GEMM header (its GELU helpers) an int8 GEMM header is rendered after, per int8 ISA.
INT8_GEMM_F32_ISA: dict[str, str] = {
    "avx512_vnni": "avx512",
    "avx512_amx": "avx512",
    "avx_vnni": "avx2",
    "avx2": "avx2",
}

# The dense GEMMs' test entry points: declared (cdef) and defined (wrapper) once, used by the
# dense modules and by the sparse one (its benchmark times both kernels side by side).
F32_GEMM_DECL = """
void sqc_test_f32_gemm(int M, int N, int K, const float *A, int lda, const float *Wp,
                       const float *bias, const float *residual, float *C, int ldc, int act,
                       int nthreads)"""
F32_GEMM_WRAPPER = (
    F32_GEMM_DECL
    + """
{
    sqc_f32_gemm(M, N, K, A, lda, Wp, bias, residual, C, ldc, act, nthreads);
}
"""
)
U8S8_GEMM_DECL = """
void sqc_test_u8s8_gemm(int M, int N, int K, const uint8_t *Aq, int ldq, const int8_t *Wp,
                        const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                        const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                        const float *bias, const float *residual, float *C, int ldc, int act,
                        int nthreads)"""
U8S8_GEMM_POST_DECL = """
void sqc_test_u8s8_gemm_post(int M, int N, int K, const uint8_t *Aq, int ldq, const int8_t *Wp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                             const float *bias, const float *residual, float *C, int ldc,
                             const float *post, int nthreads);
void sqc_test_u8s8_gemm_lut8(int M, int N, int K, const uint8_t *Aq, int ldq, const int8_t *Wp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const float *w_scale, const float *bias, uint8_t *C8, int ldc,
                             const float *post, const uint8_t *lut8, int nthreads);"""
U8S8_GEMM_WRAPPER = (
    U8S8_GEMM_DECL
    + """
{
    sqc_u8s8_gemm(M, N, K, Aq, ldq, Wp, a_scale, a_zp, col_comp, w_zp, rowsum, w_scale, bias,
                  residual, C, ldc, act, NULL, NULL, NULL, nthreads);
}
/* with QDQ epilogue stages: post = 20 floats, sqc_qpost (emit_quant.qpost_table) */
void sqc_test_u8s8_gemm_post(int M, int N, int K, const uint8_t *Aq, int ldq, const int8_t *Wp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                             const float *bias, const float *residual, float *C, int ldc,
                             const float *post, int nthreads)
{
    sqc_u8s8_gemm(M, N, K, Aq, ldq, Wp, a_scale, a_zp, col_comp, w_zp, rowsum, w_scale, bias,
                  residual, C, ldc, 0, (const sqc_qpost *)post, NULL, NULL, nthreads);
}
/* with QDQ stages ending on a grid, bytes lut8[level index] to C8 (no residual, no w_zp) */
void sqc_test_u8s8_gemm_lut8(int M, int N, int K, const uint8_t *Aq, int ldq, const int8_t *Wp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const float *w_scale, const float *bias, uint8_t *C8, int ldc,
                             const float *post, const uint8_t *lut8, int nthreads)
{
    /* C is C8's bytes: a float written there instead would show as wrong bytes */
    sqc_u8s8_gemm(M, N, K, Aq, ldq, Wp, a_scale, a_zp, col_comp, NULL, NULL, w_scale, bias, NULL,
                  (float *)C8, ldc, 0, (const sqc_qpost *)post, C8, lut8, nthreads);
}
"""
)

F32_GEMM_CDEF = (
    F32_GEMM_DECL
    + """;
float sqc_test_gelu_erf_f32(float x);
float sqc_test_gelu_tanh_f32(float x);
"""
)

F32_GEMM_WRAPPERS = (
    F32_GEMM_WRAPPER
    + """float sqc_test_gelu_erf_f32(float x) { return sqc_gelu_erf_f32(x); }
float sqc_test_gelu_tanh_f32(float x) { return sqc_gelu_tanh_f32(x); }
"""
)


# SIMDe first: its native aliases turn _mm512_* into simde_mm512_*, and the kernel's own
# #include <immintrin.h> is then already done. SIMDe 0.8.2 emulates the masked load as a full
# load (faults past the end of a buffer) and the masked store as a full store of zeros in the
# masked-off lanes (overwrites neighbours), so those two are replaced with per-lane loops that
# keep the hardware's semantics: masked-off lanes are neither read nor written.
SIMDE_AVX512_PRELUDE = """
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
static inline simde__m512 sqc_emu_mm512_maskz_loadu_ps(simde__mmask16 k, const void *p)
{
    float t[16];
    for (int i = 0; i < 16; i++)
        t[i] = ((k >> i) & 1) ? ((const float *)p)[i] : 0.0f;
    return simde_mm512_loadu_ps(t);
}
static inline void sqc_emu_mm512_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a)
{
    float t[16];
    simde_mm512_storeu_ps(t, a);
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1)
            ((float *)p)[i] = t[i];
}
#undef _mm512_maskz_loadu_ps
#undef _mm512_mask_storeu_ps
#define _mm512_maskz_loadu_ps(k, p) sqc_emu_mm512_maskz_loadu_ps(k, p)
#define _mm512_mask_storeu_ps(p, k, a) sqc_emu_mm512_mask_storeu_ps(p, k, a)
"""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports(isa: str) -> bool:
    return ISA_CPU_FLAGS[isa] <= cpu_flags()


def _simde_version(folder: str) -> tuple[int, int]:
    """(major, minor) of the SIMDe headers under ``folder``, (0, 0) if unreadable."""
    try:
        text = (Path(folder) / "simde" / "simde-common.h").read_text()
    except OSError:
        return (0, 0)
    found = dict(re.findall(r"#define SIMDE_VERSION_(MAJOR|MINOR) (\d+)", text))
    return (int(found.get("MAJOR", 0)), int(found.get("MINOR", 0)))


def simde_include_dir() -> str | None:
    """Folder holding SIMDe >= 0.8 (simde-py wheel first, then the system), or None.

    0.8 is the first release with _mm512_maskz_loadu_ps / _mm512_mask_storeu_ps (Debian 12's
    libsimde-dev is 0.7.4).
    """
    try:
        import simde_py  # type: ignore[import-not-found]

        candidates = [simde_py.get_include()]
    except ImportError:
        candidates = []
    candidates += ["/usr/include", "/usr/local/include"]
    for folder in candidates:
        if (Path(folder) / "simde" / "x86" / "avx512.h").is_file() and _simde_version(folder) >= (
            0,
            8,
        ):
            return folder
    return None


def how_to_run(isa: str) -> tuple[str, str | None]:
    """("native", None), ("emulated", reason) or ("skip", reason) for ``isa`` on this machine."""
    if cpu_supports(isa):
        return "native", None
    missing = sorted(ISA_CPU_FLAGS[isa] - cpu_flags())
    if isa == "avx512" and cpu_supports("avx2") and simde_include_dir() is not None:
        return "emulated", f"CPU lacks {missing}: avx512 intrinsics emulated with SIMDe on AVX2"
    return "skip", (
        f"CPU lacks {missing} and no emulation is available "
        "(for avx512: pip install simde-py, SIMDe >= 0.8, to check it through SIMDe)"
    )


def build_kernel_module(
    variant: KernelVariant,
    cdef: str,
    wrappers: str,
    build_dir: str | os.PathLike,
    emulate: bool = False,
    before: tuple[KernelVariant, ...] = (),
    extra_cflags: tuple[str, ...] = (),
) -> ModuleType:
    """Render ``variant``, append ``wrappers``, compile with cffi into ``build_dir`` and load it.

    Returns the compiled module: ``module.lib`` holds the ``cdef`` functions, ``module.ffi`` the
    FFI. ``emulate``: compile AVX-512 code on AVX2 through SIMDe (see the module docstring).
    ``before``: variants rendered ahead of ``variant`` in the same source (headers it builds on).
    ``extra_cflags``: flags after the ISAs' (e.g. -mavx512vbmi, as the avx512vbmi target adds).
    """
    header = "".join(render_kernel(v.template, **v.knobs) for v in (*before, variant))
    prelude = ""
    include_dirs: list[str] = []
    # every header's ISA flags, in order, once
    isa_flags = [f for v in (*before, variant) for f in ISA_CFLAGS[v.isa]]
    cflags = BASE_CFLAGS + list(dict.fromkeys(isa_flags)) + list(extra_cflags)
    if emulate:
        include = simde_include_dir()
        if include is None:
            raise RuntimeError("SIMDe headers not found: cannot emulate AVX-512")
        prelude = SIMDE_AVX512_PRELUDE
        include_dirs.append(include)
        cflags = BASE_CFLAGS + ISA_CFLAGS["avx2"] + ["-Wno-psabi"]
    name = f"{variant.name}_{'emu_' if emulate else ''}{'x_' if extra_cflags else ''}"
    return compile_module(name, cdef, prelude + header + wrappers, cflags, build_dir, include_dirs)


def compile_module(
    name: str,
    cdef: str,
    source: str,
    cflags: list[str],
    build_dir: str | os.PathLike,
    include_dirs: list[str] | None = None,
) -> ModuleType:
    """Compile C ``source`` exporting the ``cdef`` functions with cffi into ``build_dir`` and
    load it (``module.lib``, ``module.ffi``)."""
    # A fresh name per build: a module name can be loaded once per process.
    module_name = f"_sqc_test_{name}{uuid.uuid4().hex[:8]}"
    ffi = FFI()
    ffi.cdef(cdef)
    ffi.set_source(
        module_name,
        source,
        include_dirs=include_dirs or [],
        extra_compile_args=cflags,
        extra_link_args=["-fopenmp"],
    )
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    so_path = ffi.compile(tmpdir=str(build_dir), verbose=False)
    spec = importlib.util.spec_from_file_location(module_name, so_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_ops_module(isa: str, cdef: str, wrapper: str, build_dir: str | os.PathLike) -> ModuleType:
    """templates/kernels/ops.h followed by ``wrapper`` (exporting ``cdef``), compiled natively for
    ``isa``; the calling test is skipped where this CPU cannot run it."""
    import pytest

    if not cpu_supports(isa):
        pytest.skip(f"{isa}: this CPU cannot run it")
    return compile_module(
        f"ops_{isa}_",
        cdef,
        render_kernel("kernels/ops.h") + wrapper,
        BASE_CFLAGS + ISA_CFLAGS[isa],
        build_dir,
    )


def build_f32_gemm(
    variant: KernelVariant, build_dir: str | os.PathLike, emulate: bool = False
) -> ModuleType:
    """The f32 GEMM ``variant`` as a module exporting sqc_test_f32_gemm and the scalar GELUs."""
    return build_kernel_module(variant, F32_GEMM_CDEF, F32_GEMM_WRAPPERS, build_dir, emulate)


INT8_GEMM_CDEF = (
    U8S8_GEMM_DECL
    + ";"
    + U8S8_GEMM_POST_DECL
    + """
void sqc_test_quantize_rows_u8(int M, int K, const float *A, int lda, const float *scale,
                               const int32_t *zp, uint8_t *Aq, int ldq, int32_t *rowsum,
                               int nthreads);
void sqc_test_dynamic_qparams_u8(int M, int K, const float *A, int lda, float *scale,
                                 int32_t *zp);
void sqc_test_quantize_examples_u8(int B, int rows, int K, const float *A, int lda,
                                   float *a_scale, int32_t *a_zp, uint8_t *Aq, int ldq,
                                   int32_t *rowsum, int nthreads);
"""
)

INT8_GEMM_WRAPPERS = (
    """
/* the f32 GEMM header rendered ahead of it only lends its GELU helpers here */
__attribute__((unused)) static void *const sqc_test_keep_f32_gemm = (void *)sqc_f32_gemm;
"""
    + U8S8_GEMM_WRAPPER
    + """void sqc_test_quantize_rows_u8(int M, int K, const float *A, int lda, const float *scale,
                               const int32_t *zp, uint8_t *Aq, int ldq, int32_t *rowsum,
                               int nthreads)
{
    sqc_quantize_rows_u8(M, K, A, lda, scale, zp, Aq, ldq, rowsum, nthreads);
}
void sqc_test_dynamic_qparams_u8(int M, int K, const float *A, int lda, float *scale,
                                 int32_t *zp)
{
    sqc_dynamic_qparams_u8(M, K, A, lda, scale, zp);
}
void sqc_test_quantize_examples_u8(int B, int rows, int K, const float *A, int lda,
                                   float *a_scale, int32_t *a_zp, uint8_t *Aq, int ldq,
                                   int32_t *rowsum, int nthreads)
{
    sqc_quantize_examples_u8(B, rows, K, A, lda, a_scale, a_zp, Aq, ldq, rowsum, nthreads);
}
"""
)


def build_int8_gemm(
    variant: KernelVariant, build_dir: str | os.PathLike, f32_isa: str | None = None
) -> ModuleType:
    """The int8 GEMM ``variant`` (after the f32 GEMM header for ``f32_isa``, by default
    INT8_GEMM_F32_ISA's) as a module exporting sqc_test_u8s8_gemm, sqc_test_quantize_rows_u8 and
    sqc_test_dynamic_qparams_u8. Native only (no SIMDe path for VNNI)."""
    from sqc.compiler.codegen.kernels import f32_gemm_variant

    f32 = f32_gemm_variant(f32_isa or INT8_GEMM_F32_ISA[variant.isa])
    return build_kernel_module(
        variant, INT8_GEMM_CDEF, INT8_GEMM_WRAPPERS, build_dir, before=(f32,)
    )


U8S8_SPMM_FFN_DECL = """\
int sqc_test_u8s8_spmm_ffn(int M, int K, int N1, int N2, const uint8_t *Aq, int ldq,
                           const void *W1sp, const float *a_scale1, const int32_t *a_zp1,
                           const int32_t *col_comp1, const float *w_scale1, const float *bias1,
                           const float *post1, const uint8_t *lut8, uint8_t *H8,
                           const void *W2sp, const float *a_scale2, const int32_t *a_zp2,
                           const int32_t *col_comp2, const float *w_scale2, const float *bias2,
                           const float *residual, float *C, int ldc, const float *post2,
                           void *scratch, int nthreads)"""

SPARSE_GEMM_CDEF = (
    """
void sqc_test_f32_spmm(int M, int N, int K, const float *A, int lda, const void *Wsp,
                       const float *bias, const float *residual, float *C, int ldc, int act,
                       void *scratch, int nthreads);
void sqc_test_f32_spmm_ffn(int M, int K, int N1, int N2, const float *A, int lda,
                           const void *W1sp, const float *b1, int act1, const void *W2sp,
                           const float *b2, const float *residual, float *H, float *C, int ldc,
                           void *scratch, int nthreads);
void sqc_test_u8s8_spmm(int M, int N, int K, const uint8_t *Aq, int ldq, const void *Wsp,
                        const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                        const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                        const float *bias, const float *residual, float *C, int ldc, int act,
                        void *scratch, int nthreads);
void sqc_test_u8s8_spmm_post(int M, int N, int K, const uint8_t *Aq, int ldq, const void *Wsp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                             const float *bias, const float *residual, float *C, int ldc,
                             const float *post, void *scratch, int nthreads);
void sqc_test_u8s8_spmm_lut8(int M, int N, int K, const uint8_t *Aq, int ldq, const void *Wsp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const float *w_scale, const float *bias, uint8_t *C8, int ldc,
                             const float *post, const uint8_t *lut8, void *scratch, int nthreads);
"""
    + U8S8_SPMM_FFN_DECL
    + ";\n"
    + F32_GEMM_DECL
    + ";"
    + U8S8_GEMM_DECL
    + ";"
    + U8S8_GEMM_POST_DECL
    + "\n"
)

SPARSE_GEMM_WRAPPERS = (
    """
/* the int8 GEMM header rendered ahead of it also defines the activation quantizers */
__attribute__((unused)) static void *const sqc_test_keep_quantize[] = {
    (void *)sqc_quantize_rows_u8, (void *)sqc_dynamic_qparams_u8};
void sqc_test_f32_spmm(int M, int N, int K, const float *A, int lda, const void *Wsp,
                       const float *bias, const float *residual, float *C, int ldc, int act,
                       void *scratch, int nthreads)
{
    sqc_f32_spmm(M, N, K, A, lda, Wsp, bias, residual, C, ldc, act, scratch, nthreads);
}
void sqc_test_f32_spmm_ffn(int M, int K, int N1, int N2, const float *A, int lda,
                           const void *W1sp, const float *b1, int act1, const void *W2sp,
                           const float *b2, const float *residual, float *H, float *C, int ldc,
                           void *scratch, int nthreads)
{
    sqc_f32_spmm_ffn(M, K, N1, N2, A, lda, W1sp, b1, act1, W2sp, b2, residual, H, C, ldc, scratch,
                     nthreads);
}
void sqc_test_u8s8_spmm(int M, int N, int K, const uint8_t *Aq, int ldq, const void *Wsp,
                        const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                        const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                        const float *bias, const float *residual, float *C, int ldc, int act,
                        void *scratch, int nthreads)
{
    sqc_u8s8_spmm(M, N, K, Aq, ldq, Wsp, a_scale, a_zp, col_comp, w_zp, rowsum, w_scale, bias,
                  residual, C, ldc, act, NULL, NULL, NULL, scratch, nthreads);
}
void sqc_test_u8s8_spmm_post(int M, int N, int K, const uint8_t *Aq, int ldq, const void *Wsp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const int32_t *w_zp, const int32_t *rowsum, const float *w_scale,
                             const float *bias, const float *residual, float *C, int ldc,
                             const float *post, void *scratch, int nthreads)
{
    sqc_u8s8_spmm(M, N, K, Aq, ldq, Wsp, a_scale, a_zp, col_comp, w_zp, rowsum, w_scale, bias,
                  residual, C, ldc, 0, (const sqc_qpost *)post, NULL, NULL, scratch, nthreads);
}
void sqc_test_u8s8_spmm_lut8(int M, int N, int K, const uint8_t *Aq, int ldq, const void *Wsp,
                             const float *a_scale, const int32_t *a_zp, const int32_t *col_comp,
                             const float *w_scale, const float *bias, uint8_t *C8, int ldc,
                             const float *post, const uint8_t *lut8, void *scratch, int nthreads)
{
    sqc_u8s8_spmm(M, N, K, Aq, ldq, Wsp, a_scale, a_zp, col_comp, NULL, NULL, w_scale, bias,
                  NULL, (float *)C8, ldc, 0, (const sqc_qpost *)post, C8, lut8, scratch, nthreads);
}
/* 1: fused, 0: the caller must make the two calls, -1: not rendered for this variant */
"""
    + U8S8_SPMM_FFN_DECL
    + """
{
#ifdef SQC_HAVE_U8S8_SPMM_FFN
    return sqc_u8s8_spmm_ffn(M, K, N1, N2, Aq, ldq, W1sp, a_scale1, a_zp1, col_comp1, NULL,
                             w_scale1, bias1, (const sqc_qpost *)post1, lut8, H8, W2sp, a_scale2,
                             a_zp2, col_comp2, NULL, w_scale2, bias2, residual, C, ldc, 0,
                             (const sqc_qpost *)post2, NULL, NULL, scratch, nthreads);
#else
    return -1;
#endif
}
/* the dense kernels of the same target, for the benchmark's side-by-side timing */
"""
    + F32_GEMM_WRAPPER
    + U8S8_GEMM_WRAPPER
)


def sparse_gemm_runnable(variant: KernelVariant) -> tuple[bool, str | None]:
    """(True, None) when this CPU runs the sparse ``variant`` (its fp32 and int8 isas) natively."""
    isas = (variant.knobs["isa"], variant.knobs["int8_isa"])
    missing = sorted(set().union(*(ISA_CPU_FLAGS[i] for i in isas)) - cpu_flags())
    if missing:
        return False, f"{variant.name}: CPU lacks {missing} (no emulation for sparse GEMMs)"
    return True, None


def build_sparse_gemm(
    variant: KernelVariant,
    build_dir: str | os.PathLike,
    dense_int8: str | None = None,
    extra_cflags: tuple[str, ...] = (),
) -> ModuleType:
    """The sparse GEMM ``variant`` rendered after the dense fp32 and int8 GEMM headers of its
    target, as a module exporting sqc_test_f32_spmm, sqc_test_u8s8_spmm and the two dense GEMMs
    (sqc_test_f32_gemm, sqc_test_u8s8_gemm). ``dense_int8``: the dense int8 GEMM variant's isa
    (default the sparse variant's int8 isa; "avx512_amx" as the avx512amx target has it).
    Native only."""
    from sqc.compiler.codegen.kernels import f32_gemm_variant, int8_gemm_variant

    before = (
        f32_gemm_variant(variant.knobs["isa"]),
        int8_gemm_variant(dense_int8 or variant.knobs["int8_isa"]),
    )
    return build_kernel_module(
        variant,
        SPARSE_GEMM_CDEF,
        SPARSE_GEMM_WRAPPERS,
        build_dir,
        before=before,
        extra_cflags=extra_cflags,
    )


def output_buffers(M: int, N: int, ldc: int, residual: str, values=None):
    """C and the residual operand R of an epilogue test: C is NaN-filled with a spare row (so a
    write past M or N shows); R is None ("none"), C itself holding ``values`` ("inplace"), or a
    separate NaN-padded buffer holding them ("separate")."""

    C = np.full((M + 1, ldc), np.nan, dtype=np.float32)
    if residual == "none":
        return C, None
    if residual == "inplace":
        C[:M, :N] = values
        return C, C
    R = np.full((M + 1, ldc), np.nan, dtype=np.float32)
    R[:M, :N] = values
    return C, R


def add_epilogue(rng, pre, magnitude, b, residual: str, M: int, N: int, ldc: int):
    """The float64 reference ``pre`` and its error scale ``magnitude`` with the bias ``b`` (or
    None) and a random residual added, and the C / R buffers (output_buffers) that hold it:
    returns (pre, magnitude, C, R)."""

    if b is not None:
        pre = pre + b
        magnitude = magnitude + np.abs(b)
    values = None
    if residual != "none":
        values = rng.standard_normal((M, N)).astype(np.float32)
        pre = pre + values
        magnitude = magnitude + np.abs(values)
    return (pre, magnitude, *output_buffers(M, N, ldc, residual, values))


class Scratch:
    """spmm_scratch_bytes of NaN garbage, 64-byte aligned, with 64 guard bytes after it."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        raw = np.full(nbytes + 192, 0xFF, dtype=np.uint8)
        off = (-raw.ctypes.data) % 64
        self.buf = raw[off : off + nbytes + 64]
        self.guard = self.buf[nbytes:].copy()

    def intact(self) -> bool:
        return bool((self.buf[self.nbytes :] == self.guard).all())
