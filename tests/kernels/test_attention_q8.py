"""Kernel test of the integer attention of QDQ graphs (sqc_attention_q8, templates/kernels/ops.h)
against a numpy reference of the same computation, over head sizes and sequence lengths that
reach every packing path (whole register transposes of K, their scalar tails, V rows of odd
widths), masks shared by the query rows and per row, no mask, and s8 and u8 grids; with the
products on VNNI registers (avx512_vnni, avx_vnni) and on AMX tiles (avx512_amx, where the CPU
has AMX: 16-row blocks, quads zero-padded to a tile's 64 bytes, partial 64-column groups).

The reference: exact integer products of the levels, then the graph's QDQ stages in float32
(stage 0 -> * post -> stage 1 -> + mask -> stage 2 -> softmax -> stage 3 -> the product with V
-> stage 4). Its exponential is numpy's, within 3 * 2^-24 of the kernel's (a table of stage 2's
levels, sqc_att_exp_table: test_softmax_exponentials_by_table), so a probability next to
a rounding boundary of stage 3 could land one level apart: the test asks for 99% of the outputs
to be the same bits (all of them were, when written) and every output within two steps of the
output grid. A packing or indexing mistake moves outputs by many steps (mutation-checked: a
wrong V interleave, K transpose offset, K tail or mask row each fail several cases).
Operands given as their levels' bytes (uint8 form, as the layer before writes them:
fuse_lut_epilogue's out8), all or some of them, give the very same bits as their floats; the
output written as bytes (out8) is the float output's levels.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels import harness

CDEF = """
void sqc_test_attention_q8(int batch, int H, int Sq, int Sk, int D, const float *q,
                           const int64_t *qv, const float *k, const int64_t *kv, const float *v,
                           const int64_t *vv, const float *mask, const int64_t *mv, float *out,
                           const int64_t *ov, const float *fq, float pre, float post,
                           const float *grids, const uint8_t *q8, const uint8_t *k8,
                           const uint8_t *v8, uint8_t *out8, int nthreads);
