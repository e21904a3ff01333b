"""Weight packing for sqc's kernels, and the knob table each packed layout depends on.

The packed layout and the kernel that reads it are two halves of one contract: the knobs that
shape the layout (``nr``) live here, next to the function that writes it, and the template
(``templates/kernels/f32_gemm.h.j2``) receives them from :func:`f32_gemm_knobs`.
"""

from __future__ import annotations

import numpy as np

# f32 GEMM knobs per ISA (the one table). Knob meanings are in the template's header comment.
#
# Measured with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm_peak.py
# --rounds 3` on the project machine (AMD EPYC, 2 cores, gcc 12). Its KVM guest exposes AVX2 + FMA
# but NOT AVX-512 (no avx512f in CPUID; a zmm instruction raises SIGILL), so only avx2 was timed.
# fp32 FMA peak (12 independent ymm FMA chains): 102.6 GFLOP/s on 1 thread, 205.2 on 2.
#
#     sqc_f32_gemm_6x16__avx2, GFLOP/s (% of peak) [numpy 2.4 / OpenBLAS Haswell kernel]
#     M     N     K    1 thread             2 threads
#     128   768   768  96.1 (94%) [91.6]    191.7 (93%) [178.6]
#     128  3072   768  91.3 (89%) [88.3]    180.1 (88%) [173.9]
#     128   768  3072  89.5 (87%) [88.2]    179.1 (87%) [173.8]
#     2048  768   768  96.9 (94%) [93.4]    192.4 (94%) [185.6]
#     2048 3072   768  92.5 (90%) [94.3]    183.8 (90%) [187.1]
#     2048  768  3072  90.2 (88%) [94.7]    178.9 (87%) [188.5]
#
# Tuning (1 thread, best of 3-4 passes; the machine is shared, so +-3% is noise): kc is the knob
# that matters: kc=256 gave 84-88%, 384 86-92%, 768 88-95%, 1024-3072 no better than 768. A long
# K block amortises each micro-tile's C load / store and loop entry over more k steps; the
# kc x 16 weight slice (48 KiB) and the mc x kc A block (432 KiB) then come from L2, which
# sustains the ~15 B/cycle a 6x16 tile needs. mc in 72..288 and nc in 96..384 were within
# noise; 144 / 192 keep >= 4 tiles for 2 threads at M=128, N=768. A 4x unrolled k loop and the
# other loop order (panels inside micro-tile rows) gave nothing.
_F32_GEMM_KNOBS: dict[str, dict[str, int]] = {
    # 16 ymm registers: 6x16 = 12 accumulators + 2 weight vectors + 1 broadcast A value.
    "avx2": {"mr": 6, "nr": 16, "kc": 768, "mc": 144, "nc": 192},
    # 32 zmm registers: 8x32 = 16 accumulators + 2 weight vectors + 1 broadcast. NOT MEASURED
    # (no AVX-512 machine was available; tests check it through SIMDe). Zen 4 runs zmm as
    # 2 x 256-bit, so its peak FLOP/cycle equals avx2's; kc as avx2's by analogy.
    "avx512": {"mr": 8, "nr": 32, "kc": 768, "mc": 144, "nc": 192},
}

_VECTOR_FLOATS = {"avx512": 16, "avx2": 8}


def f32_gemm_knobs(isa: str) -> dict:
    """The knobs of the f32 GEMM template for ``isa`` ("avx512" or "avx2"), ``isa`` included."""
    if isa not in _F32_GEMM_KNOBS:
        raise ValueError(f"f32 GEMM: unknown isa {isa!r}; known: {sorted(_F32_GEMM_KNOBS)}")
    knobs = dict(_F32_GEMM_KNOBS[isa])
    nr, mr, mc, nc = knobs["nr"], knobs["mr"], knobs["mc"], knobs["nc"]
    if nr % _VECTOR_FLOATS[isa] or mc < mr or nc % nr:
        raise ValueError(f"f32 GEMM: inconsistent knobs for {isa}: {knobs}")
    return {"isa": isa, **knobs}


def f32_gemm_packed_shape(K: int, N: int, isa: str) -> tuple[int, int, int]:
    """Shape (panels, K, nr) of W[K, N] packed for ``isa``: panels = ceil(N / nr)."""
    nr = f32_gemm_knobs(isa)["nr"]
    return (-(-N // nr), K, nr)


def pack_f32_gemm_weights(W: np.ndarray, isa: str) -> np.ndarray:
    """Pack W[K, N] (ONNX MatMul B, float32) into the layout ``sqc_f32_gemm`` for ``isa`` reads.

    Returns a C-contiguous float32 array of shape (ceil(N / nr), K, nr); see
    :func:`pack_f32_panels` for the layout.
    """
    return pack_f32_panels(W, f32_gemm_knobs(isa)["nr"])


def pack_f32_panels(W: np.ndarray, nr: int) -> np.ndarray:
    """W[K, N] float32 as panels of ``nr`` columns: shape (ceil(N / nr), K, nr), C-contiguous.

    Panel p holds columns [p*nr, p*nr + nr) of W as K consecutive rows of nr floats, panels one
    after the other; columns past N are zero. So W[k, n] sits at flat index
    ((n // nr) * K + k) * nr + n % nr, and the packed size is ceil(N / nr) * K * nr floats.
    """
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"f32 weight packing: W must be 2-D [K, N], got shape {W.shape}")
    if W.dtype != np.float32:
        raise ValueError(f"f32 weight packing: W must be float32, got {W.dtype}")
    K, N = W.shape
    panels = -(-N // nr)
    padded = np.zeros((K, panels * nr), dtype=np.float32)
    padded[:, :N] = W
    return np.ascontiguousarray(padded.reshape(K, panels, nr).transpose(1, 0, 2))
