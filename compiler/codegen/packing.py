"""Weight packing for sqc's kernels, and the knob table each packed layout depends on.

The packed layout and the kernel that reads it are two halves of one contract: the knobs that
shape the layout (``nr``) live here, next to the function that writes it, and the template
(``templates/kernels/f32_gemm.h.j2``) receives them from :func:`f32_gemm_knobs`.
"""

from __future__ import annotations

import numpy as np

# f32 GEMM knobs per ISA (the one table). Knob meanings are in the template's header comment.
#
# Measured with benchmarks/gemm_peak.py on the project machine (AMD EPYC, 2 cores; the KVM guest
# exposes AVX2 + FMA but NOT AVX-512: CPUID has no avx512f and a zmm instruction raises SIGILL,
# so only the avx2 row could be timed). Peak of a tight FMA loop: 102 GFLOP/s on 1 thread,
# 204 GFLOP/s on 2 threads (2 x 256-bit FMA per cycle at about 3.2 GHz).
# RESULTS_PLACEHOLDER
_F32_GEMM_KNOBS: dict[str, dict[str, int]] = {
    # 16 ymm registers: 6x16 = 12 accumulators + 2 weight vectors + 1 broadcast.
    "avx2": {"mr": 6, "nr": 16, "kc": 256, "mc": 144, "nc": 192},
    # 32 zmm registers: 8x32 = 16 accumulators + 2 weight vectors + 1 broadcast (unmeasured:
    # no AVX-512 machine was available; Zen 4 runs zmm as 2 x 256-bit, same FLOP/cycle as avx2).
    "avx512": {"mr": 8, "nr": 32, "kc": 256, "mc": 144, "nc": 192},
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