void sqc_test_exp_table(float scale, float *a, float *b, float *e, float *looked_up);
"""

WRAPPER = """
static sqc_view sqc_test_view(const int64_t *a)
{
    return (sqc_view){ a[0], a[1], a[2], a[3], a[4] };
}
void sqc_test_attention_q8(int batch, int H, int Sq, int Sk, int D, const float *q,
                           const int64_t *qv, const float *k, const int64_t *kv, const float *v,
                           const int64_t *vv, const float *mask, const int64_t *mv, float *out,
                           const int64_t *ov, const float *fq, float pre, float post,
                           const float *grids, const uint8_t *q8, const uint8_t *k8,
                           const uint8_t *v8, uint8_t *out8, int nthreads)
{
    sqc_attention_q8(batch, H, Sq, Sk, D, pre * post, q, sqc_test_view(qv), k, sqc_test_view(kv),
                     v, sqc_test_view(vv), mask, sqc_test_view(mv), out, sqc_test_view(ov), fq,
                     pre, post, grids, q8, k8, v8, out8, nthreads);
}
void sqc_test_exp_table(float scale, float *a, float *b, float *e, float *looked_up)
{
    const float g[4] = { scale, 0.0f, -128.0f, 127.0f };
    const sqc_v8_grid g2 = sqc_v8_grid_of(g);
    sqc_att_exp_table t;
    sqc_att_exp_table_of(&t, &g2);
    memcpy(a, t.a, sizeof t.a);
    memcpy(b, t.b, sizeof t.b);
    memcpy(e, t.e, sizeof t.e);
    const sqc_v8 ta = sqc_v8_load(t.a), tb = sqc_v8_load(t.b);
    for (int d0 = 0; d0 < 256; d0 += SQC_RW) {
        sqc_v8i d;
        for (int i = 0; i < SQC_RW; ++i) d[i] = d0 + i;
        sqc_v8_store(looked_up + d0, sqc_att_exp_of(&t, ta, tb, d));
    }
}
"""


# avx512_amx: the products on AMX tiles (16 query rows a block, padded quads), where the CPU
# has them; the same bits as the VNNI code
@pytest.fixture(scope="module", params=["avx512_vnni", "avx512_amx", "avx_vnni"])
def kernel(request, tmp_path_factory):
    return harness.build_ops_module(
        request.param, CDEF, WRAPPER, tmp_path_factory.mktemp(request.param)
    )


def _grid(signed: bool, scale: float, zp: int) -> list[float]:
    return [scale, zp, -128.0, 127.0] if signed else [scale, zp, 0.0, 255.0]


def _fq(x, g):
    """sqc_fake_quant_f32 in numpy float32: levels relative to the zero point, NaN to zp."""
    s, zp, lo, hi = (np.float32(t) for t in g)
    q = np.rint(x / s)
    q = np.where(np.isnan(q), np.float32(0), q)
    q = np.clip(q, lo - zp, hi - zp)
    return (q * s + np.float32(0)).astype(np.float32)


def _levels(rng, shape, g, spread):
    """random levels of grid g, mostly within `spread` of the zero point, some at the ends"""
    lv = np.rint(rng.normal(g[1], spread, shape))
    return np.clip(lv, g[2], g[3]).astype(np.int64)


def _reference(lq, lk, lv, gq, gk, gv, fq, pre, post, mask):
    """[Sq, D] output of one head (levels [S, D]; mask [Sq, Sk] or None)"""
    f32 = np.float32
    stage = [fq[4 * i : 4 * i + 4] for i in range(5)]
    scores = (lq - int(gq[1])) @ (lk - int(gk[1])).T  # exact
    x = scores.astype(f32) * (f32(gq[0]) * f32(gk[0]))
    x = _fq(x * f32(pre), stage[0]) * f32(post)
    x = _fq(x, stage[1])
    if mask is not None:
        x = x + mask
    x = _fq(x, stage[2])
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e * (f32(1) / e.sum(axis=1, keepdims=True, dtype=f32))
    s3, z3, lo3, hi3 = stage[3]
    lp = np.clip(np.rint(p / f32(s3)) + z3, lo3, hi3).astype(np.int64)
    prod = (lp - int(z3)) @ (lv - int(gv[1]))  # exact
    out = prod.astype(f32) * (f32(s3) * f32(gv[0])) * f32(1)
    return _fq(out, stage[4])


CASES = [
    # (D, Sq, Sk, mask kind, signed grids, fold, stage 2's lowest level, stage 3's grid): D 64
    # and 72 reach the whole K transposes (and 72 their scalar tail), 8 and 24 only the tail;
    # Sk 37 a partial last vector of keys. Stage 2 clamped at -40 puts the masked keys' one
    # value (the run sqc_att_q8_p_levels makes once) near the scores, where it weighs in the
    # softmax's sum. Stage 3 (the probabilities' grid, P_GRIDS): the usual 1 / 255 over the
    # whole 8-bit range, or one whose bounds clip the probabilities' levels, or one so fine
    # that its levels take QuantizeLinear's own steps (sqc_att_p_grid_of).
    (64, 37, 37, "shared", True, True, -128, "usual"),
    (64, 128, 128, "shared", True, True, -128, "usual"),
    (72, 19, 40, "rows", True, False, -128, "usual"),
    (8, 16, 16, "shared", False, True, -128, "usual"),
    (24, 21, 33, "rows", False, False, -128, "usual"),
    (32, 9, 48, None, True, True, -128, "usual"),
    (40, 40, 17, "shared", True, False, -128, "usual"),
    (64, 24, 200, "shared", False, True, -128, "usual"),
    (16, 24, 100, "shared", True, False, -128, "usual"),
    (64, 24, 160, "shared", True, False, -40, "usual"),
    (32, 17, 77, "shared", False, True, -40, "usual"),
    (64, 37, 37, "shared", False, True, -128, "clipped"),
    (32, 17, 77, "rows", True, True, -128, "clipped"),
    (64, 24, 40, "shared", False, True, -128, "fine"),
]

# stage 3's grid {scale, zp, lo, hi}, for u8 and s8 operands: "clipped" puts the level of
# probability 1 past the upper bound (300 > 255; 128 > 127 with zero point 0 on s8) and, on u8,
# the lower bound above level 0; "fine" has 1 / scale = 2^40, past an int32 (every positive
# probability's level clips at the top)
P_GRIDS = {
    "usual": ([1 / 255, 0.0, 0.0, 255.0], [1 / 255, -128.0, -128.0, 127.0]),
    "clipped": ([1 / 300, 0.0, 2.0, 255.0], [1 / 128, 0.0, -128.0, 127.0]),
    "fine": ([2.0**-40, 0.0, 0.0, 255.0], [2.0**-40, -128.0, -128.0, 127.0]),
}


@pytest.mark.parametrize("D, Sq, Sk, mask_kind, signed, fold, lo2, p_kind", CASES)
def test_attention_q8_matches_numpy_reference(
    kernel, D, Sq, Sk, mask_kind, signed, fold, lo2, p_kind
):
    rng = np.random.default_rng(D * 1000 + Sq * 10 + Sk)
    B, H = 2, 2
    gq = _grid(signed, 0.05, -3 if signed else 120)
    gk = _grid(signed, 0.04, 2 if signed else 131)
    gv = _grid(signed, 0.03, -1 if signed else 128)
    lq = _levels(rng, (B, Sq, H, D), gq, 25)
    lk = _levels(rng, (B, Sk, H, D), gk, 25)
    lv = _levels(rng, (B, Sk, H, D), gv, 40)
    post = 1.0 / np.sqrt(D)
    # stage 0 spreads the scores over about +-60 of its levels; stage 1 is stage 0's grid
    # scaled by post (the usual export, where the kernel skips stages 1 and 2 on unmasked
    # keys) or an unrelated one
    spread = float(np.std((lq[0, :, 0] - gq[1]) @ (lk[0, :, 0] - gk[1]).T)) * gq[0] * gk[0]
    s0 = spread / 30
    s1 = s0 * post if fold else s0 * post * 1.37
    p_grid = P_GRIDS[p_kind][1 if signed else 0]
    s4 = 0.004 * 255 * p_grid[0]  # the output's grid, scaled with the probabilities'
    fq = np.array(
        [s0, -2, -128, 127, s1, 1, -128, 127, s1, 1, lo2, 127, *p_grid, s4, 3, -128, 127],
        np.float32,
    )
    grids = np.array([*gq, *gk, *gv], np.float32)
    valid = rng.integers(Sk // 2, Sk + 1, B)
    valid[0] = Sk  # one example without padding
    if mask_kind == "shared":
        mask = np.where(np.arange(Sk)[None, :] < valid[:, None], 0, -10000).astype(np.float32)
        mask_rows = [np.broadcast_to(mask[b], (Sq, Sk)) for b in range(B)]
        mv = [0, 0, 0, 1, Sk]
    elif mask_kind == "rows":
        mask = rng.choice([0.0, 0.0, 0.0, -10000.0], (B, Sq, Sk)).astype(np.float32)
        mask_rows = list(mask)
        mv = [0, 0, Sk, 1, Sq * Sk]
    else:
        mask, mask_rows, mv = None, [None] * B, [0, 0, 0, 1, 0]

    def values(levels, g):
        return ((levels - g[1]) * np.float32(g[0])).astype(np.float32)

    q, k, v = values(lq, gq), values(lk, gk), values(lv, gv)
    ffi = kernel.ffi

    def view(S):
        return ffi.new("int64_t[5]", [0, D, H * D, 1, S * H * D])

    def ptr(a, t="float *"):
        return ffi.NULL if a is None else ffi.cast(t, a.ctypes.data)

    want = np.stack(
        [
            np.stack(
                [
                    _reference(
                        lq[b, :, h],
                        lk[b, :, h],
                        lv[b, :, h],
                        gq,
                        gk,
                        gv,
                        fq,
                        1.0,
                        post,
                        mask_rows[b],
                    )
                    for h in range(H)
                ],
                axis=1,
            )
            for b in range(B)
        ]
    )

    def as_bytes(levels, g):  # the uint8 form: level - lowest level
        return (levels - int(g[2])).astype(np.uint8)

    q8, k8, v8 = as_bytes(lq, gq), as_bytes(lk, gk), as_bytes(lv, gv)

    def run(mask, mv, threads, byte_operands="", out8=None):
        out = np.full((B, Sq, H, D), np.nan, np.float32)
        b8 = {
            key: ptr(a, "uint8_t *") if key in byte_operands else ffi.NULL
            for key, a in (("q", q8), ("k", k8), ("v", v8))
        }
        kernel.lib.sqc_test_attention_q8(
            B,
            H,
            Sq,
            Sk,
            D,
            ffi.NULL if "q" in byte_operands else ptr(q),
            view(Sq),
            ffi.NULL if "k" in byte_operands else ptr(k),
            view(Sk),
            ffi.NULL if "v" in byte_operands else ptr(v),
            view(Sk),
            ptr(mask),
            ffi.new("int64_t[5]", mv),
            ptr(out),
            view(Sq),
            ptr(fq),
            1.0,
            post,
            ptr(grids),
            b8["q"],
            b8["k"],
            b8["v"],
            ffi.NULL if out8 is None else ptr(out8, "uint8_t *"),
            threads,
        )
        return out

    for threads in (1, 2):
        out = run(mask, mv, threads)
        if mask_kind == "shared":
            # the same mask given per query row, where the kernel scores every key (it skips
            # a shared mask's masked tail, sqc_att_q8_tail): the very same bits
            rows = np.ascontiguousarray(np.stack(mask_rows), np.float32)
            np.testing.assert_array_equal(out, run(rows, [0, 0, Sk, 1, Sq * Sk], threads))
        step = fq[16]
        diff = np.abs(out - want)
        assert np.all(np.isfinite(out)), "outputs left unwritten"
        assert diff.max() <= 2 * step * (1 + 1e-6), (threads, float(diff.max() / step))
        assert np.mean(diff == 0) >= 0.99, (threads, float(np.mean(diff == 0)))
        for operands in ("qkv", "k", "qv"):
            np.testing.assert_array_equal(run(mask, mv, threads, operands), out, operands)
        out8 = np.full((B, Sq, H, D), 0xAB, np.uint8)
        untouched = run(mask, mv, threads, "qkv", out8)
        assert np.isnan(untouched).all(), "floats written with a byte output"
        s4, z4, lo4 = fq[16], fq[17], fq[18]
        np.testing.assert_array_equal(out8, (np.rint(out / s4) + z4 - lo4).astype(np.uint8))


@pytest.mark.parametrize("scale", [0.0035, 0.05, 0.34, 1.3, 5.5, 40.0, 1.3e36])
def test_softmax_exponentials_by_table(kernel, scale):
    """The staged softmax's exponentials (sqc_att_exp_table): E[d] = A[d % 16] B[d / 16], within
    3 * 2^-24 of exp(-d s) relatively (s: stage 2's scale; three roundings) where that is above
    2^-60, never subnormal (a
    product that would be is 0: A's and B's entries are flushed below 2^-63), non-increasing
    in d; and the kernel's lookup (two permutes, or a gather) gives the table's values."""
    ffi = kernel.ffi
    a, b, e, got = (np.zeros(n, np.float32) for n in (16, 16, 256, 256))
    kernel.lib.sqc_test_exp_table(
        scale, *(ffi.cast("float *", x.ctypes.data) for x in (a, b, e, got))
    )
    d = np.arange(256)
    np.testing.assert_array_equal(e, a[d % 16] * b[d // 16])
    np.testing.assert_array_equal(got, e)
    exact = np.exp(-d * np.float64(np.float32(scale)))
    normal = exact > 2.0**-60
    assert np.all(np.abs(e[normal] - exact[normal]) <= 3 * 2.0**-24 * exact[normal])
    assert np.all((e == 0) | (e >= np.finfo(np.float32).tiny)), "a subnormal exponential"
    assert np.all(e[~normal] <= 2.0**-60)
    assert e[0] == 1.0 and np.all(np.diff(e) <= 0)
