"""Kernel tests for templates/kernels/int8_gemm.h.j2: sqc_u8s8_gemm against an int64 numpy
reference, sqc_quantize_rows_u8 / sqc_dynamic_qparams_u8 against onnxruntime.

Sizes are written in terms of each variant's knobs (mr, nr, mc, nc) so every variant is swept below,
at and above its own tiles and k groups (quads for VNNI, pairs for avx2, K padded to 4). Operands
cover the full u8 / s8 ranges, and the all-255 x all(-128) case that saturates vpmaddubsw.
Buffers carry guards: C's columns past N and the row past M must stay NaN, and the bytes of each
Aq row past K hold random garbage (the contract lets them: the packed weights are zero there).

Each variant runs natively or skips (no emulation of VNNI).
"""

from __future__ import annotations

import ctypes
import math
import mmap
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sqc.compiler.codegen.kernels import (
    INT8_GEMM_TEMPLATE,
    KERNEL_VARIANTS,
    KernelVariant,
    int8_gemm_variant,
    render_kernel,
)
from sqc.compiler.codegen.packing import (
    int8_gemm_knobs,
    int8_gemm_lda,
    int8_gemm_packed_shape,
    pack_s8_gemm_weights,
    s8_gemm_col_sums,
)
from tests.kernels import harness

# Tolerances, one row per check, with the reason.
TOLERANCES = {
    # No bias, no residual, no activation: C == float32(acc') * (float32 a_scale * w_scale), bit
    # for bit (the contract QLinearMatMul requantization relies on). 0 ulp.
    "plain_ulp": 0,
    # Bias / residual: an fma or a different order of the adds; |C - ref| <= this * eps32 * (sum of
    # the magnitudes of the terms). 4: three roundings at most, one spare.
    "epilogue_eps_per_term": 4,
    # GELU epilogue, as test_f32_gemm: the rational erf / tanh approximations err by <= 3e-7
    # absolute, scaled by |x| / 2 in GELU; plus the pre-activation error above times gelu' <= 1.13.
    "gelu_f32_atol": 4e-7,
}

ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH = 0, 1, 2
INT8_GEMM_VARIANTS = [v for v in KERNEL_VARIANTS if v.template == INT8_GEMM_TEMPLATE]
EPS32 = float(np.finfo(np.float32).eps)


@dataclass
class Gemm:
    variant: KernelVariant
    module: ModuleType

    @property
    def knobs(self) -> dict:
        return self.variant.knobs

    def size(self, expr: str) -> int:
        """Evaluate a size written with the knobs, e.g. '2*mr+3'."""
        return int(eval(expr, {"__builtins__": {}}, dict(self.knobs)))


@pytest.fixture(scope="session", params=INT8_GEMM_VARIANTS, ids=lambda v: v.name)
def gemm(request, tmp_path_factory) -> Gemm:
    variant = request.param
    if not harness.cpu_supports(variant.isa):
        missing = sorted(harness.ISA_CPU_FLAGS[variant.isa] - harness.cpu_flags())
        pytest.skip(f"{variant.name}: CPU lacks {missing} (no emulation for int8 GEMMs)")
    build_dir = tmp_path_factory.mktemp(variant.name)
    return Gemm(variant, harness.build_int8_gemm(variant, build_dir))


def gelu_erf_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACT_REF = {ACT_NONE: lambda x: x, ACT_GELU_ERF: gelu_erf_ref, ACT_GELU_TANH: gelu_tanh_ref}


def ptr(ffi, array: np.ndarray | None, ctype: str):
    return ffi.NULL if array is None else ffi.cast(ctype, array.ctypes.data)


