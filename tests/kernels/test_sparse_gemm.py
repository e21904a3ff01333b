"""Kernel tests for templates/kernels/sparse_gemm.h.j2: sqc_f32_spmm against float64 numpy,
sqc_u8s8_spmm against the int64 numpy reference (exact) and, bit for bit, against the dense
sqc_u8s8_gemm of the same target (same epilogue arithmetic).

Weights are swept over sparsity 0, 0.5, 0.8, 0.9, 0.95 and 1 (all zero) and the patterns
unstructured, 1o4i (4 consecutive k for one output n) and 4o1i (4 consecutive outputs n for one k).
Sizes sweep M, N and K below, at and above the token tile, the column block (vector lanes) and the
thread tile, with tails. Buffers carry guards: A's columns past K are NaN (fp32: a read past K
poisons C) or random garbage (int8: the contract lets them be anything), C's columns past N and the
row past M must stay NaN, the scratch is NaN garbage on entry (not zeroed) and 64 guard bytes past
spmm_scratch_bytes must stay untouched.

Each target runs natively or skips (no emulation for sparse GEMMs).
"""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest

from sqc.compiler.codegen.kernels import (
    KERNEL_VARIANTS,
    SPARSE_GEMM_TEMPLATE,
    KernelVariant,
    render_kernel,
)
from sqc.compiler.codegen.packing import (
    int8_gemm_lda,
    pack_s8_gemm_weights,
    s8_gemm_col_sums,
)
from sqc.compiler.codegen.sparse_packing import (
    f32_chunks,
    pack_f32_sparse,
    pack_s8_sparse,
    s8_sparse_layout,
    sparse_gain,
    sparse_stats,
    spmm_scratch_bytes,
)
from tests.kernels import harness

# Tolerances, one row per check, with the reason.
TOLERANCES = {
    # fp32: |C - ref| <= rtol * sqrt(K) * (|A| @ |W| + |bias| + |residual|), elementwise. An fp32
    # sum of K products errs by about 2^-24 sqrt(K) of the magnitude of its terms for random
    # signs; 1e-6 sqrt(K) leaves headroom yet catches a missing or doubled product.
    "f32_rtol_per_sqrt_k": 1e-6,
    # GELU epilogue: the rational erf / tanh approximations err by <= 3e-7 absolute, scaled by
    # |x| / 2 in GELU (as test_f32_gemm).
    "gelu_f32_atol": 4e-7,
    # int8: 0 ulp. The int32 sums are exact and the epilogue is sqc_u8s8_gemm's, operation for
    # operation, so the output equals the dense kernel's bit for bit, and without bias /
    # residual / activation equals float32(acc') * (a_scale w_scale) exactly.
    "int8_ulp": 0,
}

ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH = 0, 1, 2
SPARSE_VARIANTS = [v for v in KERNEL_VARIANTS if v.template == SPARSE_GEMM_TEMPLATE]
SPARSITIES = [0.0, 0.5, 0.8, 0.9, 0.95, 1.0]
PATTERNS = ["unstructured", "1o4i", "4o1i"]


class Spmm:
    def __init__(self, variant: KernelVariant, module) -> None:
        self.variant = variant
        self.module = module
        self.isa = variant.knobs["isa"]
        self.int8_isa = variant.knobs["int8_isa"]
        self.f32_lanes = 16 if self.isa == "avx512" else 8
        self.i8_lanes = 16 if self.int8_isa == "avx512_vnni" else 8

    def size(self, expr: str, kind: str) -> int:
        """Evaluate a size written with the kind's knobs: tt (token tile), lanes, nc."""
        k = self.variant.knobs
        names = (
            {"tt": k["f32_tt"], "lanes": self.f32_lanes, "nc": k["f32_nc"]}
            if kind == "f32"
            else {"tt": k["i8_tt"], "lanes": self.i8_lanes, "nc": k["i8_nc"]}
        )
        return int(eval(expr, {"__builtins__": {}}, names))


@pytest.fixture(scope="session", params=SPARSE_VARIANTS, ids=lambda v: v.name)
def spmm(request, tmp_path_factory) -> Spmm:
    variant = request.param
    ok, why = harness.sparse_gemm_runnable(variant)
    if not ok:
        pytest.skip(why)
    return Spmm(variant, harness.build_sparse_gemm(variant, tmp_path_factory.mktemp(variant.name)))


