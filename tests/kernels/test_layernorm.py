"""sqc_layernorm_f32 (templates/kernels/ops.h): a row's result does not depend on whether it is
computed in a group of SQC_LN_G rows or alone, and matches a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels import harness

CDEF = """
void sqc_test_layernorm(long rows, int n, const float *x, const float *skip, const float *bias,
                        const float *gamma, const float *beta, float eps, float *y, float *sum_out,
                        int nthreads);
"""
WRAPPER = """
void sqc_test_layernorm(long rows, int n, const float *x, const float *skip, const float *bias,
                        const float *gamma, const float *beta, float eps, float *y, float *sum_out,
                        int nthreads)
{
    sqc_layernorm_f32(rows, n, x, skip, bias, gamma, beta, eps, y, sum_out, nthreads);
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
