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


# ---- int8 GEMM (u8 activations x s8 weights -> int32, templates/kernels/int8_gemm.h.j2) --------
#
# int8 GEMM knobs per ISA (the one table). Knob meanings are in the template's header comment.
#
# Measured with `python benchmarks/gemm_peak.py --section int8 --rounds 3` on the project machine
# (AMD EPYC Zen 4 under KVM, 2 cores shared with other jobs, gcc 12.2, binutils 2.40). GOP/s counts
# 2*M*N*K; each figure is the best of its passes. The 2-thread figures are from the passes where the
# other tenants left both cores free (their peak probe read 2x the 1-thread one).
# vpdpbusd peak (independent chains: 24 zmm, 12 ymm): zmm 1083-1126 GOP/s on 1 thread, 2128-2162
# on 2; ymm 537-565 on 1, 1067-1086 on 2. So on this Zen 4 a zmm vpdpbusd is worth two ymm ones:
# zmm (avx512_vnni) is 2x faster than ymm (avx_vnni), unlike fp32 FMA.
# AMD EPYC Zen 5 (CPU family 26, KVM, 2 vCPUs; 2026-12-02, `--rounds 2`, same knobs): zmm peak
# 975 GOP/s on 1 thread, ymm 488 (zmm again 2x); the 8x32 kernel 829-934 GOP/s (87-98%) on 1
# thread, 1687-1764 (88-92%) on 2, at the M = 2048 rows and 128 x 768 x 3072; 6x16 avx_vnni
# 434-474 (90-99%) on 1 thread; avx2 116-122.
#
#     GOP/s (% of the peak of the variant's own vector width)
#                  sqc_u8s8_gemm_8x32__avx512_vnni    sqc_u8s8_gemm_6x16__avx_vnni   6x16__avx2
#     M     N     K    1 thread     2 threads          1 thread    2 threads          1 thr  2 thr
#     128   768   768  1011 (93%)   2008 (93%)         505 (90%)   923 (86%)          133    256
#     128  3072   768  1002 (92%)   1996 (92%)         518 (93%)   980 (92%)          133    252
#     128   768  3072  1048 (97%)   2063 (95%)         523 (94%)   990 (93%)          133    -
#     2048  768   768  1011 (93%)   1945 (90%)         509 (91%)   972 (91%)          134    252
#     2048 3072   768   996 (92%)   1804 (83%)         517 (93%)   971 (91%)          136    255
#     2048  768  3072  1033 (95%)   2012 (93%)         544 (97%)   971 (91%)          133    261
#
# (avx2 has no VNNI: vpmaddwd on sign / zero extended operands, about 12% of the zmm VNNI peak and
# 1.3x the avx2 fp32 FMA peak; the exact fallback for CPUs without VNNI. 133 GOP/s fits about one
# ymm vpmaddwd per cycle (12 per 192 MACs; not probed separately). Widening the A rows to u16 once
# per micro-tile, so the k loop broadcasts a pair with a plain load instead of vpbroadcastw +
# vpmovzxbw, gained nothing, so the broadcast stays in the loop; 4x16 was slower, 3x32 the same.)
# Activation quantization (sqc_dynamic_qparams_u8 + sqc_quantize_rows_u8 over the M x K input,
# 1 thread, zmm / ymm): M=128 K=768 0.009 / 0.018 ms, M=2048 K=768 0.16 / 0.29 ms, M=2048 K=3072
# 1.2 / 1.4 ms (memory bound: the fp32 input is read twice): 6% of the 768-wide GEMMs' time, 12%
# of the K=3072 one at 1 thread.
#
# Tuning: the one change that mattered was issuing vpdpbusd through inline asm with the
# accumulator tied ("+v"): through _mm512_dpbusd_epi32 gcc 12 copied each accumulator around every
# vpdpbusd and spilled some to the stack each k step (12x32: 347 -> 926 GOP/s on 1 thread; the
# peak probe likewise read 440 instead of 1080). After that, 8x32, 12x32, 4x64, 6x64 and 8x48 all
# gave 90-95% on 1 thread (within the machine's noise); 14x32 was slower (82-98%, spills). 8x32
# is kept: 8 divides the 16-token buckets (no M tail) and it read best on 2 threads. mc 96 / nc 256
# against 128 / 512 or 64 / 128: no gain with the weights in cache (M=2048 rows lost 5-20%, partly
# noise). In a model the weights come from DRAM (85 MB for bert-base): mc 128 keeps a 128-token
# call to one M block, so each weight is read once, and with the next-panel prefetch a cold
# 128 x 768 x 768 call went 209 -> 174 us (hot: 171 us); M = 2048 is the same with 96 or 128.
# No K block: the int32 sums stay in registers over all of K, a weight panel (K x 32 bytes:
# 24 KiB at K = 768, 96 KiB at 3072) comes from L1 / L2 and the measured rate is flat in K.
# avx_vnni: 6x16 (16 ymm registers, VEX only) against 5x16 and 3x32: 6x16 best.
_INT8_GEMM_KNOBS: dict[str, dict[str, int]] = {
    # 32 zmm: 8 x 32 = 16 int32 accumulators + 2 weight vectors + 1 broadcast A quad. 12x32,
    # 4x64, 6x64 and 8x48 ran as fast on 1 thread (see the notes above); 8 divides the 16-token
    # buckets, so no M tail there.
    "avx512_vnni": {"mr": 8, "nr": 32, "mc": 128, "nc": 256},
    # AMX tiles (TDPBUSD) for 32 x 32 blocks of C, the avx512_vnni micro-kernels (these knobs)
    # for what is left: the same packed panels, the same template rendered with amx on. mc 256:
    # at 4x the VNNI rate the weights' re-reads per M block show; one Xeon core, M = 2048,
    # best of 2 twice: N = 3072 1.92-1.97 -> 2.16 TOP/s, K = 3072 2.94-3.01 -> 3.23, 768 x 768
    # the same (2.43-2.48); nc 512 no better.
    "avx512_amx": {"mr": 8, "nr": 32, "mc": 256, "nc": 256, "amx_mr": 32},
    # 16 ymm: 6 x 16 = 12 accumulators + 2 weight vectors + 1 broadcast A quad.
    "avx_vnni": {"mr": 6, "nr": 16, "mc": 128, "nc": 256},
    # 16 ymm: 6 x 16 = 12 accumulators + 2 sign-extended weight vectors + 1 zero-extended A pair.
    "avx2": {"mr": 6, "nr": 16, "mc": 128, "nc": 256},
}