def sparsity_mask(K: int, N: int, sparsity: float, pattern: str, rng) -> np.ndarray:
    """bool [K, N], True where W is nonzero: blocks of the pattern kept with prob 1 - sparsity."""
    keep = 1.0 - sparsity
    if pattern == "unstructured":
        return rng.random((K, N)) < keep
    if pattern == "1o4i":  # 4 consecutive k for one n
        blocks = rng.random((-(-K // 4), N)) < keep
        return np.repeat(blocks, 4, axis=0)[:K]
    if pattern == "4o1i":  # 4 consecutive n for one k
        blocks = rng.random((K, -(-N // 4))) < keep
        return np.repeat(blocks, 4, axis=1)[:, :N]
    raise ValueError(pattern)


def gelu_erf_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACT_REF = {ACT_NONE: lambda x: x, ACT_GELU_ERF: gelu_erf_ref, ACT_GELU_TANH: gelu_tanh_ref}


def aligned_copy(blob: np.ndarray) -> np.ndarray:
    """blob in a 64-byte aligned buffer (the kernels' contract)."""
    raw = np.empty(blob.size + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off : off + blob.size]
    out[:] = blob
    return out


def ptr(ffi, array: np.ndarray | None, ctype: str):
    return ffi.NULL if array is None else ffi.cast(ctype, array.ctypes.data)


def run_f32(
    spmm: Spmm,
    M: int,
    N: int,
    K: int,
    *,
    sparsity: float = 0.9,
    pattern: str = "unstructured",
    bias: bool = False,
    residual: str = "none",  # "none" | "separate" | "inplace"
    act: int = ACT_NONE,
    nthreads: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Run sqc_f32_spmm, check it against float64 numpy, return C[:M, :N]."""
    rng = np.random.default_rng(seed)
    ffi, lib = spmm.module.ffi, spmm.module.lib
    lda, ldc = K + 3, N + 3
    A = np.full((M + 1, lda), np.nan, dtype=np.float32)
    A[:M, :K] = rng.standard_normal((M, K))
    W = rng.standard_normal((K, N)).astype(np.float32)
    W[~sparsity_mask(K, N, sparsity, pattern, rng)] = 0.0
    blob = aligned_copy(pack_f32_sparse(W, spmm.isa))
    scratch = harness.Scratch(spmm_scratch_bytes(M, K, N, "f32", spmm.isa))
    b = rng.standard_normal(N).astype(np.float32) if bias else None

    a64 = A[:M, :K].astype(np.float64)
    pre = a64 @ W.astype(np.float64)
    magnitude = np.abs(a64) @ np.abs(W.astype(np.float64))
    pre, magnitude, C, R = harness.add_epilogue(rng, pre, magnitude, b, residual, M, N, ldc)

    lib.sqc_test_f32_spmm(
        M,
        N,
        K,
        ptr(ffi, A, "float *"),
        lda,
        ptr(ffi, blob, "void *"),
        ptr(ffi, b, "float *"),
        ptr(ffi, R, "float *"),
        ptr(ffi, C, "float *"),
        ldc,
        act,
        ptr(ffi, scratch.buf, "void *"),
        nthreads,
    )
    where = f"M={M} N={N} K={K} {pattern} {sparsity}"
    assert scratch.intact(), f"{where}: wrote past spmm_scratch_bytes"
    assert np.isnan(C[:, N:]).all(), f"{where}: wrote past column N"
    assert np.isnan(C[M:, :]).all(), f"{where}: wrote past row M"
    out = C[:M, :N]
    bound = TOLERANCES["f32_rtol_per_sqrt_k"] * math.sqrt(max(K, 1)) * magnitude
    ref = ACT_REF[act](pre)
    if act != ACT_NONE:
        bound = 1.13 * bound + TOLERANCES["gelu_f32_atol"] * (1.0 + np.abs(pre))
    err = np.abs(out - ref)
    assert (err <= bound).all(), f"{where}: err {(err - bound).max():.3g} over bound"
    return out.copy()


def run_int8(
    spmm: Spmm,
    M: int,
    N: int,
    K: int,
    *,
    sparsity: float = 0.9,
    pattern: str = "unstructured",
    w_zp: bool = True,
    bias: bool = False,
    residual: str = "none",
    act: int = ACT_NONE,
    nthreads: int = 1,
    data: str = "random",  # "random" full range | "extreme": A all 255, W all -128 where kept
    layout: str | None = None,  # pack_s8_sparse's layout (None: its own choice)
    seed: int = 0,
    shared_rows: bool = False,  # every row one a_scale and a_zp (a static layer's, an example's)
) -> np.ndarray:
    """Run sqc_u8s8_spmm; check it against the int64 reference and the dense kernel."""
    rng = np.random.default_rng(seed)
    ffi, lib = spmm.module.ffi, spmm.module.lib
    isa = spmm.int8_isa
    ldq = int8_gemm_lda(K, isa) + 5  # not a multiple of 4: unaligned rows
    ldc = N + 3
    Aq = rng.integers(0, 256, (M + 1, ldq), dtype=np.uint8)  # garbage past K must not count
    mask = sparsity_mask(K, N, sparsity, pattern, rng)
    if data == "extreme":
        Aq[:M, :K] = 255
        W = np.full((K, N), -128, dtype=np.int8)
        a_zp = np.zeros(M, dtype=np.int32)
        wzp = np.zeros(N, dtype=np.int32) if w_zp else None
    else:
        W = rng.integers(-128, 128, (K, N), dtype=np.int8)
        W[rng.random((K, N)) < 0.05] = 127  # the extremes inside random data too
        W[rng.random((K, N)) < 0.05] = -128
        a_zp = rng.integers(0, 256, M, dtype=np.int32)
        wzp = rng.integers(-128, 128, N, dtype=np.int32) if w_zp else None
    W[~mask] = 0
    A = Aq[:M, :K].astype(np.int64)
    rowsum = A.sum(axis=1).astype(np.int32)
    col_comp = (K * (wzp if w_zp else 0) - s8_gemm_col_sums(W).astype(np.int64)).astype(np.int32)
    a_scale = (rng.uniform(0.5, 1.5, M) * 0.02).astype(np.float32)
    if shared_rows:
        a_scale[:], a_zp[:] = a_scale[0], a_zp[0]
    w_scale = (rng.uniform(0.5, 1.5, N) * 1e-3 / math.sqrt(max(K, 1))).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    blob = aligned_copy(pack_s8_sparse(W, isa, layout))
    dense = pack_s8_gemm_weights(W, isa)
    scratch = harness.Scratch(spmm_scratch_bytes(M, K, N, "int8", isa))

    acc = A @ W.astype(np.int64)
    acc += a_zp.astype(np.int64)[:, None] * col_comp.astype(np.int64)[None, :]
    if w_zp:
        acc -= wzp.astype(np.int64)[None, :] * rowsum.astype(np.int64)[:, None]
    assert np.abs(acc).max(initial=0) < 2**31, "test data overflows the int32 contract"
    plain = acc.astype(np.float32) * (a_scale[:, None] * w_scale[None, :])

    outs = []
    values = rng.standard_normal((M, N)).astype(np.float32)
    for fn in ("sparse", "dense"):
        C, R = harness.output_buffers(M, N, ldc, residual, values)
        args = [
            ptr(ffi, a_scale, "float *"),
            ptr(ffi, a_zp, "int32_t *"),
            ptr(ffi, col_comp, "int32_t *"),
            ptr(ffi, wzp, "int32_t *"),
            ptr(ffi, rowsum if w_zp else None, "int32_t *"),
            ptr(ffi, w_scale, "float *"),
            ptr(ffi, b, "float *"),
            ptr(ffi, R, "float *"),
            ptr(ffi, C, "float *"),
            ldc,
            act,
        ]
        if fn == "sparse":
            lib.sqc_test_u8s8_spmm(
                M, N, K, ptr(ffi, Aq, "uint8_t *"), ldq, ptr(ffi, blob, "void *"), *args,
                ptr(ffi, scratch.buf, "void *"), nthreads,
            )  # fmt: skip
        else:
            lib.sqc_test_u8s8_gemm(
                M, N, K, ptr(ffi, Aq, "uint8_t *"), ldq, ptr(ffi, dense, "int8_t *"), *args, 1
            )
        outs.append(C)
    C, C_dense = outs
    where = f"M={M} N={N} K={K} {pattern} {sparsity}"
    assert scratch.intact(), f"{where}: wrote past spmm_scratch_bytes"
    assert np.isnan(C[:, N:]).all(), f"{where}: wrote past column N"
    assert np.isnan(C[M:, :]).all(), f"{where}: wrote past row M"
    out = C[:M, :N]
    if not bias and residual == "none" and act == ACT_NONE:
        bad = out != plain
        assert not bad.any(), (
            f"{where}: {bad.sum()} outputs differ from float32(acc') * scale, first at "
            f"{np.argwhere(bad)[0]}: {out[bad][0]!r} vs {plain[bad][0]!r}"
        )
    same = (out == C_dense[:M, :N]) | (np.isnan(out) & np.isnan(C_dense[:M, :N]))
    assert same.all(), f"{where}: {(~same).sum()} outputs differ from the dense kernel's"
    return out.copy()


# ---- fp32 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_f32_sparsity(spmm: Spmm, sparsity: float, pattern: str) -> None:
    run_f32(spmm, spmm.size("tt+3", "f32"), spmm.size("2*lanes+5", "f32"), 67,
            sparsity=sparsity, pattern=pattern, seed=1)  # fmt: skip


@pytest.mark.parametrize(
    "M",
    ["0", "1", "7", "lanes", "lanes+1", "2*lanes", "2*lanes+1", "tt-1", "tt", "tt+3", "130",
     "8*tt-1", "8*tt+5"],  # more panels than threads: whole panels per thread
)  # fmt: skip
def test_f32_m_sweep(spmm: Spmm, M: str) -> None:
    run_f32(spmm, spmm.size(M, "f32"), spmm.size("lanes+3", "f32"), 67, nthreads=2, seed=2)


@pytest.mark.parametrize(
    "N", ["1", "3", "lanes-1", "lanes", "lanes+1", "nc-1", "nc", "nc+1", "2*nc+lanes+3"]
)
def test_f32_n_sweep(spmm: Spmm, N: str) -> None:
    run_f32(spmm, 17, spmm.size(N, "f32"), 67, sparsity=0.5, seed=3)


@pytest.mark.parametrize("K", [0, 1, 3, 4, 5, 17, 67, 768])
def test_f32_k_sweep(spmm: Spmm, K: int) -> None:
    run_f32(spmm, spmm.size("tt+3", "f32"), spmm.size("lanes+3", "f32"), K, sparsity=0.5, seed=4)


@pytest.mark.parametrize(
    "act", [ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH], ids=["none", "erf", "tanh"]
)
@pytest.mark.parametrize("residual", ["none", "separate", "inplace"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_f32_epilogue(spmm: Spmm, bias: bool, residual: str, act: int) -> None:
    run_f32(spmm, 17, spmm.size("lanes+3", "f32"), 131,
            bias=bias, residual=residual, act=act, nthreads=2, seed=5)  # fmt: skip


@pytest.mark.parametrize("M", ["tt", "4*tt+5"])  # tt: one panel, whole on 1 thread, not on 2
@pytest.mark.parametrize("pattern", PATTERNS)
def test_f32_threads_match_one_thread(spmm: Spmm, pattern: str, M: str) -> None:
    shape = (spmm.size(M, "f32"), spmm.size("2*nc+5", "f32"), 768)
    one = run_f32(spmm, *shape, pattern=pattern, bias=True, act=ACT_GELU_ERF, nthreads=1, seed=6)
    two = run_f32(spmm, *shape, pattern=pattern, bias=True, act=ACT_GELU_ERF, nthreads=2, seed=6)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("M", ["lanes+1", "tt", "tt+3", "2*tt", "8*tt+5"])
@pytest.mark.parametrize("residual", ["none", "separate"])
@pytest.mark.parametrize(
    "act", [ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH], ids=["none", "erf", "tanh"]
)
def test_f32_ffn_equals_two_calls(spmm: Spmm, M: str, residual: str, act: int) -> None:
    """sqc_f32_spmm_ffn (the hidden layer's panels handed over in the thread's L2) gives the
    bits of two sqc_f32_spmm calls through H, on 1 and 2 threads, and writes nothing past M or
    N2, its scratch or H. M: the two-call path (<= 2 vectors of tokens); one panel (fused on 1
    thread); 2 panels of which the last is short (fused on 1 thread: 2 threads' panels would not
    fit H's M rows); 2 full panels (fused on both); many."""
    ffi, lib = spmm.module.ffi, spmm.module.lib
    rng = np.random.default_rng(21)
    M, N1, N2, K = (
        spmm.size(M, "f32"),
        spmm.size("2*nc+lanes+3", "f32"),
        spmm.size("nc+5", "f32"),
        67,
    )
    A = rng.standard_normal((M, K)).astype(np.float32)
    W1 = rng.standard_normal((K, N1)).astype(np.float32)
    W1[~sparsity_mask(K, N1, 0.8, "unstructured", rng)] = 0.0
    W2 = (rng.standard_normal((N1, N2)) * 0.1).astype(np.float32)
    W2[~sparsity_mask(N1, N2, 0.8, "unstructured", rng)] = 0.0
    b1, b2 = rng.standard_normal(N1).astype(np.float32), rng.standard_normal(N2).astype(np.float32)
    B1, B2 = (
        aligned_copy(pack_f32_sparse(W1, spmm.isa)),
        aligned_copy(pack_f32_sparse(W2, spmm.isa)),
    )
    # the residual has C's row stride (ldc = N2 + 3)
    R = rng.standard_normal((M, N2 + 3)).astype(np.float32) if residual == "separate" else None
    f = lambda a, t="float *": ptr(ffi, a, t)  # noqa: E731
    outs = []
    for nthreads in (1, 2):
        scratch = harness.Scratch(spmm_scratch_bytes(M, max(K, N1), N2, "f32", spmm.isa))
        H = aligned_copy(np.full((M + 7) * N1, np.nan, np.float32).view(np.uint8)).view(np.float32)
        C = np.full((M + 1, N2 + 3), np.nan, np.float32)
        lib.sqc_test_f32_spmm_ffn(M, K, N1, N2, f(A), K, f(B1, "void *"), f(b1), act,
                                  f(B2, "void *"), f(b2), f(R), f(H), f(C), N2 + 3,
                                  f(scratch.buf, "void *"), nthreads)  # fmt: skip
        assert scratch.intact() and np.isnan(C[M:]).all() and np.isnan(C[:, N2:]).all()
        assert np.isnan(H[M * N1 :]).all(), "wrote past H's M rows"
        outs.append(C[:M, :N2].copy())
    scratch = harness.Scratch(spmm_scratch_bytes(M, max(K, N1), N2, "f32", spmm.isa))
    H = np.empty((M, N1), np.float32)
    C = np.full((M + 1, N2 + 3), np.nan, np.float32)
    lib.sqc_test_f32_spmm(M, N1, K, f(A), K, f(B1, "void *"), f(b1), ffi.NULL, f(H), N1, act,
                          f(scratch.buf, "void *"), 1)  # fmt: skip
    lib.sqc_test_f32_spmm(M, N2, N1, f(H), N1, f(B2, "void *"), f(b2), f(R), f(C), N2 + 3, 0,
                          f(scratch.buf, "void *"), 1)  # fmt: skip
    for got in outs:
        assert np.array_equal(got, C[:M, :N2])


# ---- int8 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_int8_sparsity(spmm: Spmm, sparsity: float, pattern: str) -> None:
    run_int8(spmm, spmm.size("tt+3", "int8"), spmm.size("2*lanes+5", "int8"), 67,
             sparsity=sparsity, pattern=pattern, seed=11)  # fmt: skip


COMPACT_ISAS = ("avx512_vnni",)  # the int8 isas with the compact layout (4 nonzeros at any k)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 5), (67, 37, 67), (130, 70, 768)])
def test_int8_compact_layout(spmm: Spmm, shape) -> None:
    """Both int8 layouts on every sparsity and pattern (the packer would pick one of them)."""
    if spmm.int8_isa not in COMPACT_ISAS:
        pytest.skip(f"{spmm.int8_isa}: no compact layout")
    M, N, K = shape
    for sparsity in SPARSITIES:
        for pattern in PATTERNS:
            kw = dict(sparsity=sparsity, pattern=pattern, seed=21)
            for layout in ("compact", "quads"):
                run_int8(spmm, M, N, K, layout=layout, bias=True, residual="inplace",
                         act=ACT_GELU_ERF, nthreads=2, **kw)  # fmt: skip
                run_int8(spmm, M, N, K, layout=layout, **kw)
            run_int8(spmm, M, N, K, layout="compact", data="extreme", **kw)


@pytest.mark.parametrize(
    "M",
    ["0", "1", "7", "lanes", "lanes+1", "2*lanes", "2*lanes+1", "tt-1", "tt", "tt+3", "130",
     "8*tt-1", "8*tt+5"],  # more panels than threads: whole panels per thread
)  # fmt: skip
def test_int8_m_sweep(spmm: Spmm, M: str) -> None:
    run_int8(spmm, spmm.size(M, "int8"), spmm.size("2*nc+3", "int8"), 67, nthreads=2, seed=12)


@pytest.mark.parametrize(
    "N", ["1", "3", "lanes-1", "lanes", "lanes+1", "nc-1", "nc", "nc+1", "2*nc+lanes+3"]
)
def test_int8_n_sweep(spmm: Spmm, N: str) -> None:
    run_int8(spmm, 17, spmm.size(N, "int8"), 67, sparsity=0.5, seed=13)


@pytest.mark.parametrize("K", [0, 1, 3, 4, 5, 17, 67, 768])
def test_int8_k_sweep(spmm: Spmm, K: int) -> None:
    run_int8(spmm, spmm.size("tt+3", "int8"), spmm.size("lanes+3", "int8"), K,
             sparsity=0.5, seed=14)  # fmt: skip


@pytest.mark.parametrize("K", [1, 3, 4, 5, 67, 3072])
@pytest.mark.parametrize("w_zp", [False, True], ids=["no_wzp", "wzp"])
def test_int8_extreme_values(spmm: Spmm, K: int, w_zp: bool) -> None:
    """All 255 x all -128 (where kept): every product is -32640; K = 3072 dense: acc = -1.0e8,
    exact in int32. vpmaddubsw would saturate the pair sums."""
    run_int8(spmm, 17, spmm.size("lanes+3", "int8"), K, sparsity=0.0, w_zp=w_zp, data="extreme")
    run_int8(spmm, 17, spmm.size("lanes+3", "int8"), K, sparsity=0.5, pattern="1o4i",
             w_zp=w_zp, data="extreme")  # fmt: skip


@pytest.mark.parametrize(
    "act", [ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH], ids=["none", "erf", "tanh"]
)
@pytest.mark.parametrize("residual", ["none", "separate", "inplace"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_int8_epilogue(spmm: Spmm, bias: bool, residual: str, act: int) -> None:
    run_int8(spmm, 17, spmm.size("lanes+3", "int8"), 131,
             bias=bias, residual=residual, act=act, nthreads=2, seed=15)  # fmt: skip


@pytest.mark.parametrize(
    "act", [ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH], ids=["none", "erf", "tanh"]
)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_int8_epilogue_rows_share_qparams(spmm: Spmm, pattern: str, bias: bool, act: int) -> None:
    """Rows sharing a_scale and a_zp and no weight zero points (the tile's fast path for layers
    without QDQ stages: whole blocks of columns, the short last token panel and the column tail
    through the general loop): the dense kernel's bits."""
    run_int8(spmm, spmm.size("tt+7", "int8"), spmm.size("2*lanes+3", "int8"), 200, pattern=pattern,
             w_zp=False, bias=bias, act=act, nthreads=2, seed=21, shared_rows=True)  # fmt: skip


@pytest.mark.parametrize("M", ["tt", "4*tt+5"])  # tt: one panel, whole on 1 thread, not on 2
@pytest.mark.parametrize("pattern", PATTERNS)
def test_int8_threads_match_one_thread(spmm: Spmm, pattern: str, M: str) -> None:
    shape = (spmm.size(M, "int8"), spmm.size("2*nc+5", "int8"), 768)
    kw = dict(pattern=pattern, bias=True, residual="separate", act=ACT_GELU_TANH, seed=16)
    one = run_int8(spmm, *shape, nthreads=1, **kw)
    two = run_int8(spmm, *shape, nthreads=2, **kw)
    assert np.array_equal(one, two)


def test_largest_shapes(spmm: Spmm) -> None:
    """K and N at 4096 (the largest the compiler emits), both kernels, 2 threads."""
    run_f32(spmm, 5, 4096, 4096, sparsity=0.95, bias=True, nthreads=2, seed=31)
    run_int8(spmm, 5, 4096, 4096, sparsity=0.9, bias=True, nthreads=2, seed=32)


# ---- packing, scratch, cost model (no CPU requirement) ----------------------------------------


def test_f32_chunk_layout() -> None:
    """A tiny W by hand: chunks of 4 per (column, k block), padded at the run's largest k,
    round robin over the columns inside a block, blocks in order; and the blob's header."""
    W = np.zeros((6, 3), np.float32)
    W[[0, 1, 3, 4, 5], 0] = [1, 2, 3, 5, 6]
    W[3, 1] = 4  # column 2: empty
    ptr, col, ks, ws = f32_chunks(W, nc=2, kb=4, cw=4)  # tiles {0, 1}, {2}; blocks k 0-3, 4-5
    assert ptr.tolist() == [0, 3, 3]
    assert col.tolist() == [0, 1, 0]
    assert ks.tolist() == [[0, 1, 3, 3], [3, 3, 3, 3], [4, 5, 5, 5]]
    assert ws.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 0, 0]]
    blob = pack_f32_sparse(W, "avx512")
    hdr = blob[:64].view("<u4")
    assert hdr[0] == 0x50535153 and hdr[1] == 2 and hdr[2] == 5 and hdr[3] == 6 and hdr[4] == 3
    # one tile of 64 columns, one block of f32_kb = 256 rows, chunks of f32_cw = 8: column 0's
    # 5 nonzeros and column 1's one in a chunk each
    assert hdr[5] == 64 and hdr[6] == 1 and hdr[7] == 8 and hdr[8] == 2 and hdr[9] == 256
    assert all(int(o) % 64 == 0 for o in hdr[10:14]) and blob.size % 64 == 0
    # chunks of 8: the same runs, one chunk each, padded at the run's largest k
    ptr, col, ks, ws = f32_chunks(W, nc=2, kb=4, cw=8)
    assert ptr.tolist() == [0, 3, 3] and col.tolist() == [0, 1, 0]
    assert ks.tolist() == [[0, 1, 3] + [3] * 5, [3] * 8, [4, 5] + [5] * 6]
    assert ws.tolist() == [[1, 2, 3] + [0] * 5, [4] + [0] * 7, [5, 6] + [0] * 6]


@pytest.mark.parametrize("cw", [4, 8])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_f32_chunks_hold_every_nonzero_in_order(pattern: str, cw: int) -> None:
    """Random W: the chunks rebuild W exactly; a tile's chunks go block by block; inside a block
    a column's chunks ascend in k and no two consecutive chunks of a block share a column unless
    it is the block's only column with chunks left (round robin)."""
    rng = np.random.default_rng(7)
    K, N, nc, kb = 300, 130, 64, 128
    W = rng.standard_normal((K, N)).astype(np.float32)
    W[~sparsity_mask(K, N, 0.8, pattern, rng)] = 0.0
    ptr, col, ks, ws = f32_chunks(W, nc, kb, cw)
    assert ks.shape[1] == ws.shape[1] == cw
    R = np.zeros((K, N), np.float64)
    for t in range(ptr.size - 1):
        last_k: dict[int, int] = {}
        prev = (-1, -1)
        for q in range(int(ptr[t]), int(ptr[t + 1])):
            n, k = t * nc + int(col[q]), ks[q].astype(int)
            blk = int(k.max()) // kb
            assert (k // kb == blk).all() and blk >= prev[0]
            np.add.at(R[:, n], k, ws[q])
            live = k[ws[q] != 0]
            assert live.size and live.min() > last_k.get(n, -1)
            last_k[n] = int(live.max())
            prev = (blk, n)
    assert np.array_equal(R, W.astype(np.float64))
    # round robin: inside a block, the first chunk of every column with any comes before any
    # column's second chunk
    b0 = [q for q in range(int(ptr[0]), int(ptr[1])) if ks[q].max() < kb]
    firsts = len({int(col[q]) for q in b0})
    assert len({int(col[q]) for q in b0[:firsts]}) == firsts


def test_compact_groups_layout() -> None:
    W = np.zeros((9, 2), np.int8)
    W[[0, 2, 3, 5, 8], 0] = [1, 2, 3, 4, 5]  # column 0: 5 nonzeros -> 2 groups; column 1: none
    blob = pack_s8_sparse(W, "avx512_vnni", "compact")
    hdr = blob[:64].view("<u4")
    assert hdr[2] == 4 and hdr[8] == 2
    off_ptr, off_idx, off_val = (int(x) for x in hdr[10:13])
    assert list(blob[off_ptr : off_ptr + 12].view("<u4")) == [0, 2, 2]
    assert list(blob[off_idx : off_idx + 16].view("<u2")) == [0, 2, 3, 5, 8, 8, 8, 8]
    assert list(blob[off_val : off_val + 8].view(np.int8)) == [1, 2, 3, 4, 5, 0, 0, 0]
    with pytest.raises(ValueError, match="compact"):
        pack_s8_sparse(W, "avx_vnni", "compact")


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="65535"):
        pack_f32_sparse(np.zeros((65536, 1), np.float32), "avx2")
    with pytest.raises(ValueError, match="float32"):
        pack_f32_sparse(np.zeros((4, 4), np.float64), "avx2")
    with pytest.raises(ValueError, match="int8"):
        pack_s8_sparse(np.zeros((4, 4), np.float32), "avx2")
    with pytest.raises(ValueError, match="isa"):
        pack_s8_sparse(np.zeros((4, 4), np.int8), "avx512")


@pytest.mark.parametrize("int8_isa", ["avx512_vnni", "avx_vnni", "avx2"])
def test_pack_blob_layout(int8_isa: str) -> None:
    """Header fields, 64-byte aligned sections, and the entries of a tiny W read back."""
    W = np.zeros((6, 3), np.int8)
    W[1, 0], W[5, 0], W[4, 2] = -128, 127, 3  # column 0: quads 0 and 1; column 1 empty
    blob = pack_s8_sparse(W, int8_isa, "quads")
    hdr = blob[:64].view("<u4")
    assert hdr[0] == 0x50535153 and hdr[3] == 6 and hdr[4] == 3 and hdr[8] == 3
    off_ptr, off_idx, off_val = (int(x) for x in hdr[10:13])
    assert off_ptr % 64 == off_idx % 64 == off_val % 64 == 0 and blob.size % 64 == 0
    assert list(blob[off_ptr : off_ptr + 16].view("<u4")) == [0, 2, 2, 3]
    assert list(blob[off_idx : off_idx + 6].view("<u2")) == [0, 1, 1]
    words = blob[off_val:].view("<i4")
    if int8_isa == "avx2":
        pairs = words[:6].view("<i2").reshape(3, 4)  # (w0, w2, w1, w3) per quad
        assert pairs[0].tolist() == [0, 0, -128, 0] and pairs[1].tolist() == [0, 0, 127, 0]
    else:
        quads = words[:3].view(np.int8).reshape(3, 4)
        assert quads[0].tolist() == [0, -128, 0, 0] and quads[2].tolist() == [3, 0, 0, 0]


def test_scratch_bound_holds_for_batches() -> None:
    """Per-example scratch times B covers a call with M = B * rows."""
    for isa, kind in [
        ("avx512", "f32"),
        ("avx2", "f32"),
        ("avx512_vnni", "int8"),
        ("avx2", "int8"),
    ]:
        for rows in (1, 16, 17, 64, 128, 130, 384):
            for B in (1, 2, 3, 64):
                need = spmm_scratch_bytes(B * rows, 768, 768, kind, isa)
                assert B * spmm_scratch_bytes(rows, 768, 768, kind, isa) >= need


def test_stats_and_gain() -> None:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((768, 768)).astype(np.float32)
    dense = sparse_stats(W, "f32")
    assert dense["density"] == 1.0 and dense["quad_fraction"] == 1.0
    W[rng.random(W.shape) < 0.9] = 0
    stats = sparse_stats(W, "f32")
    assert 0.08 < stats["density"] < 0.12 and 0.3 < stats["quad_fraction"] < 0.4
    assert sparse_gain("f32", "avx2", np.ones((768, 768), np.float32), 128) < 1.1
    assert sparse_gain("f32", "avx512", W, 2048) > 1.1
    assert sparse_gain("f32", "avx512", np.zeros((768, 768), np.float32), 128) > 1.1
    # int8: the packer's layout follows the same costs (compact for unstructured on VNNI zmm)
    Wq = np.where(W != 0, 3, 0).astype(np.int8)
    assert s8_sparse_layout(Wq, "avx512_vnni") == "compact"
    assert s8_sparse_layout(np.repeat(Wq[::4], 4, axis=0), "avx512_vnni") == "quads"
    assert s8_sparse_layout(Wq, "avx_vnni") == "quads"
    assert sparse_gain("int8", "avx512_vnni", Wq, 128) > 1.1
    # the avx512amx target: dense on AMX tiles, which beat the VNNI sparse kernels at 90%
    # unstructured (measured 0.60x-0.74x), not an all-zero layer; it has no sparse kernel
    assert sparse_gain("int8", "avx512_amx", Wq, 128) < 1.1
    assert sparse_gain("int8", "avx512_amx", np.zeros((768, 768), np.int8), 128) > 1.1
    with pytest.raises(ValueError, match="unknown"):
        pack_s8_sparse(Wq, "avx512_amx")


@pytest.mark.parametrize("variant", SPARSE_VARIANTS, ids=lambda v: v.name)
def test_header_compiles_cleanly(variant: KernelVariant, tmp_path) -> None:
    """-Wall -Wextra -Werror -std=gnu11, after the dense headers of its target, as the model C."""
    from sqc.compiler.codegen.kernels import f32_gemm_variant, int8_gemm_variant

    parts = [
        f32_gemm_variant(variant.knobs["isa"]),
        int8_gemm_variant(variant.knobs["int8_isa"]),
        variant,
    ]
    header = tmp_path / "kernels.h"
    header.write_text("".join(render_kernel(v.template, **v.knobs) for v in parts))
    source = tmp_path / "use.c"
    source.write_text(
        '#include "kernels.h"\n'
        "void use_f32(int M, const float *A, const void *W, float *C, void *s, int nt)\n"
        "{\n    sqc_f32_spmm(M, 768, 768, A, 768, W, NULL, C, C, 768, 1, s, nt);\n}\n"
        "void use_s8(int M, const uint8_t *A, const void *W, const float *as, float *C, void *s)\n"
        "{\n    sqc_u8s8_spmm(M, 768, 768, A, 768, W, as, NULL, NULL, NULL, NULL, as, NULL, C,\n"
        "                  C, 768, 0, NULL, NULL, NULL, s, 2);\n}\n"
        "void *keep[] = {(void *)sqc_f32_gemm, (void *)sqc_u8s8_gemm,\n"
        "                (void *)sqc_quantize_rows_u8, (void *)sqc_dynamic_qparams_u8,\n"
        "                (void *)sqc_range_rows_f32, (void *)sqc_quantize_examples_u8,\n"
        "                (void *)sqc_f32_spmm_ffn};\n"
        "#ifdef SQC_HAVE_U8S8_SPMM_FFN\n"
        "void *keep_ffn = (void *)sqc_u8s8_spmm_ffn;\n"
        "#endif\n"
    )
    flags = ["-O3", "-fopenmp", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    result = subprocess.run(
        ["gcc", *flags, *harness.ISA_CFLAGS[variant.isa], "-c", str(source), "-o",
         str(tmp_path / "use.o")],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
