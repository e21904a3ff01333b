"""Kernel tests for sqc_f32_gemm (templates/kernels/f32_gemm.h.j2) against float64 numpy.

Sizes are written in terms of each variant's knobs (mr, nr, kc) so every variant is swept below, at
and above its own tiles. Each axis is swept with the others at a middle value, then random combos.
Buffers carry NaN guards: A's columns past K (a read past K poisons C), C's columns past N and the
row past M (must stay NaN: nothing written outside C), and C itself before the call (the first K
block must not read C).

avx512 runs natively where the CPU has it, else through SIMDe on AVX2 (harness.py), else skips.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import subprocess
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pytest

from sqc.compiler.codegen.kernels import KERNEL_VARIANTS, KernelVariant, render_kernel
from sqc.compiler.codegen.packing import f32_gemm_knobs, pack_f32_gemm_weights
from tests.kernels import harness

# Tolerances, one row per check, with the reason.
TOLERANCES = {
    # max |C - ref| / max |ref| <= rtol * sqrt(K). fp32 accumulation of K products with random
    # signs errs by about 2^-24 * sqrt(K) relative (observed <= 4e-8 * sqrt(K) on both variants);
    # 1e-6 * sqrt(K) leaves 25x headroom yet is far below a missing or doubled product
    # (about 1 / sqrt(K) relative).
    "f32_gemm_rtol_per_sqrt_k": 1e-6,
    # GELU epilogue, |gelu(x) - ref| <= atol * (1 + |x|): the erf / tanh rational approximations
    # err by <= 3e-7 absolute (measured against libm over [-12, 12]), scaled by x / 2 in GELU,
    # plus fp32 rounding of x.
    "gelu_f32_atol": 4e-7,
    # scalar sqc_gelu_*_f32 vs the vector form: same arithmetic; allow 2 ulp for contraction.
    "gelu_scalar_vs_vector_ulp": 2,
}

ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH = 0, 1, 2

F32_GEMM_VARIANTS = [v for v in KERNEL_VARIANTS if v.template == "kernels/f32_gemm.h.j2"]


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


@pytest.fixture(scope="session", params=F32_GEMM_VARIANTS, ids=lambda v: v.name)
def gemm(request, tmp_path_factory) -> Gemm:
    variant = request.param
    mode, reason = harness.how_to_run(variant.isa)
    if mode == "skip":
        pytest.skip(f"{variant.name}: {reason}")
    build_dir = tmp_path_factory.mktemp(variant.name)
    return Gemm(variant, harness.build_f32_gemm(variant, build_dir, emulate=mode == "emulated"))


def gelu_erf_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACT_REF = {ACT_NONE: lambda x: x, ACT_GELU_ERF: gelu_erf_ref, ACT_GELU_TANH: gelu_tanh_ref}


def ptr(ffi, array: np.ndarray | None):
    return ffi.NULL if array is None else ffi.cast("float *", array.ctypes.data)


def run_gemm(
    gemm: Gemm,
    M: int,
    N: int,
    K: int,
    *,
    bias: bool = True,
    residual: str = "none",  # "none" | "separate" | "inplace" (residual is C itself)
    act: int = ACT_NONE,
    nthreads: int = 1,
    lda_pad: int = 3,
    ldc_pad: int = 5,
    wp_offset: int = 0,  # floats: shifts Wp off its allocation's alignment
    seed: int = 0,
    check: bool = True,
) -> np.ndarray:
    """Run sqc_f32_gemm on random data, check it against float64 numpy, return C[:M, :N]."""
    rng = np.random.default_rng(seed)
    ffi, lib = gemm.module.ffi, gemm.module.lib
    lda, ldc = K + lda_pad, N + ldc_pad
    A = np.full((M + 1, lda), np.nan, dtype=np.float32)
    A[:M, :K] = rng.standard_normal((M, K), dtype=np.float32)
    W = rng.standard_normal((K, N), dtype=np.float32)
    packed = pack_f32_gemm_weights(W, gemm.variant.isa)
    Wp = np.empty(packed.size + wp_offset, dtype=np.float32)[wp_offset:]
    Wp[:] = packed.ravel()
    b = rng.standard_normal(N, dtype=np.float32) if bias else None
    ref = A[:M, :K].astype(np.float64) @ W.astype(np.float64)
    if bias:
        ref += b
    values = None
    if residual != "none":
        values = rng.standard_normal((M, N), dtype=np.float32)
        ref += values
    C, R = harness.output_buffers(M, N, ldc, residual, values)
    ref = ACT_REF[act](ref)

    lib.sqc_test_f32_gemm(
        M,
        N,
        K,
        ptr(ffi, A),
        lda,
        ptr(ffi, Wp),
        ptr(ffi, b),
        ptr(ffi, R),
        ptr(ffi, C),
        ldc,
        act,
        nthreads,
    )
    out = C[:M, :N]
    if check:
        assert np.isnan(C[:, N:]).all(), "wrote past column N"
        assert np.isnan(C[M:, :]).all(), "wrote past row M"
        if M > 0:
            assert np.isfinite(out).all(), "NaN in C: read past K, or read C before writing it"
            scale = max(np.abs(ref).max(), 1e-30)
            err = np.abs(out - ref).max() / scale
            bound = TOLERANCES["f32_gemm_rtol_per_sqrt_k"] * math.sqrt(max(K, 1))
            assert err <= bound, f"M={M} N={N} K={K}: rel err {err:.3g} > {bound:.3g}"
    return out


M_MID, N_MID, K_MID = "2*mr+3", "2*nr+5", "kc+1"


@pytest.mark.parametrize("M", ["0", "1", "2", "mr-1", "mr", "mr+1", "2*mr+3", "100"])
def test_m_sweep(gemm: Gemm, M: str) -> None:
    run_gemm(gemm, gemm.size(M), gemm.size(N_MID), gemm.size(K_MID))


@pytest.mark.parametrize("N", ["1", "7", "nr-1", "nr", "nr+1", "2*nr+5", "384"])
def test_n_sweep(gemm: Gemm, N: str) -> None:
    run_gemm(gemm, gemm.size(M_MID), gemm.size(N), gemm.size(K_MID))


@pytest.mark.parametrize("K", ["0", "1", "3", "16", "kc-1", "kc", "kc+1", "2*kc+7"])
def test_k_sweep(gemm: Gemm, K: str) -> None:
    run_gemm(gemm, gemm.size(M_MID), gemm.size(N_MID), gemm.size(K))


@pytest.mark.parametrize(
    "act", [ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH], ids=["none", "erf", "tanh"]
)
@pytest.mark.parametrize("residual", ["none", "separate", "inplace"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_epilogue(gemm: Gemm, bias: bool, residual: str, act: int) -> None:
    # K over one block, so the epilogue meets partial sums stored by an earlier block.
    run_gemm(
        gemm,
        gemm.size("mr+1"),
        gemm.size(N_MID),
        gemm.size(K_MID),
        bias=bias,
        residual=residual,
        act=act,
        nthreads=2,
    )


@pytest.mark.parametrize("nthreads", [2, 3])
def test_threads_match_one_thread(gemm: Gemm, nthreads: int) -> None:
    """Tiles do not depend on the thread count, so results are bit-identical."""
    shape = (100, 384, gemm.size("kc+1"))
    kwargs = {"residual": "separate", "act": ACT_GELU_ERF, "seed": 3}
    one = run_gemm(gemm, *shape, nthreads=1, **kwargs)
    many = run_gemm(gemm, *shape, nthreads=nthreads, **kwargs)
    np.testing.assert_array_equal(one, many)


def test_unaligned_weights_and_rows(gemm: Gemm) -> None:
    """No alignment is required of Wp, A rows or C rows (odd lda / ldc, Wp off by one float)."""
    run_gemm(gemm, 37, gemm.size("nr+3"), 45, lda_pad=1, ldc_pad=1, wp_offset=1, act=ACT_GELU_TANH)


class GuardedBuffers:
    """float32 arrays that end exactly where an inaccessible page begins: a read or write past
    the end faults (SIGSEGV) instead of passing silently."""

    def __init__(self) -> None:
        self._maps: list[mmap.mmap] = []
        self._libc = ctypes.CDLL(None, use_errno=True)

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        nbytes = int(np.prod(shape)) * 4
        page = mmap.PAGESIZE
        data_pages = -(-nbytes // page)
        region = mmap.mmap(-1, (data_pages + 1) * page)
        self._maps.append(region)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        guard = ctypes.c_void_p(base + data_pages * page)
        if self._libc.mprotect(guard, ctypes.c_size_t(page), 0) != 0:  # PROT_NONE
            pytest.skip(f"mprotect failed: errno {ctypes.get_errno()}")
        offset = data_pages * page - nbytes
        return np.frombuffer(region, np.float32, int(np.prod(shape)), offset).reshape(shape)


@pytest.mark.parametrize("residual", ["separate", "inplace"])
def test_no_access_past_buffers(gemm: Gemm, residual: str) -> None:
    """Every operand ends at a guard page, with lda = K and ldc = N (no slack): the M and N tails
    must not touch a float past the last row or column (masked, not full, vector accesses)."""
    ffi, lib = gemm.module.ffi, gemm.module.lib
    M, N, K = gemm.size("mr+1"), gemm.size("nr+3"), gemm.size("kc+1")
    rng = np.random.default_rng(7)
    guarded = GuardedBuffers()
    A, b, C = guarded.array((M, K)), guarded.array((N,)), guarded.array((M, N))
    A[:] = rng.standard_normal((M, K), dtype=np.float32)
    b[:] = rng.standard_normal(N, dtype=np.float32)
    W = rng.standard_normal((K, N), dtype=np.float32)
    packed = pack_f32_gemm_weights(W, gemm.variant.isa)
    Wp = guarded.array(packed.shape)
    Wp[:] = packed
    R = C if residual == "inplace" else guarded.array((M, N))
    R[:] = rng.standard_normal((M, N), dtype=np.float32)
    ref = gelu_tanh_ref(A.astype(np.float64) @ W + b + R)
    lib.sqc_test_f32_gemm(
        M,
        N,
        K,
        ptr(ffi, A),
        K,
        ptr(ffi, Wp),
        ptr(ffi, b),
        ptr(ffi, R),
        ptr(ffi, C),
        N,
        ACT_GELU_TANH,
        2,
    )
    err = np.abs(C - ref).max() / np.abs(ref).max()
    assert err <= TOLERANCES["f32_gemm_rtol_per_sqrt_k"] * math.sqrt(K)


@pytest.mark.parametrize("seed", range(8))
def test_random_combos(gemm: Gemm, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    M = int(rng.integers(0, 150))
    N = int(rng.integers(1, 400))
    K = int(rng.integers(1, 2 * gemm.knobs["kc"] + 50))
    run_gemm(
        gemm,
        M,
        N,
        K,
        bias=bool(rng.integers(2)),
        residual=str(rng.choice(["none", "separate", "inplace"])),
        act=int(rng.integers(3)),
        nthreads=int(rng.integers(1, 3)),
        lda_pad=int(rng.integers(0, 20)),
        ldc_pad=int(rng.integers(0, 20)),
        seed=seed,
    )


@pytest.mark.parametrize("act", [ACT_GELU_ERF, ACT_GELU_TANH], ids=["erf", "tanh"])
def test_gelu_accuracy(gemm: Gemm, act: int) -> None:
    """C = act(x * 1) over a dense grid of x: the vector GELU against float64, then the scalar
    helper against the vector one."""
    ffi, lib = gemm.module.ffi, gemm.module.lib
    x = np.linspace(-12.0, 12.0, 24001, dtype=np.float32)
    x = np.concatenate([x, np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-7, 30.0, -30.0, 1e4, -1e4])])
    M, N = x.size, gemm.size("nr+1")  # N tail: masked lanes too
    A = np.ascontiguousarray(x[:, None])
    Wp = pack_f32_gemm_weights(np.ones((1, N), dtype=np.float32), gemm.variant.isa)
    C = np.empty((M, N), dtype=np.float32)
    lib.sqc_test_f32_gemm(
        M, N, 1, ptr(ffi, A), 1, ptr(ffi, Wp), ffi.NULL, ffi.NULL, ptr(ffi, C), N, act, 1
    )
    ref = ACT_REF[act](x.astype(np.float64))
    err = np.abs(C - ref[:, None]) / (1.0 + np.abs(x.astype(np.float64)))[:, None]
    worst = int(np.unravel_index(err.argmax(), err.shape)[0])
    assert err.max() <= TOLERANCES["gelu_f32_atol"], f"x={x[worst]!r}: err {err.max():.3g}"

    scalar_fn = lib.sqc_test_gelu_erf_f32 if act == ACT_GELU_ERF else lib.sqc_test_gelu_tanh_f32
    scalar = np.array([scalar_fn(float(v)) for v in x[::7]], dtype=np.float32)
    ulp = np.spacing(np.maximum(np.abs(C[::7, 0]), np.float32(1e-30)))
    diff = np.abs(scalar - C[::7, 0]) / ulp
    assert diff.max() <= TOLERANCES["gelu_scalar_vs_vector_ulp"], f"scalar vs vector {diff.max()}"


# ---- Things that need no run of the kernel ---------------------------------------------------


@pytest.mark.parametrize("variant", F32_GEMM_VARIANTS, ids=lambda v: v.name)
def test_header_compiles_cleanly(variant: KernelVariant, tmp_path) -> None:
    """-Wall -Wextra -Werror -std=c11 with the ISA's flags (compiling needs no AVX-512 CPU)."""
    header = tmp_path / "f32_gemm.h"
    header.write_text(render_kernel(variant.template, **variant.knobs))
    source = tmp_path / "use.c"
    source.write_text(
        '#include "f32_gemm.h"\n'
        "void use(int M, const float *A, const float *Wp, const float *b, float *C, int nt)\n"
        "{\n    sqc_f32_gemm(M, 768, 768, A, 768, Wp, b, C, C, 768, 1, nt);\n}\n"
    )
    flags = ["-O3", "-fopenmp", "-Wall", "-Wextra", "-Werror", "-std=c11"]
    result = subprocess.run(
        [
            "gcc",
            *flags,
            *harness.ISA_CFLAGS[variant.isa],
            "-c",
            str(source),
            "-o",
            str(tmp_path / "use.o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_kernel_names_state_the_tile() -> None:
    for variant in F32_GEMM_VARIANTS:
        k = variant.knobs
        assert variant.name == f"sqc_f32_gemm_{k['mr']}x{k['nr']}__{variant.isa}"
        assert f"void {variant.name}(" in render_kernel(variant.template, **k)


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_pack_layout(isa: str) -> None:
    nr = f32_gemm_knobs(isa)["nr"]
    K, N = 5, 2 * nr + 3
    W = np.arange(K * N, dtype=np.float32).reshape(K, N) + 1
    packed = pack_f32_gemm_weights(W, isa)
    assert packed.shape == (3, K, nr) and packed.dtype == np.float32
    assert packed.flags.c_contiguous
    flat = packed.ravel()
    for k in range(K):
        for n in range(N):
            assert flat[((n // nr) * K + k) * nr + n % nr] == W[k, n]
    assert (packed[2, :, 3:] == 0).all(), "padding columns must be zero"


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="float32"):
        pack_f32_gemm_weights(np.ones((2, 2), dtype=np.float64), "avx2")
    with pytest.raises(ValueError, match="2-D"):
        pack_f32_gemm_weights(np.ones(4, dtype=np.float32), "avx2")
    with pytest.raises(ValueError, match="unknown isa"):
        pack_f32_gemm_weights(np.ones((2, 2), dtype=np.float32), "neon")
