"""Kernel tests for the QDQ epilogue of the int8 GEMMs (sqc_qpost, passes/fuse_quant_epilogue.py):
sqc_u8s8_gemm and sqc_u8s8_spmm with rounding stages against the numpy reference of
sqc.QLinear with ``post``, bit for bit.

    y = FQ_c(FQ_b(FQ_a(float32(acc') * scale) + bias) + FQ_r(residual))

The scales are chosen so that every stage moves values (products of a few grid steps, some
saturating at the ends of the int8 range). Every variant this CPU runs natively is covered.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from sqc.compiler.codegen.emit_quant import fake_quant_grid, fold_stage_b, qpost_table
from sqc.compiler.codegen.kernels import (
    INT8_GEMM_TEMPLATE,
    KERNEL_VARIANTS,
    SPARSE_GEMM_TEMPLATE,
)
from sqc.compiler.codegen.packing import int8_gemm_lda, pack_s8_gemm_weights, s8_gemm_col_sums
from sqc.compiler.codegen.sparse_packing import pack_s8_sparse, spmm_scratch_bytes
from sqc.compiler.ops.quant_ops import fake_quant_np
from tests.kernels import harness

INT8_VARIANTS = [v for v in KERNEL_VARIANTS if v.template == INT8_GEMM_TEMPLATE]
SPARSE_VARIANTS = [v for v in KERNEL_VARIANTS if v.template == SPARSE_GEMM_TEMPLATE]

# which stages are present; the residual stages only with a residual
STAGES = [
    ("a",),
    ("a", "b"),
    ("b",),
    ("a", "b", "r", "c"),
    ("a", "b", "c"),
    ("r", "c"),
]


@pytest.fixture(scope="module", params=INT8_VARIANTS, ids=lambda v: v.name)
def dense(request, tmp_path_factory):
    variant = request.param
    if not harness.cpu_supports(variant.isa):
        pytest.skip(f"{variant.name}: this CPU cannot run it natively")
    return variant, harness.build_int8_gemm(variant, tmp_path_factory.mktemp(variant.name))


# each sparse variant, and the avx512_vnni one also with VBMI as the avx512vbmi target builds it
# (the tables' byte permutes: sqc_lut8_bytes16 / bytes64 instead of gathers)
SPARSE_BUILDS = [(v, ()) for v in SPARSE_VARIANTS] + [
    (v, ("-mavx512vbmi",)) for v in SPARSE_VARIANTS if v.knobs["int8_isa"] == "avx512_vnni"
]


@pytest.fixture(
    scope="module", params=SPARSE_BUILDS, ids=lambda b: b[0].name + "_vbmi" * bool(b[1])
)
def sparse(request, tmp_path_factory):
    variant, flags = request.param
    ok, why = harness.sparse_gemm_runnable(variant)
    if not ok:
        pytest.skip(why)
    if flags and "avx512vbmi" not in harness.cpu_flags():
        pytest.skip("this CPU has no AVX512-VBMI")
    folder = tmp_path_factory.mktemp(variant.name)
    return variant, harness.build_sparse_gemm(variant, folder, extra_cflags=flags)


def _grid(rng, dtype: str, step: float) -> dict:
    zp = int(rng.integers(-3, 4)) if dtype == "int8" else int(rng.integers(120, 136))
    return {"scale": np.float32(step * rng.uniform(0.8, 1.25)), "zero_point": zp, "dtype": dtype}


def _near_ties(rng, shape, grid: dict) -> np.ndarray:
    """Values at, or a few ulps from, the midpoints between grid levels (and a few far off
    the range, and a few special ones)."""
    s = np.float32(grid["scale"])
    levels = rng.integers(-140, 140, shape).astype(np.float32)
    x = ((levels + np.float32(0.5)) * s).astype(np.float32)
    ulps = rng.integers(-3, 4, shape).astype(np.int32)
    x = (x.view(np.int32) + ulps).view(np.float32)
    x[rng.random(shape) < 0.05] *= np.float32(300.0)
    # values whose reciprocal product could misbehave: infinities, the ends of the float range,
    # subnormals, signed zeros (NaN is left out: the numpy reference sends it to level 0)
    special = np.array([np.inf, -np.inf, 3.4e38, -3.4e38, 1e-42, -1e-42, 0.0, -0.0], np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, special.size, replace=False)] = special
    return x


def _case(
    M, N, K, stages, bias, residual, seed, sparsity=0.0, ties=False, static=False, fold=False
):
    """static: one a_zp and a_scale for every row, as a QDQ file's static input
    quantization has them (the AMX epilogue's shared-row path). fold: stage b folded as the
    compiler folds it (emit_quant.fold_stage_b: the table's k, and its k2 given in the bias's
    place); the reference stays the stages' own steps."""
    rng = np.random.default_rng(seed)
    Aq = rng.integers(0, 256, (M, K), dtype=np.uint8)
    W = rng.integers(-128, 128, (K, N), dtype=np.int8)
    W[rng.random((K, N)) < sparsity] = 0
    a_zp = rng.integers(100, 156, M, dtype=np.int32)
    col_comp = (-s8_gemm_col_sums(W).astype(np.int64)).astype(np.int32)
    a_scale = (rng.uniform(0.5, 1.5, M) * 0.02).astype(np.float32)
    if static:
        a_zp[:], a_scale[:] = a_zp[0], a_scale[0]
    w_scale = (rng.uniform(0.5, 1.5, N) * 0.05 / math.sqrt(K)).astype(np.float32)
    acc = (Aq.astype(np.int64) - a_zp[:, None]) @ W.astype(np.int64)
    plain = acc.astype(np.float32) * (a_scale[:, None] * w_scale[None, :])
    spread = float(np.abs(plain).max()) or 1.0
    # steps of 1/100 of the range (values round), the output stage 1/60 (some saturate)
    post = {k: None for k in "abrc"}
    for k in stages:
        post[k] = _grid(rng, "int8" if k != "r" else "uint8", spread / (60 if k == "c" else 100))
    b = (rng.standard_normal(N) * spread / 4).astype(np.float32) if bias else None
    R = (rng.standard_normal((M, N)) * spread).astype(np.float32) if residual else None
    if ties and R is not None:
        R = _near_ties(rng, (M, N), post["r"])
    ref = fake_quant_np(plain, post["a"])
    if b is not None:
        ref = (ref + b).astype(np.float32)
    ref = fake_quant_np(ref, post["b"])
    if R is not None:
        ref = fake_quant_np((ref + fake_quant_np(R, post["r"])).astype(np.float32), post["c"])
    table = qpost_table(post)
    if fold:
        folded = fold_stage_b(post, b if b is not None else np.zeros(N, np.float32))
        assert folded is not None, "no fold for the case"
        table, b = qpost_table(post, folded[0]), folded[1]
    return Aq, W, a_zp, col_comp, a_scale, w_scale, b, R, table, ref


def _ptr(ffi, a, ctype):
    return ffi.NULL if a is None else ffi.cast(ctype, a.ctypes.data)


def _check(out, ref, where):
    bad = out != ref
    assert not bad.any(), (
        f"{where}: {bad.sum()} of {bad.size} outputs differ, first at {np.argwhere(bad)[0]}: "
        f"{out[bad][0]!r} vs {ref[bad][0]!r}"
    )


def _run_dense(
    dense, stages, bias, shape, nthreads, ties=False, static=False, bias_nan=False, fold=False
):
    """Run the case through the dense kernel; check it against the reference (not with
    bias_nan: a NaN in the bias at a few columns, which the numpy reference sends elsewhere)
    and return C."""
    variant, module = dense
    ffi, lib = module.ffi, module.lib
    M, N, K = shape
    residual = "r" in stages or "c" in stages
    Aq, W, a_zp, cc, a_s, w_s, b, R, table, ref = _case(
        M, N, K, stages, bias, residual, seed=M + N, ties=ties, static=static, fold=fold
    )
    if bias_nan:
        b[::7] = np.nan
    isa = variant.isa
    ldq = int8_gemm_lda(K, isa)
    Aq_pad = np.zeros((M, ldq), np.uint8)
    Aq_pad[:, :K] = Aq
    packed = pack_s8_gemm_weights(W, isa)
    C = np.full((M, N), np.nan, np.float32)
    lib.sqc_test_u8s8_gemm_post(
        M, N, K, _ptr(ffi, Aq_pad, "uint8_t *"), ldq, _ptr(ffi, packed, "int8_t *"),
        _ptr(ffi, a_s, "float *"), _ptr(ffi, a_zp, "int32_t *"), _ptr(ffi, cc, "int32_t *"),
        ffi.NULL, ffi.NULL, _ptr(ffi, w_s, "float *"), _ptr(ffi, b, "float *"),
        _ptr(ffi, R, "float *"), _ptr(ffi, C, "float *"), N, _ptr(ffi, table, "float *"), nthreads,
    )  # fmt: skip
    if not bias_nan:
        _check(C, ref, f"{variant.name} {shape} {stages}")
    return C


@pytest.mark.parametrize("stages", STAGES, ids="".join)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("shape", [(1, 1, 4), (37, 45, 67), (130, 96, 768)])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_dense_qdq_epilogue_equals_reference(dense, stages, bias, shape, nthreads):
    _run_dense(dense, stages, bias, shape, nthreads)


FOLDED = [("a", "b"), ("a", "b", "r", "c"), ("a", "b", "c")]


@pytest.mark.parametrize("stages", FOLDED, ids="".join)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("shape", [(37, 45, 67), (130, 96, 768)])
@pytest.mark.parametrize("static", [False, True], ids=["rows_differ", "static"])
def test_dense_qdq_epilogue_folded_equals_reference(dense, stages, bias, shape, static):
    """Stage b folded (sqc_qpost's fold, emit_quant.fold_stage_b): the stages' own bits."""
    _run_dense(dense, stages, bias, shape, 2, static=static, fold=True)


def _f32_nearest(x: Fraction) -> float:
    """x rounded to the nearest float32, ties to even (exactly: no float64 step between)"""
    if x == 0:
        return 0.0
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length() - 24
    while a >= Fraction(2) ** (e + 24):
        e += 1
    while a < Fraction(2) ** (e + 23):
        e -= 1
    e = max(e, -149)  # subnormals: a fixed step
    m = a / Fraction(2) ** e
    n = m.numerator // m.denominator
    rest = m - n
    n += rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1)
    return float(np.float32(math.copysign(float(n * Fraction(2) ** e), x)))


