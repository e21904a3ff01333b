"""Kernel test of sqc_v8_level_grid_rcp (templates/kernels/ops.h): a QDQ stage's level found by a
multiply with 1 / s where that is provably the same integer, by the division elsewhere. The
integer attention rounds every score and every probability through it, so it must give the
division's bits for every float: the test checks it against both sqc_v8_level_grid (the
division) and numpy (rint(x / s), NaN to 0, clamped) at the places where a multiply goes wrong
first, quotients within a few ulps of a half-integer (ties included), and at NaN, infinities,
signed zeros, subnormals and huge values, over 8- and 16-bit grids whose 1 / s is ordinary,
subnormal (a scale near FLT_MAX) or infinite (a subnormal scale), and a grid too wide for the
multiply (the division's own rounding holds to bounds of 2^22, past any QDQ integer type).
Mutation-checked: a `near` of 0.5 (no margin) fails the near-tie cases of every grid with a
usable reciprocal.

The int8 GEMM epilogues' QDQ stages (templates/kernels/int8_gemm.h.j2, sqc_fq_level_rcp_f32xv:
the VNNI micro-kernels and the sparse tiles round each stage that way) are checked the same way
against their own division (sqc_fq_level_f32xv), with and without the NaN select, for every
int8 GEMM ISA this CPU runs. Mutation-checked like the first: a `near` of 0.5 fails them.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels import harness

CDEF = """
void sqc_test_level_grid(int n, const float *x, const float *g, int rcp, float *out);
"""

WRAPPER = """
void sqc_test_level_grid(int n, const float *x, const float *g, int rcp, float *out)
{
    const sqc_v8_grid gv = sqc_v8_grid_of(g);
    for (int i = 0; i + SQC_RW <= n; i += SQC_RW) {
        const sqc_v8 v = sqc_v8_load(x + i);
        sqc_v8_store(out + i, rcp ? sqc_v8_level_grid_rcp(v, gv) : sqc_v8_level_grid(v, gv));
    }
}
"""

# (scale, zero point, lowest level, highest level)
GRIDS = [
    (1 / 255, 0.0, 0.0, 255.0),  # softmax probabilities (u8)
    (1 / 255, -128.0, -128.0, 127.0),  # the same, s8
    (0.0123, -3.0, -128.0, 127.0),
    (7.5, 10.0, 0.0, 255.0),
    (3e-5, 0.0, -128.0, 127.0),
    (0.04, 2.0, -128.0, 127.0),
    (3e38, 0.0, -128.0, 127.0),  # 1 / s subnormal: the division throughout
    (1e-40, 0.0, 0.0, 255.0),  # subnormal scale, 1 / s infinite: the division throughout
    (1e-4, 7.0, 0.0, 65535.0),  # uint16
    (0.5, 0.0, -3e6, 3e6),  # bounds past 2^21: the division throughout
]


@pytest.fixture(scope="module", params=["avx512_vnni", "avx_vnni"])
def kernel(request, tmp_path_factory):
    return harness.build_ops_module(
        request.param, CDEF, WRAPPER, tmp_path_factory.mktemp(request.param)
    )


def _inputs(s: float, lo: float, hi: float, rng) -> np.ndarray:
    f32 = np.float32
    s = f32(s)
    # quotients at and around every half-integer of the range and a little past it: the float
    # nearest (k + 1/2) s and its neighbours up to 8 ulps either side
    ks = np.arange(max(lo, -300.0) - 3, min(hi, 300.0) + 3, dtype=np.float64) + 0.5
    base = (ks * np.float64(s)).astype(f32)
    near = [base]
    up, down = base.copy(), base.copy()
    for _ in range(8):
        up = np.nextafter(up, f32(np.inf))
        down = np.nextafter(down, f32(-np.inf))
        near += [up, down]
    # exact ties where x / s is a half-integer in float32 (x = h * s rounded, kept when it is)
    ties = base[(base / s) == ks.astype(f32)]
    ordinary = (rng.uniform(lo - 5, hi + 5, 4096) * np.float64(s)).astype(f32)
    special = np.array(
        [
            0.0,
            -0.0,
            np.nan,
            -np.nan,
            np.inf,
            -np.inf,
            3.4e38,
            -3.4e38,
            1e-45,
            -1e-45,
            1e-38,
            1e30,
            -1e30,
            2.0**22,
            -(2.0**22),
        ],
        f32,
    )
    x = np.concatenate([*near, ties, ordinary, special]).astype(f32)
    rng.shuffle(x)  # specials and ties spread over the vectors, not one vector of them
    pad = (-len(x)) % 16
    return np.concatenate([x, np.zeros(pad, f32)])


def _numpy_levels(x: np.ndarray, g) -> np.ndarray:
    s, zp, lo, hi = (np.float32(t) for t in g)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        q = np.rint(x / s)
    q = np.where(np.isnan(q), np.float32(0), q)
    return np.clip(q, lo - zp, hi - zp).astype(np.float32)


IDS = [f"s{g[0]:g}_zp{g[1]:g}_{g[2]:g}..{g[3]:g}" for g in GRIDS]


@pytest.mark.parametrize("g", GRIDS, ids=IDS)
def test_reciprocal_level_is_the_divisions(kernel, g) -> None:
    rng = np.random.default_rng(int(g[0] * 1e6) % 1000 + int(g[1]) + 500)
    with np.errstate(over="ignore"):  # the 3e38 grid's range overflows float32: infinities
        x = _inputs(g[0], g[2] - g[1], g[3] - g[1], rng)
    _check_levels(x, g, kernel.lib.sqc_test_level_grid, kernel.ffi)


def _check_levels(x: np.ndarray, g, fn, ffi, *extra) -> None:
    """fn(n, x, g, rcp, *extra, out) by the division (rcp 0) and by the multiply (rcp 1):
    the same levels, and numpy's"""
    gv = np.array(g, np.float32)
    out = {}
    for rcp in (0, 1):
        y = np.full_like(x, np.nan)
        fn(
            len(x),
            ffi.cast("float *", x.ctypes.data),
            ffi.cast("float *", gv.ctypes.data),
            rcp,
            *extra,
            ffi.cast("float *", y.ctypes.data),
        )
        out[rcp] = y
    # levels compare as values (the division's -0 and the multiply's agree as levels); and
    # neither path returns NaN
    assert not np.isnan(out[1]).any()
    bad = np.nonzero(out[1] != out[0])[0]
    assert bad.size == 0, (
        f"{bad.size} levels differ from the division's, e.g. x={x[bad[:4]]!r}: "
        f"{out[1][bad[:4]]!r} vs {out[0][bad[:4]]!r}"
    )
    bad = np.nonzero(out[1] != _numpy_levels(x, g))[0]
    assert bad.size == 0, f"{bad.size} levels differ from numpy's, e.g. x={x[bad[:4]]!r}"