# int32 lanes per vector, and the k values one packed group of a column holds (4: one vpdpbusd
# quad; 2: one vpmaddwd pair).
_INT8_VECTOR_INT32 = {"avx512_vnni": 16, "avx512_amx": 16, "avx_vnni": 8, "avx2": 8}
_INT8_K_GROUP = {"avx512_vnni": 4, "avx512_amx": 4, "avx_vnni": 4, "avx2": 2}


def int8_gemm_knobs(isa: str) -> dict:
    """The knobs of the int8 GEMM template for ``isa`` ("avx512_vnni", "avx512_amx", "avx_vnni"
    or "avx2"). "avx512_amx" renders the avx512_vnni template with ``amx`` on: its packing and
    results are avx512_vnni's."""
    if isa not in _INT8_GEMM_KNOBS:
        raise ValueError(f"int8 GEMM: unknown isa {isa!r}; known: {sorted(_INT8_GEMM_KNOBS)}")
    knobs = dict(_INT8_GEMM_KNOBS[isa])
    nr, mr, mc, nc = knobs["nr"], knobs["mr"], knobs["mc"], knobs["nc"]
    if nr % _INT8_VECTOR_INT32[isa] or mc < mr or nc % nr:
        raise ValueError(f"int8 GEMM: inconsistent knobs for {isa}: {knobs}")
    if isa == "avx512_amx":
        return {"isa": "avx512_vnni", "amx": True, **knobs}
    return {"isa": isa, "amx": False, **knobs}


def int8_gemm_lda(K: int, isa: str) -> int:
    """Row stride (bytes) of the quantized activations Aq the int8 GEMM for ``isa`` reads.

    K rounded up to a multiple of 4 (at least 4): the kernel reads A in k-quads of 4 bytes. The
    kernel only needs ldq >= this; bytes of a row past K may hold anything (the packed weights are
    zero there), sqc_quantize_rows_u8 writes them as 0.
    """
    int8_gemm_knobs(isa)  # validates isa
    if K < 0:
        raise ValueError(f"int8 GEMM: K must be >= 0, got {K}")
    return max(4, -(-K // 4) * 4)


def int8_gemm_packed_shape(K: int, N: int, isa: str) -> tuple[int, int, int]:
    """Shape (panels, K groups, nr * group) of W[K, N] packed for ``isa``.

    panels = ceil(N / nr); K is zero padded to a multiple of 4 and split into groups of 4
    (vpdpbusd quads, VNNI isas) or 2 (vpmaddwd pairs, avx2).
    """
    nr, group = int8_gemm_knobs(isa)["nr"], _INT8_K_GROUP[isa]
    return (-(-N // nr), -(-K // 4) * 4 // group, nr * group)


def pack_s8_gemm_weights(W_s8: np.ndarray, isa: str) -> np.ndarray:
    """Pack W[K, N] (int8, ONNX MatMulInteger B) in the layout ``sqc_u8s8_gemm`` for ``isa`` reads.

    Returns a C-contiguous int8 array of :func:`int8_gemm_packed_shape`: panels of nr columns;
    inside a panel, K groups one after the other; inside a group, for each of the nr columns its
    ``group`` consecutive k values (group = 4 for the VNNI isas, 2 for avx2). So W[k, n] sits at
    flat index ((n // nr) * Kg + k // group) * nr * group + (n % nr) * group + k % group, with
    Kg = ceil(K / 4) * 4 / group. Columns past N and k past K are zero (so the kernel may read
    whole groups and whole panels, and A's bytes past K never count).
    """
    W = np.asarray(W_s8)
    if W.ndim != 2:
        raise ValueError(f"int8 weight packing: W must be 2-D [K, N], got shape {W.shape}")
    if W.dtype != np.int8:
        raise ValueError(f"int8 weight packing: W must be int8, got {W.dtype}")
    K, N = W.shape
    panels, groups, width = int8_gemm_packed_shape(K, N, isa)
    nr = int8_gemm_knobs(isa)["nr"]
    group = width // nr
    padded = np.zeros((groups * group, panels * nr), dtype=np.int8)
    padded[:K, :N] = W
    # [g, j, p, c] -> [p, g, c, j]: panel, group, column, k inside the group
    layout = padded.reshape(groups, group, panels, nr).transpose(2, 0, 3, 1)
    return np.ascontiguousarray(layout.reshape(panels, groups, width))


def s8_gemm_col_sums(W_s8: np.ndarray) -> np.ndarray:
    """int32[N]: sum over k of W[k, n] (for col_comp[n] = K * w_zp[n] - colsum[n])."""
    W = np.asarray(W_s8)
    if W.ndim != 2 or W.dtype != np.int8:
        raise ValueError(f"int8 column sums: W must be 2-D int8, got {W.dtype} {W.shape}")
    return W.sum(axis=0, dtype=np.int64).astype(np.int32)