@pytest.mark.parametrize("dtypes", [("int8", "int8"), ("uint8", "int8"), ("int8", "uint8")])
def test_fold_stage_b_gives_every_level_of_the_stages(dtypes):
    """emit_quant.fold_stage_b against exact arithmetic: for every column and every level q_a
    of stage a, nearbyint of the float32 nearest q_a k + k2[n] (the fma's one rounding, made
    here with fractions), clamped, is the level FQ_b(q_a s_a + bias[n]) takes in float32 steps.
    The bias spreads the columns over many grid offsets; some columns need k2 moved off
    bias / s_b (the seeds are such that the check has work to do: without it they fail)."""
    rng = np.random.default_rng(sum(map(len, dtypes)))
    N = 600
    post = {"a": _grid(rng, dtypes[0], 0.05), "b": _grid(rng, dtypes[1], 0.07)}
    bias = (rng.standard_normal(N) * 2.0).astype(np.float32)
    bias[:10] = 0.0
    # and columns whose bias puts one level's stage b input within a few ulps of a half-integer
    # of stage b's grid (where rounding q_a s_a + bias in two steps and q_a k + k2 in one part)
    sa, sb = np.float64(post["a"]["scale"]), np.float64(post["b"]["scale"])
    q = rng.integers(-100, 100, 300)
    near = (rng.integers(-60, 60, 300) + 0.5) * sb * (1 + rng.integers(-4, 5, 300) * 2.0**-23)
    bias[-300:] = (near - q * sa).astype(np.float32)
    k, k2 = fold_stage_b(post, bias)
    sa, za, la, ha = fake_quant_grid(post["a"])
    sb, zb, lb, hb = fake_quant_grid(post["b"])
    qa = np.arange(la - za, ha - za + 1, dtype=np.float32)
    f32 = np.float32
    want = np.clip(np.rint((qa[:, None] * f32(sa) + bias) / f32(sb)), lb - zb, hb - zb)
    naive = (bias.astype(np.float64) / np.float64(f32(sb))).astype(np.float32)
    moved = np.flatnonzero(k2 != naive)
    assert moved.size > 0, "no column needed its k2 moved: the check is not exercised"
    kf = Fraction(float(k))
    for n in list(moved) + list(rng.choice(N, 40, replace=False)):
        u = [_f32_nearest(Fraction(int(q)) * kf + Fraction(float(k2[n]))) for q in qa]
        got = np.clip(np.rint(np.array(u, np.float32)), lb - zb, hb - zb)
        np.testing.assert_array_equal(got, want[:, n], f"column {n}")
    for n in moved:  # and bias / s_b itself misses a level there
        u = [_f32_nearest(Fraction(int(q)) * kf + Fraction(float(naive[n]))) for q in qa]
        got = np.clip(np.rint(np.array(u, np.float32)), lb - zb, hb - zb)
        assert (got != want[:, n]).any(), f"column {n} moved for nothing"


