"""sqc_layernorm_f32 (templates/kernels/ops.h): a row's result does not depend on whether it is
computed in a group of SQC_LN_G rows or alone, and matches a float64 reference. sqc_layernorm_q
(a QDQ graph's LayerNorm, passes/quantize_layernorm.py): its sum is the QDQ graph's, its float
output that of sqc_layernorm_f32 on that sum, and its bytes QuantizeLinear's of those floats."""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels import harness

CDEF = """
void sqc_test_layernorm(long rows, int n, const float *x, const float *skip, const float *bias,
                        const float *gamma, const float *beta, float eps, float *y, float *sum_out,
                        int nthreads);
void sqc_test_layernorm_q(long rows, int n, const float *x, const float *skip,
                          const uint8_t *skip8, float skip_s, float skip_zp, const float *bias,
                          const float *sum_fq, const float *gamma, const float *beta, float eps,
                          float *y, uint8_t *y8, float y_s, float y_zp, int nthreads);
"""
WRAPPER = """
void sqc_test_layernorm(long rows, int n, const float *x, const float *skip, const float *bias,
                        const float *gamma, const float *beta, float eps, float *y, float *sum_out,
                        int nthreads)
{
    sqc_layernorm_f32(rows, n, x, skip, bias, gamma, beta, eps, y, sum_out, nthreads);
}
void sqc_test_layernorm_q(long rows, int n, const float *x, const float *skip,
                          const uint8_t *skip8, float skip_s, float skip_zp, const float *bias,
                          const float *sum_fq, const float *gamma, const float *beta, float eps,
                          float *y, uint8_t *y8, float y_s, float y_zp, int nthreads)
{
    sqc_layernorm_q(rows, n, x, skip, skip8, skip_s, skip_zp, bias, sum_fq, gamma, beta, eps, y,
                    y8, y_s, y_zp, nthreads);
}
"""


@pytest.fixture(scope="module", params=["avx512", "avx2"])
def kernel(request, tmp_path_factory):
    return harness.build_ops_module(
        request.param, CDEF, WRAPPER, tmp_path_factory.mktemp(request.param)
    )


def _run(kernel, x, skip, bias, gamma, beta, eps=1e-12, nthreads=1):
    ffi, lib = kernel.ffi, kernel.lib
    rows, n = x.shape
    y = np.full_like(x, np.nan)
    total = np.full_like(x, np.nan)

    def p(a):
        return ffi.NULL if a is None else ffi.cast("float *", a.ctypes.data)

    lib.sqc_test_layernorm(
        rows, n, p(x), p(skip), p(bias), p(gamma), p(beta), eps, p(y), p(total), nthreads
    )
    return y, total


@pytest.mark.parametrize("n", [768, 37, 16, 3])
@pytest.mark.parametrize("with_skip", [True, False])
def test_grouped_rows_equal_single_rows(kernel, n, with_skip) -> None:
    rng = np.random.default_rng(n)
    rows = 23  # five groups of 4, then 3 rows alone (on 1 thread; on 2, chunks of 4 rows)
    x = (rng.standard_normal((rows, n)) * 3 + 1).astype(np.float32)
    x[21] = x[1]  # row 1 runs in a group, row 21 alone: same input, same bits
    x[22] = x[6]
    skip = rng.standard_normal((rows, n)).astype(np.float32) if with_skip else None
    if skip is not None:
        skip[21], skip[22] = skip[1], skip[6]
    bias = rng.standard_normal(n).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, n).astype(np.float32)
    beta = rng.standard_normal(n).astype(np.float32)
    y, total = _run(kernel, x, skip, bias, gamma, beta)
    assert y[21].tobytes() == y[1].tobytes() and y[22].tobytes() == y[6].tobytes()
    s = (x if skip is None else x + skip) + bias  # float32, in the kernel's order
    np.testing.assert_array_equal(total, s)
    s = s.astype(np.float64)
    mean = s.mean(axis=1, keepdims=True)
    ref = (s - mean) / np.sqrt(s.var(axis=1, keepdims=True) + 1e-12) * gamma + beta
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    y2, _ = _run(kernel, x, skip, bias, gamma, beta, nthreads=2)
    assert y2.tobytes() == y.tobytes(), "the thread count changed the result"