def run_gemm(
    gemm: Gemm,
    M: int,
    N: int,
    K: int,
    *,
    w_zp: bool = True,
    bias: bool = False,
    residual: str = "none",  # "none" | "separate" | "inplace" (residual is C itself)
    act: int = ACT_NONE,
    nthreads: int = 1,
    data: str = "random",  # "random" full range | "extreme": A all 255, W all -128
    ldq_pad: int = 5,
    ldc_pad: int = 3,
    seed: int = 0,
    row_groups: int = 0,  # > 0: a_zp and a_scale constant over runs of this many rows
) -> np.ndarray:
    """Run sqc_u8s8_gemm on random data, check it against the int64 reference, return C[:M, :N]."""
    rng = np.random.default_rng(seed)
    ffi, lib = gemm.module.ffi, gemm.module.lib
    isa = gemm.variant.isa
    ldq = int8_gemm_lda(K, isa) + ldq_pad
    ldc = N + ldc_pad
    # garbage past K in every row: the kernel must not let it count
    Aq = rng.integers(0, 256, (M + 1, ldq), dtype=np.uint8)
    if data == "extreme":
        Aq[:M, :K] = 255
        W = np.full((K, N), -128, dtype=np.int8)
        a_zp = np.zeros(M, dtype=np.int32)
        wzp = np.zeros(N, dtype=np.int32) if w_zp else None
    else:
        W = rng.integers(-128, 128, (K, N), dtype=np.int8)
        a_zp = rng.integers(0, 256, M, dtype=np.int32)
        wzp = rng.integers(-128, 128, N, dtype=np.int32) if w_zp else None
    A = Aq[:M, :K].astype(np.int64)
    rowsum = A.sum(axis=1).astype(np.int32)
    colsum = s8_gemm_col_sums(W).astype(np.int64)
    col_comp = (K * (wzp if w_zp else 0) - colsum).astype(np.int32)
    a_scale = (rng.uniform(0.5, 1.5, M) * 0.02).astype(np.float32)
    if row_groups:  # one zero point and scale per example of row_groups rows (static or dynamic)
        a_zp = np.repeat(a_zp[::row_groups], row_groups)[:M]
        a_scale = np.repeat(a_scale[::row_groups], row_groups)[:M]
    w_scale = (rng.uniform(0.5, 1.5, N) * 1e-3 / math.sqrt(max(K, 1))).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    packed = pack_s8_gemm_weights(W, isa)
    assert packed.shape == int8_gemm_packed_shape(K, N, isa)

    acc = A @ W.astype(np.int64)
    acc += a_zp.astype(np.int64)[:, None] * col_comp.astype(np.int64)[None, :]
    if w_zp:
        acc -= wzp.astype(np.int64)[None, :] * rowsum.astype(np.int64)[:, None]
    assert np.abs(acc).max(initial=0) < 2**31, "test data overflows the int32 contract"
    scale = a_scale[:, None] * w_scale[None, :]  # float32 product, as the contract
    plain = acc.astype(np.float32) * scale  # float32: the exact contract when no bias / residual

    pre = plain.astype(np.float64)
    magnitude = np.abs(pre)
    pre, magnitude, C, R = harness.add_epilogue(rng, pre, magnitude, b, residual, M, N, ldc)

    lib.sqc_test_u8s8_gemm(
        M,
        N,
        K,
        ptr(ffi, Aq, "uint8_t *"),
        ldq,
        ptr(ffi, packed, "int8_t *"),
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
        nthreads,
    )
    out = C[:M, :N]
    where = f"M={M} N={N} K={K}"
    assert np.isnan(C[:, N:]).all(), f"{where}: wrote past column N"
    assert np.isnan(C[M:, :]).all(), f"{where}: wrote past row M"
    if M == 0:
        return out
    if not bias and residual == "none" and act == ACT_NONE:
        bad = out != plain
        assert not bad.any(), (
            f"{where}: {bad.sum()} outputs differ from float32(acc') * scale, first at "
            f"{np.argwhere(bad)[0]}: {out[bad][0]!r} vs {plain[bad][0]!r}"
        )
        return out
    err_bound = TOLERANCES["epilogue_eps_per_term"] * EPS32 * magnitude
    if act == ACT_NONE:
        err = np.abs(out - pre)
        assert (err <= err_bound).all(), f"{where}: err {(err - err_bound).max():.3g} over bound"
    else:
        ref = ACT_REF[act](pre)
        err = np.abs(out - ref)
        bound = TOLERANCES["gelu_f32_atol"] * (1.0 + np.abs(pre)) + 1.13 * err_bound
        assert (err <= bound).all(), f"{where}: GELU err {(err - bound).max():.3g} over bound"
    return out


M_MID, N_MID, K_MID = "2*mr+3", "2*nr+5", "67"


@pytest.mark.parametrize(
    "M", ["0", "1", "2", "mr-1", "mr", "mr+1", "2*mr+3", "mc-1", "mc", "mc+mr+1", "2*mc+1"]
)
def test_m_sweep(gemm: Gemm, M: str) -> None:
    run_gemm(gemm, gemm.size(M), gemm.size(N_MID), gemm.size(K_MID), seed=1)


@pytest.mark.parametrize(
    "N", ["1", "3", "7", "nr-1", "nr", "nr+1", "2*nr+5", "nc-1", "nc", "nc+1", "2*nc+nr+3"]
)
def test_n_sweep(gemm: Gemm, N: str) -> None:
    run_gemm(gemm, gemm.size(M_MID), gemm.size(N), gemm.size(K_MID), seed=2)


@pytest.mark.parametrize(
    "K", ["0", "1", "2", "3", "4", "5", "7", "8", "9", "15", "63", "64", "65", "511", "768", "1027"]
)
def test_k_sweep(gemm: Gemm, K: str) -> None:
    run_gemm(gemm, gemm.size(M_MID), gemm.size(N_MID), gemm.size(K), seed=3)