@pytest.mark.parametrize("stages", [("r", "c"), ("a", "b", "r", "c")], ids="".join)
@pytest.mark.parametrize("static", [False, True], ids=["rows_differ", "static"])
def test_dense_qdq_epilogue_exact_near_ties(dense, stages, static):
    """Residuals at and a few ulps from the midpoints of their grid (ties to even, and where
    any shortcut for the division would round differently): still the reference's bits."""
    _run_dense(dense, stages, True, (130, 96, 768), 2, ties=True, static=static)


@pytest.mark.parametrize("stages", STAGES, ids="".join)
@pytest.mark.parametrize("shape", [(37, 45, 67), (130, 96, 768)])
def test_dense_qdq_epilogue_static_rows(dense, stages, shape):
    """One a_zp and a_scale for every row (a QDQ file's layers): the reference's bits."""
    _run_dense(dense, stages, True, shape, 2, static=True)


# (stages, bias, fold): stage b folds (emit_quant.fold_stage_b) where stages a and b are present
LUT8_DENSE = [
    (("a", "b"), True, False), (("b",), True, False), (("a",), False, False),
    (("a", "b"), False, False), (("a", "b"), True, True), (("a", "b"), False, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stages", "bias", "fold"), LUT8_DENSE,
    ids=["ab_bias", "b_bias", "a", "ab", "ab_bias_folded", "ab_folded"],
)  # fmt: skip
@pytest.mark.parametrize("shape", [(1, 1, 4), (37, 45, 67), (130, 96, 768)])
@pytest.mark.parametrize("static", [False, True], ids=["rows_differ", "static"])
@pytest.mark.parametrize("identity", [False, True], ids=["table", "identity"])
def test_dense_lut8_output(dense, stages, bias, fold, shape, static, identity):
    """C8 (passes/fuse_lut_epilogue.py): the bytes lut8[index of the last stage's level], rows
    ldc bytes apart, nothing past column N, and no float written (C is C8's own bytes). lut8
    NULL (the integer attention's operands): the index itself."""
    variant, module = dense
    ffi, lib = module.ffi, module.lib
    M, N, K = shape
    Aq, W, a_zp, cc, a_s, w_s, b, _, table, ref = _case(
        M, N, K, stages, bias, False, seed=M + N + 1, static=static, fold=fold
    )
    last = table.reshape(5, 4)[1] if "b" in stages else table.reshape(5, 4)[0]
    scale, zp, lo, hi = (float(x) for x in last)
    index = np.rint(ref / np.float32(scale)) + zp - lo
    assert index.min() >= 0 and index.max() <= hi - lo
    lut = np.zeros(256 + 3, np.uint8)  # + 3: a gather reads 4 bytes from each index
    lut[:256] = np.random.default_rng(M).permutation(256)
    isa = variant.isa
    ldq = int8_gemm_lda(K, isa)
    Aq_pad = np.zeros((M, ldq), np.uint8)
    Aq_pad[:, :K] = Aq
    packed = pack_s8_gemm_weights(W, isa)
    ldc = N + 5
    C8 = np.full((M, ldc), 0xAB, np.uint8)
    lib.sqc_test_u8s8_gemm_lut8(
        M, N, K, _ptr(ffi, Aq_pad, "uint8_t *"), ldq, _ptr(ffi, packed, "int8_t *"),
        _ptr(ffi, a_s, "float *"), _ptr(ffi, a_zp, "int32_t *"), _ptr(ffi, cc, "int32_t *"),
        _ptr(ffi, w_s, "float *"), _ptr(ffi, b, "float *"), _ptr(ffi, C8, "uint8_t *"), ldc,
        _ptr(ffi, table, "float *"), ffi.NULL if identity else _ptr(ffi, lut, "uint8_t *"), 2,
    )  # fmt: skip
    want = index.astype(np.uint8) if identity else lut[index.astype(np.int64)]
    _check(C8[:, :N], want, f"{variant.name} {shape}")
    assert (C8[:, N:] == 0xAB).all(), "wrote past column N"


@pytest.fixture(scope="module")
def vnni_and_amx(tmp_path_factory):
    by_isa = {v.isa: v for v in INT8_VARIANTS}
    pair = []
    for isa in ("avx512_vnni", "avx512_amx"):
        if not harness.cpu_supports(isa):
            pytest.skip(f"{isa}: this CPU cannot run it natively")
        pair.append(
            (by_isa[isa], harness.build_int8_gemm(by_isa[isa], tmp_path_factory.mktemp(isa)))
        )
    return pair


@pytest.mark.parametrize("stages", [("a", "b"), ("b",), ("a", "b", "r", "c")], ids="".join)
def test_amx_qdq_epilogue_with_nan_bias_equals_vnni(vnni_and_amx, stages):
    """A NaN in the bias (static rows, where the AMX epilogue skips the NaN select when the
    bias is finite): the AMX kernel still gives the VNNI kernel's bits, NaN lanes included."""
    runs = [
        _run_dense(k, stages, True, (130, 96, 768), 2, static=True, bias_nan=True)
        for k in vnni_and_amx
    ]
    np.testing.assert_array_equal(runs[1], runs[0])
    # where the NaN bias goes through FQ_b, to level zp (0 in the zero-point-free domain)
    assert not np.isnan(runs[1]).any() or "b" not in stages


def _sparse_operands(variant, Aq, W, N):
    """The sparse kernel's operands: Aq padded to its row length, W's sparse blob and a
    scratch buffer, both 64-byte aligned."""
    M, K = Aq.shape
    isa = variant.knobs["int8_isa"]
    ldq = int8_gemm_lda(K, isa)
    Aq_pad = np.zeros((M, ldq), np.uint8)
    Aq_pad[:, :K] = Aq
    blob = pack_s8_sparse(W, isa)
    aligned = np.empty(blob.nbytes + 64, np.uint8)
    start = (-aligned.ctypes.data) % 64
    aligned[start : start + blob.nbytes] = blob.view(np.uint8).reshape(-1)
    blob = aligned[start : start + blob.nbytes]
    scratch = np.empty(spmm_scratch_bytes(M, K, N, "int8", isa) + 64, np.uint8)
    return Aq_pad, ldq, blob, scratch[(-scratch.ctypes.data) % 64 :]


def _run_sparse(
    sparse, stages, shape, seed, sparsity, static=False, bias_nan=False, w_zp=False, fold=False
):
    """Run the case through the sparse kernel; check it against the reference (not with
    bias_nan, as _run_dense) and return C. w_zp: pass weight zero points of 0 (the same
    products; the tile then makes the rows' terms per row, as when rows differ)."""
    variant, module = sparse
    ffi, lib = module.ffi, module.lib
    M, N, K = shape
    residual = "c" in stages
    Aq, W, a_zp, cc, a_s, w_s, b, R, table, ref = _case(
        M, N, K, stages, True, residual, seed=seed, sparsity=sparsity, static=static, fold=fold
    )
    if bias_nan:
        b[::7] = np.nan
    Aq_pad, ldq, blob, scratch = _sparse_operands(variant, Aq, W, N)
    zeros = np.zeros(N, np.int32) if w_zp else None
    C = np.full((M, N), np.nan, np.float32)
    lib.sqc_test_u8s8_spmm_post(
        M, N, K, _ptr(ffi, Aq_pad, "uint8_t *"), ldq, _ptr(ffi, blob, "void *"),
        _ptr(ffi, a_s, "float *"), _ptr(ffi, a_zp, "int32_t *"), _ptr(ffi, cc, "int32_t *"),
        _ptr(ffi, zeros, "int32_t *"), ffi.NULL, _ptr(ffi, w_s, "float *"),
        _ptr(ffi, b, "float *"), _ptr(ffi, R, "float *"), _ptr(ffi, C, "float *"), N,
        _ptr(ffi, table, "float *"), _ptr(ffi, scratch, "void *"), 2,
    )  # fmt: skip
    if not bias_nan:
        _check(C, ref, f"{variant.name} {shape} {stages}")
    return C


@pytest.mark.parametrize("stages", [("a", "b"), ("a", "b", "r", "c")], ids="".join)
@pytest.mark.parametrize("shape", [(9, 45, 67), (130, 96, 768)])
@pytest.mark.parametrize("static", [False, True], ids=["rows_differ", "static"])
@pytest.mark.parametrize("fold", [False, True], ids=["steps", "folded"])
def test_sparse_qdq_epilogue_equals_reference(sparse, stages, shape, static, fold):
    """static: one a_zp and a_scale for every row (the sparse tile's shared-row epilogue).
    fold: stage b folded (emit_quant.fold_stage_b)."""
    _run_sparse(sparse, stages, shape, seed=shape[0], sparsity=0.9, static=static, fold=fold)


@pytest.mark.parametrize("stages", [("a", "b"), ("b",), ("a", "b", "r", "c")], ids="".join)
def test_sparse_qdq_epilogue_with_nan_bias_as_rows_apart(sparse, stages):
    """A NaN in the bias with static rows (where the sparse tile makes the rows' terms once
    and skips the NaN select when a column block's scales and bias are finite): the bits of the
    per-row path (forced by weight zero points of 0), NaN lanes included."""
    shape = (130, 96, 768)
    args = dict(seed=5, sparsity=0.9, static=True, bias_nan=True)
    got = _run_sparse(sparse, stages, shape, **args)
    want = _run_sparse(sparse, stages, shape, w_zp=True, **args)
    np.testing.assert_array_equal(got, want)
    # where the NaN bias goes through FQ_b, to level zp (0 in the zero-point-free domain)
    assert not np.isnan(got).any() or "b" not in stages


@pytest.mark.parametrize(
    ("stages", "fold"), [(("a", "b"), False), (("a",), False), (("a", "b"), True)],
    ids=["ab", "a", "ab_folded"],
)  # fmt: skip
@pytest.mark.parametrize("shape", [(9, 45, 67), (130, 96, 768)])
@pytest.mark.parametrize("identity", [False, True], ids=["table", "identity"])
@pytest.mark.parametrize("static", [False, True], ids=["rows_differ", "static"])
def test_sparse_lut8_output(sparse, stages, fold, shape, identity, static):
    """The sparse kernel's C8 (fuse_lut_epilogue on a sparse layer): the bytes lut8[index of the
    last stage's level] (lut8 NULL: the index), rows ldc bytes apart, nothing past column N."""
    variant, module = sparse
    ffi, lib = module.ffi, module.lib
    M, N, K = shape
    bias = "b" in stages
    Aq, W, a_zp, cc, a_s, w_s, b, _, table, ref = _case(
        M, N, K, stages, bias, False, seed=M + 7, sparsity=0.9, static=static, fold=fold
    )
    last = table.reshape(5, 4)[1] if "b" in stages else table.reshape(5, 4)[0]
    scale, zp, lo, hi = (float(x) for x in last)
    index = np.rint(ref / np.float32(scale)) + zp - lo
    lut = np.zeros(256 + 3, np.uint8)
    lut[:256] = np.random.default_rng(M).permutation(256)
    Aq_pad, ldq, blob, scratch = _sparse_operands(variant, Aq, W, N)
    ldc = N + 5
    C8 = np.full((M, ldc), 0xAB, np.uint8)
    lib.sqc_test_u8s8_spmm_lut8(
        M, N, K, _ptr(ffi, Aq_pad, "uint8_t *"), ldq, _ptr(ffi, blob, "void *"),
        _ptr(ffi, a_s, "float *"), _ptr(ffi, a_zp, "int32_t *"), _ptr(ffi, cc, "int32_t *"),
        _ptr(ffi, w_s, "float *"), _ptr(ffi, b, "float *") if bias else ffi.NULL,
        _ptr(ffi, C8, "uint8_t *"), ldc, _ptr(ffi, table, "float *"),
        ffi.NULL if identity else _ptr(ffi, lut, "uint8_t *"), _ptr(ffi, scratch, "void *"), 2,
    )  # fmt: skip
    want = index.astype(np.uint8) if identity else lut[index.astype(np.int64)]
    _check(C8[:, :N], want, f"{variant.name} {shape}")
    assert (C8[:, N:] == 0xAB).all(), "wrote past column N"


def _blob(W, isa, layout):
    blob = pack_s8_sparse(W, isa, layout)
    raw = np.empty(blob.nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    raw[start : start + blob.nbytes] = blob.view(np.uint8).reshape(-1)
    return raw[start : start + blob.nbytes]


@pytest.mark.parametrize("layouts", ["compact-compact", "quads-quads", "compact-quads"])
@pytest.mark.parametrize(
    ("M", "N1"), [(64, 148), (130, 148), (517, 148), (130, 146), (200, 1)], ids=str
)  # fmt: skip
@pytest.mark.parametrize("second", ["qdq_residual", "plain", "folded", "nan_bias1"])
def test_sparse_ffn_pair_equals_two_calls(sparse, layouts, M, N1, second):
    """sqc_u8s8_spmm_ffn (passes/pair_sparse_ffn.py, int8): the first layer's table bytes
    handed to the second layer as its token panels, column by column, give the two
    sqc_u8s8_spmm calls' outputs bit for bit (the first into H8 through its table, the
    second reading H8), on 1 and 2 threads, for each blob layout of either layer; nothing is
    written past C's rows and columns or the scratch. M: one token panel (fused on 1 thread
    only: 2 threads' hidden panels need 128 rows of H8), a short last panel, many panels; N1
    not a multiple of 4 (fused with compact second weights, the two calls with quads) and 1.
    Rows that do not share a_scale / a_zp: not fused (0)."""
    variant, module = sparse
    ffi, lib = module.ffi, module.lib
    isa = variant.knobs["int8_isa"]
    if isa != "avx512_vnni":
        pytest.skip(f"{isa}: no fused int8 FFN kernel")
    l1, l2 = layouts.split("-")
    K, N2 = 67, 45
    folded = second == "folded"  # both layers' stage b folded (emit_quant.fold_stage_b)
    Aq, W1, a_zp, cc1, a_s, w_s1, b1, _, table1, _ = _case(
        M, N1, K, ("a", "b"), True, False, seed=M + N1, sparsity=0.9, static=True, fold=folded
    )
    if second == "nan_bias1":  # the hidden tile's NaN select (its columns' finite test)
        b1 = b1.copy()
        b1[::7] = np.nan
    rng = np.random.default_rng(M)
    lut = np.zeros(256 + 3, np.uint8)
    lut[:256] = rng.permutation(256)
    stages2 = ("a", "b", "r", "c") if second != "plain" else ()
    H_ref = np.zeros((M, N1), np.uint8)  # the reference's first call writes it
    _, W2, _, cc2, _, w_s2, b2, R, table2, _ = _case(
        M,
        N2,
        N1,
        stages2,
        True,
        bool(stages2),
        seed=M + 3,
        sparsity=0.9,
        static=True,
        fold=folded,
    )
    x_s2, x_zp2 = np.float32(0.031), 119
    as2, azp2 = np.full(M, x_s2, np.float32), np.full(M, x_zp2, np.int32)
    ldq = int8_gemm_lda(K, isa)
    Aq_pad = np.zeros((M, ldq), np.uint8)
    Aq_pad[:, :K] = Aq
    B1, B2 = _blob(W1, isa, l1), _blob(W2, isa, l2)
    p = lambda a, t: _ptr(ffi, a, t)  # noqa: E731
    post2 = table2 if stages2 else None
    ldc = N2 + 3  # the residual's row stride too
    if R is not None:
        R = np.pad(R, ((0, 0), (0, ldc - N2)), constant_values=np.nan)

    def fused(a_scale, nthreads):
        scratch = harness.Scratch(spmm_scratch_bytes(M, K, N1, "int8", isa))
        H8 = np.full(M * N1 + 64, 0xCD, np.uint8)
        C = np.full((M + 1, ldc), np.nan, np.float32)
        ran = lib.sqc_test_u8s8_spmm_ffn(
            M, K, N1, N2, p(Aq_pad, "uint8_t *"), ldq, p(B1, "void *"), p(a_scale, "float *"),
            p(a_zp, "int32_t *"), p(cc1, "int32_t *"), p(w_s1, "float *"), p(b1, "float *"),
            p(table1, "float *"), p(lut, "uint8_t *"), p(H8, "uint8_t *"), p(B2, "void *"),
            p(as2, "float *"), p(azp2, "int32_t *"), p(cc2, "int32_t *"), p(w_s2, "float *"),
            p(b2, "float *"), p(R, "float *"), p(C, "float *"), ldc, p(post2, "float *"),
            p(scratch.buf, "void *"), nthreads,
        )  # fmt: skip
        assert ran != -1, f"{variant.name}: the fused kernel was not rendered"
        assert scratch.intact() and (H8[M * N1 :] == 0xCD).all()
        assert np.isnan(C[M:]).all() and np.isnan(C[:, N2:]).all()
        return ran, C[:M, :N2]

    # the reference: the two calls through H8 (its rows padded to the second call's ldq)
    scratch = harness.Scratch(spmm_scratch_bytes(M, max(K, N1), max(N1, N2), "int8", isa))
    lib.sqc_test_u8s8_spmm_lut8(
        M, N1, K, p(Aq_pad, "uint8_t *"), ldq, p(B1, "void *"), p(a_s, "float *"),
        p(a_zp, "int32_t *"), p(cc1, "int32_t *"), p(w_s1, "float *"), p(b1, "float *"),
        p(H_ref, "uint8_t *"), N1, p(table1, "float *"), p(lut, "uint8_t *"),
        p(scratch.buf, "void *"), 1,
    )  # fmt: skip
    ldq2 = int8_gemm_lda(N1, isa)
    H_pad = np.zeros((M, ldq2), np.uint8)
    H_pad[:, :N1] = H_ref
    want = np.full((M, ldc), np.nan, np.float32)
    lib.sqc_test_u8s8_spmm_post(
        M, N2, N1, p(H_pad, "uint8_t *"), ldq2, p(B2, "void *"), p(as2, "float *"),
        p(azp2, "int32_t *"), p(cc2, "int32_t *"), ffi.NULL, ffi.NULL, p(w_s2, "float *"),
        p(b2, "float *"), p(R, "float *"), p(want, "float *"), ldc, p(post2, "float *"),
        p(scratch.buf, "void *"), 1,
    )  # fmt: skip
    expect_fused = l2 == "compact" or N1 % 4 == 0
    for nthreads in (1, 2):
        ran, got = fused(a_s, nthreads)
        assert ran == int(expect_fused and nthreads * 64 <= M), (nthreads, ran)
        if ran:
            _check(got, want[:, :N2], f"{variant.name} {layouts} M={M} N1={N1} t={nthreads}")
    rows_differ = a_s.copy()
    rows_differ[-1] *= np.float32(1.5)
    assert fused(rows_differ, 1)[0] == 0