def _run_q(
    kernel, x, skip8, skip_grid, sum_fq, gamma, beta, out_grid, nthreads=1, skip=None, bias=None
):
    """sqc_layernorm_q: its bytes (out_grid) or floats (out_grid None)."""
    ffi, lib = kernel.ffi, kernel.lib
    rows, n = x.shape
    y = np.full_like(x, np.nan)
    y8 = np.full(x.shape, 77, np.uint8)

    def p(a, t="float *"):
        return ffi.NULL if a is None else ffi.cast(t, a.ctypes.data)

    skip_s, skip_zp = skip_grid
    y_s, y_zp = out_grid or (0.0, 0.0)
    lib.sqc_test_layernorm_q(
        rows,
        n,
        p(x),
        p(skip),
        p(skip8, "uint8_t *"),
        skip_s,
        skip_zp,
        p(bias),
        p(sum_fq),
        p(gamma),
        p(beta),
        1e-12,
        ffi.NULL if out_grid else p(y),
        p(y8, "uint8_t *") if out_grid else ffi.NULL,
        y_s,
        y_zp,
        nthreads,
    )
    return y8 if out_grid else y


def _fake_quant32(v, grid):
    """sqc_fake_quant_f32 in float32: (clamp(rint(v / s) + zp, lo, hi) - zp) * s, NaN to zp"""
    s, zp, lo, hi = (np.float32(g) for g in grid)
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.rint(v / s)
    q = np.clip(np.where(np.isnan(q), 0, q), lo - zp, hi - zp).astype(np.float32)
    return (q * s).astype(np.float32)


def _quantize_u8(y, s, zp):
    """QuantizeLinear to uint8 as sqc_quantize_f32: saturate(rint(y / s) + zp), NaN to zp"""
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.rint(y / np.float32(s)) + np.float32(zp)
    return np.clip(np.where(np.isnan(q), zp, q), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("n", [768, 37, 16, 3])
@pytest.mark.parametrize(
    "stages", ["skip-sum-out", "skip-out", "out", "skip-sum", "skip-bias-sum-out", "fskip-bias-out"]
)
def test_quantized_layernorm_is_the_qdq_graphs(kernel, n, stages) -> None:
    """The sum FQ_c(x + DQ(skip8) (+ bias)) in float32 as the graph rounds it (a float skip
    where the LayerNorm had one before the pass); the floats equal
    sqc_layernorm_f32's of that sum bit for bit; the bytes are QuantizeLinear's of the floats.
    Rows hold NaN, infinities, huge values, ties and zeros; 23 rows: groups and rows alone."""
    rng = np.random.default_rng(n + len(stages))
    rows = 23
    x = (rng.standard_normal((rows, n)) * 2).astype(np.float32)
    x[3, 0] = np.nan
    x[5, n // 2] = np.inf
    x[7] = 0.0
    x[9, :2] = [3.0e38, -3.0e38][: min(2, n)]
    x[11] = np.round(x[11] * 4) / 4  # sums on quarter points of the grid below: ties
    x[21], x[22] = x[1], x[6]
    skip8 = rng.integers(0, 256, (rows, n), dtype=np.uint8) if "skip" in stages else None
    skip = None
    if "fskip" in stages:  # a float skip (a SkipLayerNorm before the pass) instead
        skip, skip8 = rng.standard_normal((rows, n)).astype(np.float32), None
        skip[21], skip[22] = skip[1], skip[6]
    if skip8 is not None:
        skip8[21], skip8[22] = skip8[1], skip8[6]
    bias = rng.standard_normal(n).astype(np.float32) if "bias" in stages else None
    skip_grid = (0.03125, 126.0) if skip8 is not None else (0.0, 0.0)
    sum_fq = np.array([0.0625, -3, -128, 127], np.float32) if "sum" in stages else None
    gamma = rng.uniform(0.5, 1.5, n).astype(np.float32)
    beta = rng.standard_normal(n).astype(np.float32)
    out_grid = (0.0381, 128.0) if "out" in stages else None

    total = x
    if skip8 is not None:
        dq = (skip8.astype(np.float32) - np.float32(skip_grid[1])) * np.float32(skip_grid[0])
        total = (x + dq).astype(np.float32)
    if skip is not None:
        total = (x + skip).astype(np.float32)
    if bias is not None:
        total = (total + bias).astype(np.float32)
    if sum_fq is not None:
        total = _fake_quant32(total, sum_fq)
    want, _ = _run(kernel, np.ascontiguousarray(total), None, None, gamma, beta)
    extra = {"skip": skip, "bias": bias}
    floats = _run_q(kernel, x, skip8, skip_grid, sum_fq, gamma, beta, None, **extra)
    assert floats.tobytes() == want.tobytes()
    if out_grid:
        got = _run_q(kernel, x, skip8, skip_grid, sum_fq, gamma, beta, out_grid, **extra)
        np.testing.assert_array_equal(got, _quantize_u8(want, *out_grid))
        if sum_fq is None:  # (FQ_c takes the NaN to a level)
            assert (got[3] == 128).all()  # a NaN row quantizes to the zero point
        assert got[21].tobytes() == got[1].tobytes() and got[22].tobytes() == got[6].tobytes()
        two = _run_q(kernel, x, skip8, skip_grid, sum_fq, gamma, beta, out_grid, 2, **extra)
        assert two.tobytes() == got.tobytes()