@pytest.mark.parametrize("K", ["1", "3", "4", "5", "67", "516", "3072"])
@pytest.mark.parametrize("w_zp", [False, True], ids=["no_wzp", "wzp"])
def test_extreme_values(gemm: Gemm, K: str, w_zp: bool) -> None:
    """All 255 x all -128: every product is -32640, 4 or 2 of them per group; vpmaddubsw would
    saturate the pair sums at -32768. K = 3072 (bert-base FFN): acc = -1.0e8, exact in int32."""
    run_gemm(gemm, gemm.size("mr+1"), gemm.size("nr+3"), gemm.size(K), w_zp=w_zp, data="extreme")


@pytest.mark.parametrize(
    "act", [ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH], ids=["none", "erf", "tanh"]
)
@pytest.mark.parametrize("residual", ["none", "separate", "inplace"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_epilogue(gemm: Gemm, bias: bool, residual: str, act: int) -> None:
    run_gemm(
        gemm,
        gemm.size("mr+1"),
        gemm.size(N_MID),
        gemm.size("131"),
        bias=bias,
        residual=residual,
        act=act,
        nthreads=2,
        seed=4,
    )


@pytest.mark.parametrize("w_zp", [False, True], ids=["no_wzp", "wzp"])
def test_weight_zero_point(gemm: Gemm, w_zp: bool) -> None:
    run_gemm(gemm, 37, gemm.size("nr+3"), 45, w_zp=w_zp, bias=True, seed=5)


@pytest.mark.parametrize("nthreads", [2, 3])
def test_threads_match_one_thread(gemm: Gemm, nthreads: int) -> None:
    """Results do not depend on the thread count: bit-identical."""
    shape = (gemm.size("mc+mr+1"), gemm.size("nc+nr+1"), 259)
    kwargs = {"residual": "separate", "bias": True, "act": ACT_GELU_ERF, "seed": 6}
    one = run_gemm(gemm, *shape, nthreads=1, **kwargs)
    many = run_gemm(gemm, *shape, nthreads=nthreads, **kwargs)
    np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("seed", range(10))
def test_random_combos(gemm: Gemm, seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    run_gemm(
        gemm,
        int(rng.integers(0, 250)),
        int(rng.integers(1, 600)),
        int(rng.integers(0, 1100)),
        w_zp=bool(rng.integers(2)),
        bias=bool(rng.integers(2)),
        residual=str(rng.choice(["none", "separate", "inplace"])),
        act=int(rng.integers(3)),
        nthreads=int(rng.integers(1, 3)),
        ldq_pad=int(rng.integers(0, 9)),
        ldc_pad=int(rng.integers(0, 9)),
        seed=seed,
    )


@pytest.fixture(scope="module")
def vnni_and_amx(tmp_path_factory) -> tuple[Gemm, Gemm]:
    """The avx512_vnni GEMM and the avx512_amx one (AMX tiles, the same template and packing)."""
    by_isa = {v.isa: v for v in INT8_GEMM_VARIANTS}
    for isa in ("avx512_vnni", "avx512_amx"):
        if not harness.cpu_supports(isa):
            missing = sorted(harness.ISA_CPU_FLAGS[isa] - harness.cpu_flags())
            pytest.skip(f"{isa}: CPU lacks {missing}")
    return tuple(
        Gemm(by_isa[isa], harness.build_int8_gemm(by_isa[isa], tmp_path_factory.mktemp(isa)))
        for isa in ("avx512_vnni", "avx512_amx")
    )


@pytest.mark.parametrize("M", [15, 16, 19, 32, 47, 48, 130])
@pytest.mark.parametrize("K", [63, 64, 67, 768, 1027])
@pytest.mark.parametrize(
    ("bias", "residual", "act"),
    [(False, "none", ACT_NONE), (True, "inplace", ACT_NONE), (False, "separate", ACT_NONE),
     (True, "none", ACT_GELU_ERF), (True, "separate", ACT_GELU_TANH)],
    ids=["plain", "bias_inplace", "residual", "gelu_erf", "gelu_tanh"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("w_zp", "row_groups"), [(True, 0), (False, 0), (False, 20), (False, 10**6)],
    ids=["wzp", "rows_differ", "examples_of_20", "one_zp"],
)  # fmt: skip
def test_amx_equals_vnni_bit_for_bit(vnni_and_amx, M, K, bias, residual, act, w_zp, row_groups):
    """AMX blocks (16 and 32 rows, K tails on vpdpbusd, the epilogue run during the next block's
    tile work) give the VNNI kernel's bits, with every epilogue, at 1 and 2 threads; also where
    a block's rows share a_zp and a_scale (its epilogue then makes their products once)."""
    for nthreads in (1, 2):
        vnni, amx = (
            run_gemm(g, M, 77, K, bias=bias, residual=residual, act=act, nthreads=nthreads,
                     seed=9, w_zp=w_zp, row_groups=row_groups)
            for g in vnni_and_amx
        )  # fmt: skip
        np.testing.assert_array_equal(amx, vnni)


class GuardedBuffers:
    """Arrays that end exactly where an inaccessible page begins: a read or write past the end
    faults (SIGSEGV) instead of passing silently (as test_f32_gemm's, for any dtype)."""

    def __init__(self) -> None:
        self._maps: list[mmap.mmap] = []
        self._libc = ctypes.CDLL(None, use_errno=True)

    def array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        nbytes = count * dtype.itemsize
        page = mmap.PAGESIZE
        data_pages = max(1, -(-nbytes // page))
        region = mmap.mmap(-1, (data_pages + 1) * page)
        self._maps.append(region)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        guard = ctypes.c_void_p(base + data_pages * page)
        if self._libc.mprotect(guard, ctypes.c_size_t(page), 0) != 0:  # PROT_NONE
            pytest.skip(f"mprotect failed: errno {ctypes.get_errno()}")
        offset = data_pages * page - nbytes
        return np.frombuffer(region, dtype, count, offset).reshape(shape)


@pytest.mark.parametrize("residual", ["separate", "inplace"])
def test_no_access_past_buffers(gemm: Gemm, residual: str) -> None:
    """Every operand ends at a guard page, with ldq = int8_gemm_lda(K) and ldc = N (no slack):
    the M, N and K tails must not touch a byte past any operand (masked vector accesses)."""
    ffi, lib = gemm.module.ffi, gemm.module.lib
    isa = gemm.variant.isa
    M, N, K = gemm.size("mr+1"), gemm.size("nr+3"), 67
    ldq = int8_gemm_lda(K, isa)
    rng = np.random.default_rng(8)
    g = GuardedBuffers()
    X = g.array((M, K), np.float32)
    X[:] = rng.standard_normal((M, K))
    scale = g.array((1,), np.float32)
    zp = g.array((1,), np.int32)
    lib.sqc_test_dynamic_qparams_u8(
        M, K, ptr(ffi, X, "float *"), K, ptr(ffi, scale, "float *"), ptr(ffi, zp, "int32_t *")
    )
    a_scale, a_zp = g.array((M,), np.float32), g.array((M,), np.int32)
    a_scale[:], a_zp[:] = scale[0], zp[0]
    Aq, rowsum = g.array((M, ldq), np.uint8), g.array((M,), np.int32)
    lib.sqc_test_quantize_rows_u8(
        M,
        K,
        ptr(ffi, X, "float *"),
        K,
        ptr(ffi, a_scale, "float *"),
        ptr(ffi, a_zp, "int32_t *"),
        ptr(ffi, Aq, "uint8_t *"),
        ldq,
        ptr(ffi, rowsum, "int32_t *"),
        2,
    )
    W = rng.integers(-128, 128, (K, N), dtype=np.int8)
    packed = pack_s8_gemm_weights(W, isa)
    Wp = g.array(packed.shape, np.int8)
    Wp[:] = packed
    w_zp = g.array((N,), np.int32)
    w_zp[:] = rng.integers(-128, 128, N)
    col_comp = g.array((N,), np.int32)
    col_comp[:] = K * w_zp - s8_gemm_col_sums(W)
    w_scale, b = g.array((N,), np.float32), g.array((N,), np.float32)
    w_scale[:] = rng.uniform(1e-4, 2e-4, N)
    b[:] = rng.standard_normal(N)
    C = g.array((M, N), np.float32)
    R = C if residual == "inplace" else g.array((M, N), np.float32)
    R[:] = rng.standard_normal((M, N))
    acc = Aq[:, :K].astype(np.int64) @ W.astype(np.int64)
    acc += a_zp[:, None].astype(np.int64) * col_comp - w_zp.astype(np.int64) * rowsum[:, None]
    pre = (acc.astype(np.float32) * (a_scale[:, None] * w_scale)).astype(np.float64) + b + R
    ref = gelu_tanh_ref(pre)
    lib.sqc_test_u8s8_gemm(
        M,
        N,
        K,
        ptr(ffi, Aq, "uint8_t *"),
        ldq,
        ptr(ffi, Wp, "int8_t *"),
        ptr(ffi, a_scale, "float *"),
        ptr(ffi, a_zp, "int32_t *"),
        ptr(ffi, col_comp, "int32_t *"),
        ptr(ffi, w_zp, "int32_t *"),
        ptr(ffi, rowsum, "int32_t *"),
        ptr(ffi, w_scale, "float *"),
        ptr(ffi, b, "float *"),
        ptr(ffi, R, "float *"),
        ptr(ffi, C, "float *"),
        N,
        ACT_GELU_TANH,
        2,
    )
    err = np.abs(C - ref)
    assert (err <= 1e-5 * (1.0 + np.abs(pre))).all(), f"err {err.max():.3g}"


# ---- Activation quantization against onnxruntime -------------------------------------------


def _ort_session(node: onnx.NodeProto, inputs, outputs) -> ort.InferenceSession:
    graph = helper.make_graph([node], "q", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def ort_quantize() -> ort.InferenceSession:
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    return _ort_session(
        node,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("z", TensorProto.UINT8, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n"])],
    )


@pytest.fixture(scope="module")
def ort_dynamic() -> ort.InferenceSession:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    return _ort_session(
        node,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", "k"])],
        [
            helper.make_tensor_value_info("y", TensorProto.UINT8, ["m", "k"]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("z", TensorProto.UINT8, []),
        ],
    )


def quantize_rows(gemm: Gemm, A: np.ndarray, scale, zp, nthreads: int = 1):
    """sqc_quantize_rows_u8 on A[M, K] (lda = K + 2): (Aq[M, ldq], rowsum[M], ldq)."""
    ffi, lib = gemm.module.ffi, gemm.module.lib
    M, K = A.shape
    lda = K + 2
    padded = np.full((M, lda), np.nan, dtype=np.float32)
    padded[:, :K] = A
    ldq = int8_gemm_lda(K, gemm.variant.isa) + 3
    Aq = np.full((M, ldq), 0xAB, dtype=np.uint8)
    rowsum = np.full(M, -1, dtype=np.int32)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.asarray(zp, dtype=np.int32)
    lib.sqc_test_quantize_rows_u8(
        M,
        K,
        ptr(ffi, padded, "float *"),
        lda,
        ptr(ffi, scale, "float *"),
        ptr(ffi, zp, "int32_t *"),
        ptr(ffi, Aq, "uint8_t *"),
        ldq,
        ptr(ffi, rowsum, "int32_t *"),
        nthreads,
    )
    assert (Aq[:, K:] == 0).all(), "padding past K must be 0"
    assert (rowsum == Aq[:, :K].sum(axis=1, dtype=np.int64)).all(), "rowsum"
    return Aq[:, :K], rowsum


def dynamic_qparams(gemm: Gemm, A: np.ndarray) -> tuple[np.float32, int]:
    ffi, lib = gemm.module.ffi, gemm.module.lib
    M, K = A.shape
    lda = K + 1
    padded = np.full((M, lda), np.nan, dtype=np.float32)  # NaN past K: must not be read
    padded[:, :K] = A
    scale = np.zeros(1, dtype=np.float32)
    zp = np.zeros(1, dtype=np.int32)
    lib.sqc_test_dynamic_qparams_u8(
        M,
        K,
        ptr(ffi, padded, "float *"),
        lda,
        ptr(ffi, scale, "float *"),
        ptr(ffi, zp, "int32_t *"),
    )
    return scale[0], int(zp[0])


def _quantize_cases() -> list[tuple[str, np.ndarray, float, int]]:
    rng = np.random.default_rng(11)
    cases = []
    for K in (1, 7, 8, 15, 16, 17, 33, 64, 100):
        cases.append((f"normal_K{K}", rng.standard_normal(K) * 3, 0.02, 128))
    # exact ties: x / 0.5 = n + 0.5 for every element, at zp 0, 37 and 255
    ties = (np.arange(-140, 140) + 0.5) * 0.5
    for zp in (0, 37, 128, 255):
        cases.append((f"ties_zp{zp}", ties, 0.5, zp))
    # near-ties with an inexact scale (the division's rounding decides)
    cases.append(("near_ties", (np.arange(-300, 300) + 0.5) * np.float32(0.1), 0.1, 100))
    # saturation both ways, huge values, and +-0
    big = np.array([1e3, -1e3, 3e38, -3e38, 255.0, -255.0, 0.0, -0.0, 1e-30] * 3)
    for zp in (0, 200, 255):
        cases.append((f"saturate_zp{zp}", big, 1.0, zp))
    cases.append(("tiny_scale", rng.standard_normal(50), 1e-30, 3))
    # x / scale and x * (1 / scale) round to different integers here: onnxruntime divides
    scale = np.float32(0.0123)
    x = (rng.uniform(-127, 126, 200000).astype(np.float32).round() + np.float32(0.5)) * scale
    split = np.rint(x / scale) != np.rint(x * (np.float32(1) / scale))  # all inside [-128, 127]
    assert split.sum() >= 20
    cases.append(("division_not_reciprocal", x[split][:64], scale, 128))
    # values at and 1-3 ulps around the midpoints of the grid, for scales whose reciprocal is
    # inexact (sqc's avx512 path multiplies by 1 / scale and divides only near midpoints)
    mid = np.arange(-150, 150, dtype=np.float32) + np.float32(0.5)
    for scale in (0.0123, 0.1, 1 / 3, 7.3, 0.0037, 0.0107):
        x = mid * np.float32(scale)
        steps = [np.nextafter(x, np.float32(np.inf) * d) for d in (1, -1)]
        around = [x]
        for _ in range(3):
            around += steps
            steps = [np.nextafter(v, np.float32(np.inf) * d) for v, d in zip(steps, (1, -1))]
        cases.append((f"midpoints_{scale:.4g}", np.concatenate(around), scale, 128))
    return cases


@pytest.mark.parametrize("case", _quantize_cases(), ids=lambda c: c[0])
def test_quantize_rows_matches_onnxruntime(gemm: Gemm, ort_quantize, case) -> None:
    _, x, scale, zp = case
    x = np.asarray(x, dtype=np.float32)
    (y_ort,) = ort_quantize.run(
        None, {"x": x, "s": np.array(scale, np.float32), "z": np.array(zp, np.uint8)}
    )
    # two rows (the second the same data), nthreads 2: rows are independent
    Aq, _ = quantize_rows(gemm, np.stack([x, x]), [scale, scale], [zp, zp], nthreads=2)
    bad = Aq[0] != y_ort
    assert not bad.any(), f"x={x[bad][:4]} sqc {Aq[0][bad][:4]} ort {y_ort[bad][:4]}"
    assert (Aq[1] == y_ort).all()


def _dynamic_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(12)
    cases = [
        ("normal", rng.standard_normal((5, 37)) * 2.5),
        ("wide", rng.standard_normal((3, 768)) * 40),
        ("all_zero", np.zeros((4, 19))),
        ("negative_only", -rng.uniform(0.1, 5.0, (3, 21))),
        ("positive_only", rng.uniform(0.1, 5.0, (3, 21))),
        ("one_element", np.array([[-0.7]])),
        ("one_positive", np.array([[3.0]])),
        # zero point 0 - lo / scale = 10.5 and 11.5 exactly: ties to even (10, 12)
        ("zp_tie_even", np.array([[-10.5, 244.5, 0.0, 17.0]])),
        ("zp_tie_odd", np.array([[-11.5, 243.5, 1.0, -3.0]])),
        ("max_in_tail", np.concatenate([rng.standard_normal((2, 32)), [[0.0] * 31 + [99.0]]])),
    ]
    return cases


@pytest.mark.parametrize("case", _dynamic_cases(), ids=lambda c: c[0])
def test_dynamic_quantize_matches_onnxruntime(gemm: Gemm, ort_dynamic, case) -> None:
    _, x = case
    x = np.asarray(x, dtype=np.float32)
    y_ort, s_ort, z_ort = ort_dynamic.run(None, {"x": x})
    scale, zp = dynamic_qparams(gemm, x)
    assert scale.tobytes() == np.float32(s_ort).tobytes(), f"scale {scale!r} vs ort {s_ort!r}"
    assert zp == int(z_ort), f"zero point {zp} vs ort {int(z_ort)}"
    Aq, _ = quantize_rows(gemm, x, [scale] * x.shape[0], [zp] * x.shape[0])
    np.testing.assert_array_equal(Aq, y_ort)


def test_dynamic_qparams_skip_nan(gemm: Gemm, ort_dynamic) -> None:
    """NaN does not enter the range: the parameters are those of the same values with each NaN
    replaced by 0 (0 is in the range anyway). NaN first, last, in every accumulator's lanes
    and in the scalar tail, next to the extremes."""
    rng = np.random.default_rng(14)
    for K in (200, 768, 77):
        x = (rng.standard_normal((3, K)) * 2).astype(np.float32)
        x[0, 5], x[1, K - 1] = -50.0, 60.0
        for at in (0, 4, 5, 6, 17, 33, 49, 64, K - 2, K - 1):
            x[2, at] = np.nan
        x[0, 6] = np.nan
        y_ort, s_ort, z_ort = ort_dynamic.run(None, {"x": np.nan_to_num(x, nan=0.0)})
        scale, zp = dynamic_qparams(gemm, x)
        assert scale.tobytes() == np.float32(s_ort).tobytes(), (
            f"K={K}: scale {scale!r} vs {s_ort!r}"
        )
        assert zp == int(z_ort), f"K={K}: zero point {zp} vs {int(z_ort)}"


@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_quantize_examples_matches_onnxruntime_per_example(gemm: Gemm, ort_dynamic, nthreads):
    """sqc_quantize_examples_u8 (range, parameters and levels one example at a time) gives each
    example onnxruntime's DynamicQuantizeLinear of that example alone: an all-zero example, one
    with NaN (skipped in the range, as onnxruntime skips it), wide and narrow ones, K with a
    tail; padding past K zero, rowsum the sum of the levels."""
    ffi, lib = gemm.module.ffi, gemm.module.lib
    rng = np.random.default_rng(15)
    B, rows, K = 5, 7, 77
    x = rng.standard_normal((B, rows, K)) * np.array([1, 30, 0.01, 2, 5])[:, None, None]
    x = x.astype(np.float32)
    x[2] = 0.0
    x[3, 1, 4] = np.nan
    # each example's extremes in its first, last and tail positions
    x[0, -1, -1], x[1, 0, 0], x[3, -1, 0], x[4, -1, 70] = 9.0, -200.0, -20.0, 40.0
    lda, ldq = K + 3, int8_gemm_lda(K, gemm.variant.isa) + 4
    A = np.full((B * rows, lda), np.nan, np.float32)  # NaN past K: must not be read
    A[:, :K] = x.reshape(B * rows, K)
    a_scale = np.zeros(B * rows, np.float32)
    a_zp = np.zeros(B * rows, np.int32)
    Aq = np.full((B * rows, ldq), 7, np.uint8)
    rowsum = np.zeros(B * rows, np.int32)
    lib.sqc_test_quantize_examples_u8(
        B, rows, K, ptr(ffi, A, "float *"), lda, ptr(ffi, a_scale, "float *"),
        ptr(ffi, a_zp, "int32_t *"), ptr(ffi, Aq, "uint8_t *"), ldq,
        ptr(ffi, rowsum, "int32_t *"), nthreads,
    )  # fmt: skip
    assert (Aq[:, K:] == 0).all() and (rowsum == Aq.sum(axis=1, dtype=np.int64)).all()
    for b in range(B):
        y, s, z = ort_dynamic.run(None, {"x": np.nan_to_num(x[b], nan=0.0)})
        sl = slice(b * rows, (b + 1) * rows)
        assert (a_scale[sl] == np.float32(s)).all() and (a_zp[sl] == int(z)).all(), b
        got, want = Aq[sl, :K], y.reshape(rows, K)
        ok = ~np.isnan(x[b])  # a NaN's level is the kernel's clamp, not a number onnxruntime saw
        assert (got[ok] == want[ok]).all(), b


def test_quantize_then_gemm_matches_onnxruntime_matmulinteger(gemm: Gemm) -> None:
    """DynamicQuantizeLinear -> MatMulInteger (per-column w zero point) in onnxruntime against
    sqc_dynamic_qparams_u8 -> sqc_quantize_rows_u8 -> sqc_u8s8_gemm with unit scales."""
    rng = np.random.default_rng(13)
    M, K, N = 9, 70, gemm.size("nr+5")
    x = (rng.standard_normal((M, K)) * 1.5).astype(np.float32)
    W = rng.integers(-128, 128, (K, N), dtype=np.int8)
    w_zp = rng.integers(-5, 6, N, dtype=np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
        helper.make_node("MatMulInteger", ["q", "W", "z", "wz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dq_mmi",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [M, N])],
        initializer=[
            onnx.numpy_helper.from_array(W, "W"),
            onnx.numpy_helper.from_array(w_zp, "wz"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y_ort,) = session.run(None, {"x": x})

    scale, zp = dynamic_qparams(gemm, x)
    Aq, rowsum = quantize_rows(gemm, x, [scale] * M, [zp] * M)
    ldq = int8_gemm_lda(K, gemm.variant.isa)
    Aq_buf = np.zeros((M, ldq), dtype=np.uint8)
    Aq_buf[:, :K] = Aq
    wzp32 = w_zp.astype(np.int32)
    col_comp = (K * wzp32 - s8_gemm_col_sums(W)).astype(np.int32)
    a_zp = np.full(M, zp, dtype=np.int32)
    ones_m, ones_n = np.ones(M, dtype=np.float32), np.ones(N, dtype=np.float32)
    C = np.empty((M, N), dtype=np.float32)
    ffi, lib = gemm.module.ffi, gemm.module.lib
    packed = pack_s8_gemm_weights(W, gemm.variant.isa)
    lib.sqc_test_u8s8_gemm(
        M,
        N,
        K,
        ptr(ffi, Aq_buf, "uint8_t *"),
        ldq,
        ptr(ffi, packed, "int8_t *"),
        ptr(ffi, ones_m, "float *"),
        ptr(ffi, a_zp, "int32_t *"),
        ptr(ffi, col_comp, "int32_t *"),
        ptr(ffi, wzp32, "int32_t *"),
        ptr(ffi, rowsum, "int32_t *"),
        ptr(ffi, ones_n, "float *"),
        ffi.NULL,
        ffi.NULL,
        ptr(ffi, C, "float *"),
        N,
        ACT_NONE,
        1,
    )
    assert np.abs(y_ort).max() < 2**24  # so float32 holds the int32 result exactly
    np.testing.assert_array_equal(C.astype(np.int64), y_ort.astype(np.int64))


# ---- Things that need no run of the kernel ---------------------------------------------------


@pytest.mark.parametrize(
    ("isa", "f32_isa"),
    [
        ("avx512_vnni", "avx512"),
        ("avx512_amx", "avx512"),
        ("avx_vnni", "avx2"),
        ("avx_vnni", "avx512"),
        ("avx2", "avx2"),
        ("avx2", "avx512"),
    ],
)
def test_header_compiles_cleanly(isa: str, f32_isa: str, tmp_path) -> None:
    """-Wall -Wextra -Werror -std=c11 after the f32 header of either vector width (the ymm ISAs
    borrow the 16-lane GELU when only the avx512 f32 header is there)."""
    import subprocess

    from sqc.compiler.codegen.kernels import f32_gemm_variant

    f32 = f32_gemm_variant(f32_isa)
    variant = int8_gemm_variant(isa)
    header = tmp_path / "gemm.h"
    header.write_text(
        render_kernel(f32.template, **f32.knobs) + render_kernel(variant.template, **variant.knobs)
    )
    source = tmp_path / "use.c"
    source.write_text(
        '#include "gemm.h"\n'
        "void use(int M, const float *A, uint8_t *Aq, const int8_t *Wp, const float *s,\n"
        "         const int32_t *z, const int32_t *cc, int32_t *rs, float *C, int nt)\n"
        "{\n"
        "    float scale; int32_t zp;\n"
        "    sqc_dynamic_qparams_u8(M, 768, A, 768, &scale, &zp);\n"
        "    sqc_range_rows_f32(M, 768, A, 768, C, C + M, nt);\n"
        "    sqc_quantize_rows_u8(M, 768, A, 768, s, z, Aq, 768, rs, nt);\n"
        "    sqc_quantize_examples_u8(2, M, 768, A, 768, C, rs, Aq, 768, rs, nt);\n"
        "    sqc_u8s8_gemm(M, 768, 768, Aq, 768, Wp, s, z, cc, z, rs, s, s, C, C, 768, 1, NULL,\n"
        "                  NULL, NULL, nt);\n"
        "    sqc_f32_gemm(M, 768, 768, A, 768, s, s, C, C, 768, 1, nt);\n"
        "}\n"
    )
    flags = ["-O3", "-fopenmp", "-Wall", "-Wextra", "-Werror", "-std=c11"]
    isa_flags = list(dict.fromkeys(harness.ISA_CFLAGS[f32_isa] + harness.ISA_CFLAGS[isa]))
    result = subprocess.run(
        ["gcc", *flags, *isa_flags, "-c", str(source), "-o", str(tmp_path / "use.o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_header_without_f32_header_fails_loudly(tmp_path) -> None:
    import subprocess

    variant = int8_gemm_variant("avx2")
    source = tmp_path / "alone.c"
    source.write_text(render_kernel(variant.template, **variant.knobs))
    result = subprocess.run(
        ["gcc", "-std=c11", *harness.ISA_CFLAGS["avx2"], "-c", str(source), "-o", "/dev/null"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "render f32_gemm.h.j2" in result.stderr


def test_kernel_names_state_the_tile() -> None:
    assert [v.isa for v in INT8_GEMM_VARIANTS] == ["avx512_vnni", "avx512_amx", "avx_vnni", "avx2"]
    for variant in INT8_GEMM_VARIANTS:
        k = variant.knobs
        mr = k["amx_mr"] if k["amx"] else k["mr"]
        assert variant.name == f"sqc_u8s8_gemm_{mr}x{k['nr']}__{variant.isa}"
        assert int8_gemm_variant(variant.isa) is variant
        assert f"void {variant.name}(" in render_kernel(variant.template, **k)
    with pytest.raises(ValueError, match="unknown isa"):
        int8_gemm_variant("avx512")


@pytest.mark.parametrize("isa", ["avx512_vnni", "avx512_amx", "avx_vnni", "avx2"])
def test_pack_layout(isa: str) -> None:
    nr = int8_gemm_knobs(isa)["nr"]
    group = 2 if isa == "avx2" else 4
    K, N = 7, 2 * nr + 3
    W = (np.arange(K * N).reshape(K, N) % 251 - 125).astype(np.int8)
    packed = pack_s8_gemm_weights(W, isa)
    Kg = 8 // group
    assert packed.shape == (3, Kg, nr * group) and packed.dtype == np.int8
    assert packed.flags.c_contiguous
    flat = packed.ravel()
    for k in range(K):
        for n in range(N):
            index = ((n // nr) * Kg + k // group) * nr * group + (n % nr) * group + k % group
            assert flat[index] == W[k, n]
    assert flat.size - np.count_nonzero(flat) >= 3 * 8 * nr - K * N  # padding is zero
    assert (packed[2].reshape(Kg, nr, group)[:, 3:, :] == 0).all()


@pytest.mark.parametrize("isa", ["avx512_vnni", "avx512_amx", "avx_vnni", "avx2"])
def test_lda(isa: str) -> None:
    assert [int8_gemm_lda(K, isa) for K in (0, 1, 3, 4, 5, 768, 769)] == [
        4,
        4,
        4,
        4,
        8,
        768,
        772,
    ]


def test_col_sums_and_bad_input() -> None:
    W = np.array([[-128, 127], [-128, 1], [-128, -2]], dtype=np.int8)
    assert s8_gemm_col_sums(W).tolist() == [-384, 126]
    assert s8_gemm_col_sums(W).dtype == np.int32
    with pytest.raises(ValueError, match="int8"):
        pack_s8_gemm_weights(np.ones((2, 2), dtype=np.uint8), "avx2")
    with pytest.raises(ValueError, match="2-D"):
        pack_s8_gemm_weights(np.ones(4, dtype=np.int8), "avx2")
    with pytest.raises(ValueError, match="unknown isa"):
        pack_s8_gemm_weights(np.ones((2, 2), dtype=np.int8), "avx512")
