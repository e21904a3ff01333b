"""Kernel test of the float attention (sqc_attention_f32, templates/kernels/ops.h) with padding
masks: the masked tail of a shorter input is neither scored nor multiplied by V when its
probabilities are provably 0 (sqc_att_scored_keys, sqc_att_key_end), and that must change no
output bit.

- Against a float64 numpy reference (softmax of scale * q.k + mask, times V), for masks of
  -10000 and of float32's lowest value, lengths that end inside and at the edges of a vector of
  keys, a full row and an all-masked row, AVX-512 and AVX2 builds, 1 and 2 threads.
- Exactness of the skipping: the same mask given per query row (a [Sq, Sk] mask, which the
  kernel never skips scoring for) must give the same bits as the shared [1, Sk] mask.
- Where the bound does not hold (a tail masked by only -1000 and scores in the hundreds, so the
  masked keys keep real probability), nothing may be skipped: the reference includes those keys.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels import harness

CDEF = """
void sqc_test_attention_f32(int batch, int H, int Sq, int Sk, int D, float scale, const float *q,
                            const int64_t *qv, const float *k, const int64_t *kv, const float *v,
                            const int64_t *vv, const float *mask, const int64_t *mv, float *out,
                            const int64_t *ov, int nthreads);
"""

WRAPPER = """
static sqc_view sqc_test_view(const int64_t *a)
{
    return (sqc_view){ a[0], a[1], a[2], a[3], a[4] };
}
void sqc_test_attention_f32(int batch, int H, int Sq, int Sk, int D, float scale, const float *q,
                            const int64_t *qv, const float *k, const int64_t *kv, const float *v,
                            const int64_t *vv, const float *mask, const int64_t *mv, float *out,
                            const int64_t *ov, int nthreads)
{
    sqc_attention_f32(batch, H, Sq, Sk, D, scale, q, sqc_test_view(qv), k, sqc_test_view(kv), v,
                      sqc_test_view(vv), mask, sqc_test_view(mv), out, sqc_test_view(ov), NULL,
                      1.0f, scale, nthreads);
}
"""

LOWEST = float(np.finfo(np.float32).min)


@pytest.fixture(scope="module", params=["avx512", "avx2"])
def kernel(request, tmp_path_factory):
    return harness.build_ops_module(
        request.param, CDEF, WRAPPER, tmp_path_factory.mktemp(request.param)
    )


def _run(kernel, q, k, v, mask, scale, per_row_mask=False, nthreads=1):
    """q, k, v [B, H, S, D] float32, mask [B, Sk] additive; the views as a fused QKV buffer's
    would be: [B, S, H * D], head h at offset h * D."""
    ffi, lib = kernel.ffi, kernel.lib
    B, H, S, D = q.shape

    def packed(x):
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(B, S, H * D))

    qp, kp, vp = packed(q), packed(k), packed(v)
    view = np.array([0, D, H * D, 1, S * H * D], np.int64)  # off, sh, ss, sd, bs
    if per_row_mask:
        m = np.ascontiguousarray(np.broadcast_to(mask[:, None, :], (B, S, S)), np.float32)
        mv = np.array([0, 0, S, 1, S * S], np.int64)
    else:
        m = np.ascontiguousarray(mask, np.float32)
        mv = np.array([0, 0, 0, 1, S], np.int64)
    out = np.full((B, S, H * D), np.nan, np.float32)

    def p(a, t):
        return ffi.cast(t, a.ctypes.data)

    lib.sqc_test_attention_f32(
        B, H, S, S, D, scale, p(qp, "float *"), p(view, "int64_t *"), p(kp, "float *"),
        p(view, "int64_t *"), p(vp, "float *"), p(view, "int64_t *"), p(m, "float *"),
        p(mv, "int64_t *"), p(out, "float *"), p(view, "int64_t *"), nthreads,
    )  # fmt: skip
    return out.reshape(B, S, H, D).transpose(0, 2, 1, 3)


def _reference(q, k, v, mask, scale):
    """float64, except scale * score + mask, which is rounded to float32 as the kernel's (in a
    row masked by -10000 everywhere the scores keep only float32's steps of 2^-10 there)"""
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64))
    s = (s.astype(np.float32) * np.float32(scale) + mask[:, None, None, :]).astype(np.float64)
    s -= s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return np.einsum("bhqk,bhkd->bhqd", e / e.sum(axis=-1, keepdims=True), v.astype(np.float64))


def _case(seed, S, D, H, lengths, masked, spread=1.0):
    rng = np.random.default_rng(seed)
    B = len(lengths)
    q, k, v = ((rng.standard_normal((B, H, S, D)) * spread).astype(np.float32) for _ in range(3))
    mask = np.where(np.arange(S)[None, :] < np.array(lengths)[:, None], 0.0, masked)
    return q, k, v, mask.astype(np.float32)


def _lengths(S):
    """ends inside a vector of keys, on a vector's edge (8, 16, 32, 48), the whole row, 1 and 0
    (an all-masked row: a softmax over the masked scores, nothing skipped)"""
    return sorted({1, 0, 7, 8, 9, 16, 17, 31, 32, 33, 47, 48, S // 2, S - 1, S} & set(range(S + 1)))


@pytest.mark.parametrize("masked", [-10000.0, LOWEST], ids=["m10000", "lowest"])
@pytest.mark.parametrize("S,D", [(40, 8), (64, 64), (72, 24), (128, 64)])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_padding_masks_match_reference_and_skip_exactly(kernel, masked, S, D, nthreads):
    lengths = _lengths(S)
    q, k, v, mask = _case(S * D, S, D, 2, lengths, masked)
    scale = np.float32(1.0 / np.sqrt(D))
    out = _run(kernel, q, k, v, mask, scale, nthreads=nthreads)
    ref = _reference(q, k, v, mask, scale)
    # an all-masked example (length 0) under -10000: its scores sit on float32's 2^-10 steps, so
    # a last-bit difference of the dot product can move one by a step (0.1% of a probability)
    loose = np.array(lengths) == 0 if masked == -10000.0 else np.zeros(len(lengths), bool)
    np.testing.assert_allclose(out[~loose], ref[~loose], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out[loose], ref[loose], rtol=0, atol=2e-3)
    # the same mask per query row: the kernel scores every key there (no shared mask), and the
    # probabilities of the tail are flushed to 0 either way: the very same bits
    per_row = _run(kernel, q, k, v, mask, scale, per_row_mask=True, nthreads=nthreads)
    np.testing.assert_array_equal(out, per_row)


def test_tail_with_real_probability_is_not_skipped(kernel):
    """A tail masked by -1000 only, and masked keys that score about 1010 against the first
    query (k_j along q_0): they outscore the unmasked keys after the mask and take most of
    that row's probability. The bound fails and every key is scored; skipping them would move
    those rows far from the reference."""
    S, D = 64, 16
    lengths = [20, 33, 40]
    q, k, v, mask = _case(7, S, D, 2, lengths, -1000.0)
    for b, n in enumerate(lengths):
        q0 = q[b, :, 0, :].astype(np.float64)
        k[b, :, n:, :] = (1010.0 * q0 / (q0 * q0).sum(axis=-1, keepdims=True))[:, None, :]
    scale = 1.0
    ref = _reference(q, k, v, mask, scale)
    # the case does what it says: masked keys matter in the reference
    s = (
        np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale
        + mask[:, None, None, :]
    )
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    tail_mass = np.where(mask[:, None, None, :] < 0, p, 0).sum(axis=-1)
    assert tail_mass.max() > 0.5
    out = _run(kernel, q, k, v, mask, scale)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