INT8_CDEF = """
void sqc_test_fq_level(int n, const float *x, const float *g, int rcp, int no_nan, float *out);
"""


def _int8_wrapper(isa: str) -> str:
    wide = isa in ("avx512_vnni", "avx512_amx")
    sfx = "avx512_vnni" if wide else isa  # the AMX variant's helpers are the VNNI ones
    vw, vp, ft = (16, "_mm512", "__m512") if wide else (8, "_mm256", "__m256")
    return f"""
__attribute__((unused)) static void *const sqc_test_keep_gemm = (void *)sqc_u8s8_gemm;
__attribute__((unused)) static void *const sqc_test_keep_f32_gemm = (void *)sqc_f32_gemm;
void sqc_test_fq_level(int n, const float *x, const float *g, int rcp, int no_nan, float *out)
{{
    sqc_fqv__{sfx} f;
    sqc_fqv_prepare__{sfx}(&f, g);
    for (int i = 0; i + {vw} <= n; i += {vw}) {{
        const {ft} v = {vp}_loadu_ps(x + i);
        {ft} r;
        if (rcp)
            r = no_nan ? sqc_fq_level_rcp_f32xv__{sfx}(v, &f, 1)
                       : sqc_fq_level_rcp_f32xv__{sfx}(v, &f, 0);
        else
            r = no_nan ? sqc_fq_level_f32xv__{sfx}(v, &f, 1)
                       : sqc_fq_level_f32xv__{sfx}(v, &f, 0);
        {vp}_storeu_ps(out + i, r);
    }}
}}
"""


def _int8_variants():
    from sqc.compiler.codegen.kernels import INT8_GEMM_TEMPLATE, KERNEL_VARIANTS

    int8 = [v for v in KERNEL_VARIANTS if v.template == INT8_GEMM_TEMPLATE]
    return [v for v in int8 if v.isa != "avx512_amx"]  # its helpers are avx512_vnni's


@pytest.fixture(scope="module", params=_int8_variants(), ids=lambda v: v.isa)
def int8_kernel(request, tmp_path_factory):
    from sqc.compiler.codegen.kernels import f32_gemm_variant

    variant = request.param
    if not harness.cpu_supports(variant.isa):
        pytest.skip(f"{variant.name}: this CPU cannot run it natively")
    f32 = f32_gemm_variant(harness.INT8_GEMM_F32_ISA[variant.isa])
    return harness.build_kernel_module(
        variant,
        INT8_CDEF,
        _int8_wrapper(variant.isa),
        tmp_path_factory.mktemp(variant.name),
        before=(f32,),
    )


@pytest.mark.parametrize("no_nan", [False, True], ids=["nan_select", "no_nan"])
@pytest.mark.parametrize("g", GRIDS, ids=IDS)
def test_int8_epilogue_reciprocal_level_is_the_divisions(int8_kernel, g, no_nan) -> None:
    rng = np.random.default_rng(int(g[0] * 1e6) % 1000 + int(g[1]) + 700)
    with np.errstate(over="ignore"):
        x = _inputs(g[0], g[2] - g[1], g[3] - g[1], rng)
    if no_nan:  # the callers' promise: no NaN reaches the stage
        x = np.where(np.isnan(x), np.float32(0.25), x).astype(np.float32)
    _check_levels(x, g, int8_kernel.lib.sqc_test_fq_level, int8_kernel.ffi, int(no_nan))
