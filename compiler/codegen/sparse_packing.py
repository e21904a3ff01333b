"""Sparse weight packing for sqc's sparse GEMM kernels (templates/kernels/sparse_gemm.h.j2), their
knob table, scratch sizing, and the cost model that decides sparse vs dense per layer.

The blob layout and the kernel that reads it are two halves of one contract; the layout is
described in the template's header comment and written by :func:`_blob`.
"""

from __future__ import annotations

import numpy as np

# Sparse GEMM knobs per target (fp32 isa, int8 isa): the one table. Knob meanings are in the
# template's header comment. MEASURED TABLE: see the comment above SPARSE_COST.
# whole_panels 1: whole token panels per thread as soon as there is one per thread. Measured on
# the Xeon (bert-base pruned 90%, identical outputs): with 4, 64 x 384 on 2 threads (chunks of
# one example, 6 panels) took the two-phase path, 4.45 s against 3.65 s with 3; with 1 instead
# of 3, 1 x 128 (2 panels) runs 22.2 -> 16.9 ms on 2 threads (27-35% faster also with a busy or
# bursty process on the second CPU), 35.1 -> 32.3 ms on 1 thread (fp32); int8 1o4i QDQ on the
# VNNI kernels +1.6% / +5%; 16 x 128 unchanged.
# 16 ymm: 2 x 4 accumulators (32 tokens) + 4 panel vectors + 2 broadcasts (both avx2 targets;
# f32_kb: as many bytes of panel rows per block as avx512's 256 rows of 64 tokens).
# f32_cw 8 (every target): chunks of 8 nonzeros, half the accumulator loads and stores per FMA
# of 4. Zen 5, bert-base pruned 90% fp32, interleaved, identical outputs, against 4: avx512
# 4.1% faster at 16 x 128 and 2.7% at 1 x 128 (1 thread), the kernel alone 7-10% (768 x 3072,
# M 64); the avx2 target 4.9% and 3.6% (8 broadcasts and 4 accumulator vectors fit 16 ymm).
# 12 and 16 were no faster than 8 on avx512 (+1.0%, -3.9%), and f32_kb 1024 against 256 with
# chunks of 8 read +2.3% at 1 x 128 and -4.4% at 16 x 128 in two runs: noise, so the Xeon's 256
# stays.
_AVX2_KNOBS = {
    "f32_tt": 32,
    "i8_tt": 32,
    "f32_nc": 64,
    "i8_nc": 64,
    "l2_budget": 524288,
    "f32_kb": 512,
    "f32_cw": 8,
    "whole_panels": 1,
}
_SPARSE_GEMM_KNOBS: dict[tuple[str, str], dict[str, int]] = {
    # 32 zmm: 2 x 4 accumulators (64 tokens) + 4 panel vectors + 2 broadcasts.
    ("avx512", "avx512_vnni"): {
        "f32_tt": 64,
        "i8_tt": 64,
        "f32_nc": 64,
        "i8_nc": 64,
        "l2_budget": 524288,
        "f32_kb": 256,
        "f32_cw": 8,
        "whole_panels": 1,
    },
    ("avx2", "avx_vnni"): _AVX2_KNOBS,
    ("avx2", "avx2"): _AVX2_KNOBS,
}

SPARSE_TARGETS: tuple[tuple[str, str], ...] = tuple(_SPARSE_GEMM_KNOBS)

_MAGIC = 0x50535153  # "SQSP" little endian
_VERSION = 2  # 2: fp32 chunks (kind 5) replace kind 1
# kind 1 (fp32, one entry per nonzero, per column) was the fp32 layout before version 2's chunks
_KIND_S8_QUADS, _KIND_S8_PAIRS, _KIND_S8_COMPACT, _KIND_F32_CHUNKS = 2, 3, 4, 5
_ALIGN = 64
_SCRATCH_SLACK = 64


def sparse_gemm_knobs(isa: str, int8_isa: str) -> dict:
    """The knobs of sparse_gemm.h.j2 for the target (fp32 ``isa``, ``int8_isa``), both included."""
    key = (isa, int8_isa)
    if key not in _SPARSE_GEMM_KNOBS:
        raise ValueError(
            f"sparse GEMM: unknown target isa={isa!r} int8_isa={int8_isa!r}; "
            f"known: {sorted(_SPARSE_GEMM_KNOBS)}"
        )
    return {"isa": isa, "int8_isa": int8_isa, **_SPARSE_GEMM_KNOBS[key]}


def _knob(kind: str, isa: str, name: str) -> int:
    """Knob ``name`` (without its f32_ / i8_ prefix) of the fp32 kernel for fp32 ``isa``, or of
    the int8 kernel for int8 ``isa``."""
    for (f_isa, i_isa), knobs in _SPARSE_GEMM_KNOBS.items():
        if kind == "f32" and f_isa == isa:
            return knobs["f32_" + name]
        if kind == "int8" and i_isa == isa:
            return knobs["i8_" + name]
    raise ValueError(f"sparse GEMM: unknown {kind} isa {isa!r}")


def _token_tile(kind: str, isa: str) -> int:
    """Token tile of the fp32 kernel for fp32 ``isa``, or of the int8 kernel for int8 ``isa``."""
    return _knob(kind, isa, "tt")


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _blob(
    kind: int,
    K: int,
    N: int,
    ptr: np.ndarray,
    idx: np.ndarray,
    val: np.ndarray,
    entries: int,
    words: int,
    *,
    G: int = 1,
    extra: int = 0,
    col: np.ndarray | None = None,
) -> np.ndarray:
    """header | ptr uint32[...] | idx uint16[...] | val 32-bit words [| col uint16[...]],
    64-byte aligned.

    ``entries`` entries of ``words`` 32-bit value words each (the idx count per entry is 1, or
    4 for the compact int8 layout and the fp32 chunks). ``G``, ``extra`` (header word 9) and
    ``col`` (its offset in header word 13): the fp32 chunk layout's columns per tile, k rows per
    block and per-chunk column.
    """
    off_ptr = _ALIGN
    off_idx = off_ptr + _align(4 * ptr.size)
    off_val = off_idx + _align(2 * idx.size)
    off_col = off_val + _align(4 * val.size)
    total = off_col + (_align(2 * col.size) if col is not None else 0)
    if total >= 2**32:
        raise ValueError(f"sparse packing: blob of {total} bytes does not fit 32-bit offsets")
    header = np.zeros(16, dtype=np.uint32)
    header[:14] = [
        _MAGIC, _VERSION, kind, K, N, G, ptr.size - 1, words, entries, extra,
        off_ptr, off_idx, off_val, off_col if col is not None else 0,
    ]  # fmt: skip
    blob = np.zeros(total, dtype=np.uint8)
    blob[:64] = header.view(np.uint8)
    blob[off_ptr : off_ptr + 4 * ptr.size] = ptr.astype("<u4").view(np.uint8)
    blob[off_idx : off_idx + 2 * idx.size] = idx.astype("<u2").view(np.uint8)
    blob[off_val : off_val + 4 * val.size] = np.ascontiguousarray(val).view(np.uint8).reshape(-1)
    if col is not None:
        blob[off_col : off_col + 2 * col.size] = col.astype("<u2").view(np.uint8)
    return blob


def _check_weights(W: np.ndarray, dtype: type, what: str) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"{what}: W must be 2-D [K, N], got shape {W.shape}")
    if W.dtype != dtype:
        raise ValueError(f"{what}: W must be {np.dtype(dtype)}, got {W.dtype}")
    K, N = W.shape
    if N < 1:
        raise ValueError(f"{what}: N must be >= 1, got {N}")
    if K > 65535:
        raise ValueError(f"{what}: K = {K} > 65535 does not fit the 16-bit k indices")
    return W


def f32_chunks(W: np.ndarray, nc: int, kb: int, cw: int) -> tuple[np.ndarray, ...]:
    """The fp32 chunk layout of W[K, N]: (ptr uint32[tiles + 1], col uint16[chunks],
    k uint16[chunks, cw], w float32[chunks, cw]).

    Columns go in tiles of ``nc``, k in blocks of ``kb`` rows. A column's nonzeros inside one
    block (ascending k) fill chunks of ``cw``; its last chunk there is padded with weight 0 at the
    run's largest k (a row the kernel reads anyway). Inside a (tile, block) the chunks go round
    robin over the columns (every column's first chunk, then every second one, ...), so
    consecutive chunks add into different accumulators. A tile's chunks are its blocks' chunks in
    block order: chunks [ptr[t], ptr[t + 1]).
    """
    K, N = W.shape
    tiles, blocks = -(-N // nc), max(-(-K // kb), 1)
    n, k = np.nonzero(W.T)  # by n, then ascending k
    tile, j, blk = n // nc, n % nc, k // kb
    run = (tile * blocks + blk) * nc + j  # ascending along the nonzeros (n, then k)
    order = np.lexsort((k, run))
    n, k, run = n[order], k[order], run[order]
    counts = np.bincount(run, minlength=tiles * blocks * nc)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    nchunks = -(-counts // cw)
    # chunks of each run, listed run by run; their sort key puts them round robin per (tile, block)
    chunk_run = np.repeat(np.arange(counts.size), nchunks)
    chunk_first = np.concatenate([[0], np.cumsum(nchunks)[:-1]])
    chunk_rank = np.arange(chunk_run.size) - chunk_first[chunk_run]
    tb, jj = chunk_run // nc, chunk_run % nc
    place = np.empty(chunk_run.size, dtype=np.int64)
    place[np.lexsort((jj, chunk_rank, tb))] = np.arange(chunk_run.size)
    rank = np.arange(n.size) - first[run]
    slot = place[chunk_first[run] + rank // cw] * cw + rank % cw
    ks = np.zeros((chunk_run.size, cw), dtype=np.uint16)
    ws = np.zeros((chunk_run.size, cw), dtype=np.float32)
    has = counts > 0
    last_k = np.zeros(counts.size, dtype=np.int64)
    last_k[has] = k[(first + counts - 1)[has]]
    ks[place] = last_k[chunk_run][:, None]  # padding: weight 0 at the run's largest k
    ks.reshape(-1)[slot] = k
    ws.reshape(-1)[slot] = W[k, n]
    col = np.empty(chunk_run.size, dtype=np.uint16)
    col[place] = jj
    per_tile = np.bincount(tb // blocks, minlength=tiles)  # a tile's chunks are contiguous
    ptr = np.zeros(tiles + 1, dtype=np.uint32)
    ptr[1:] = np.cumsum(per_tile)
    return ptr, col, ks, ws


def pack_f32_sparse(W: np.ndarray, isa: str) -> np.ndarray:
    """W[K, N] float32 as the blob ``sqc_f32_spmm`` for ``isa`` reads (uint8, self-describing).

    The chunk layout of :func:`f32_chunks` with the isa's column tile and k block (knobs f32_nc,
    f32_kb). Any zero pattern works (unstructured, 1o4i, 4o1i, none, all zero); -0.0 counts as
    zero.
    """
    W = _check_weights(W, np.float32, "fp32 sparse packing")
    nc, kb, cw = (_knob("f32", isa, name) for name in ("nc", "kb", "cw"))
    K, N = W.shape
    ptr, col, ks, ws = f32_chunks(W, nc, kb, cw)
    return _blob(
        _KIND_F32_CHUNKS, K, N, ptr, ks.reshape(-1), ws.reshape(-1), ks.shape[0], cw,
        G=nc, extra=kb, col=col,
    )  # fmt: skip


def _s8_quads(W: np.ndarray) -> np.ndarray:
    """W[K, N] int8 zero padded to K quads: int8 [ceil(K/4), N, 4] (quad, column, k in quad)."""
    K, N = W.shape
    kq = -(-K // 4)
    padded = np.zeros((kq * 4, N), dtype=np.int8)
    padded[:K] = W
    return padded.reshape(kq, 4, N).transpose(0, 2, 1)


def _s8_compact_groups(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column, its nonzeros in groups of 4 (ascending k, the last group padded with weight 0
    at the column's last nonzero k): (ptr uint32[N + 1], k uint16[groups, 4], w int8[groups, 4])."""
    K, N = W.shape
    n, k = np.nonzero(W.T)
    counts = np.bincount(n, minlength=N)
    groups = -(-counts // 4)
    ptr = np.zeros(N + 1, dtype=np.uint32)
    ptr[1:] = np.cumsum(groups)
    total = int(ptr[-1])
    ks = np.zeros((total, 4), dtype=np.uint16)
    ws = np.zeros((total, 4), dtype=np.int8)
    # slot of each nonzero: its group start * 4 + rank inside its column
    col_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n.size) - col_start[n]
    slot = ptr[:-1][n].astype(np.int64) * 4 + rank
    # padding slots repeat the column's last k (weight 0)
    last_k = np.zeros(N, dtype=np.int64)
    has = counts > 0
    last_k[has] = k[(col_start + counts - 1)[has]]  # the column's largest nonzero k
    ks.reshape(-1)[:] = np.repeat(last_k, groups * 4)
    ks.reshape(-1)[slot] = k
    ws.reshape(-1)[slot] = W[k, n]
    return ptr, ks, ws


def s8_sparse_layout(W: np.ndarray, int8_isa: str) -> str:
    """The int8 blob layout :func:`pack_s8_sparse` picks: "quads" (non-empty k quads per column;
    1o4i and dense-ish patterns) or "compact" (avx512_vnni only: groups of 4 nonzeros at any k;
    unstructured), by the cost model's per-entry costs."""
    if int8_isa != "avx512_vnni" or _token_tile("int8", int8_isa) != 64:
        return "quads"
    stats = sparse_stats(W, "int8")
    c = SPARSE_COST[("int8", int8_isa)]
    compact = c["compact_entry"] * stats["compact_groups"]
    quads = c["entry"] * stats["nonempty_quads"]
    return "compact" if compact < quads else "quads"


def pack_s8_sparse(W: np.ndarray, int8_isa: str, layout: str | None = None) -> np.ndarray:
    """W[K, N] int8 as the blob ``sqc_u8s8_spmm`` for ``int8_isa`` reads (uint8, self-describing).

    layout "quads": per output column n, its non-empty k quads (k // 4, ascending) with their 4
    weight bytes (zeros inside a quad kept; k past K is zero). VNNI isas: one word per quad, the 4
    s8 bytes (vpdpbusd's s8 operand); avx2: two words, the s16 pairs (w0, w2) and (w1, w3)
    (vpmaddwd). layout "compact" (avx512_vnni only): per column, groups of 4 nonzeros at any k
    (4 uint16 k each) and their 4 s8 weights (one word). None: :func:`s8_sparse_layout` picks.
    """
    _token_tile("int8", int8_isa)  # validates isa
    W = _check_weights(W, np.int8, "int8 sparse packing")
    K, N = W.shape
    layout = layout or s8_sparse_layout(W, int8_isa)
    if layout == "compact":
        if int8_isa != "avx512_vnni" or _token_tile("int8", int8_isa) != 64:
            raise ValueError(
                f"int8 sparse packing: compact layout needs avx512_vnni, not {int8_isa}"
            )
        ptr, ks, ws = _s8_compact_groups(W)
        words = np.ascontiguousarray(ws).view("<i4").reshape(-1)
        return _blob(_KIND_S8_COMPACT, K, N, ptr, ks.reshape(-1), words, ws.shape[0], 1)
    if layout != "quads":
        raise ValueError(f"int8 sparse packing: unknown layout {layout!r}")
    quads = _s8_quads(W)  # [kq, N, 4]
    n, q = np.nonzero(quads.any(axis=2).T)  # by n, then ascending quad
    ptr = np.zeros(N + 1, dtype=np.uint32)
    ptr[1:] = np.cumsum(np.bincount(n, minlength=N))
    w = quads[q, n]  # [entries, 4] int8
    if int8_isa == "avx2":
        # little endian words: w0 | w2 << 16, w1 | w3 << 16
        pairs = np.ascontiguousarray(w[:, [0, 2, 1, 3]].astype("<i2"))
        return _blob(
            _KIND_S8_PAIRS, K, N, ptr, q.astype(np.uint16), pairs.view("<i4").reshape(-1), q.size, 2
        )
    words = np.ascontiguousarray(w).view("<i4").reshape(-1)
    return _blob(_KIND_S8_QUADS, K, N, ptr, q.astype(np.uint16), words, q.size, 1)


def spmm_scratch_bytes(
    rows: int, K: int, N: int, kind: str, isa: str, nthreads_max: int = 64
) -> int:
    """Scratch bytes a sparse GEMM call needs for M <= B * rows, PER EXAMPLE (multiply by B).

    The kernel transposes the activations into token panels of TT tokens: fp32
    ceil(M / TT) * TT * K floats, int8 ceil(M / TT) * TT * ceil(K / 4) quads. Since
    ceil(B rows / TT) <= B ceil(rows / TT), the per-example figure ceil(rows / TT) * TT * ...
    (+ 64 bytes slack) times B bounds the need. Independent of N and of the thread count
    (``nthreads_max`` is accepted for the interface and unused): per-thread buffers are on the
    stack (the fp32 tile's accumulators, f32_nc x TT floats: at most 16 KiB; int8: one lanes x TT
    block, at most 4 KiB).
    """
    if kind not in ("f32", "int8"):
        raise ValueError(f"sparse GEMM scratch: kind must be 'f32' or 'int8', got {kind!r}")
    tt = _token_tile(kind, isa)
    panels = -(-max(rows, 0) // tt)
    words = K if kind == "f32" else -(-K // 4)
    return panels * tt * words * 4 + _SCRATCH_SLACK


# ---- Cost model -----------------------------------------------------------------------------
#
# Measured with `python benchmarks/sparse_gemm_bench.py --rounds 7` (fixed costs: `--sparsity 1.0
# --threads 1`) on the project machine: AMD EPYC Zen 4 under KVM, 2 vCPUs shared with two other
# agents' jobs (AVX-512 F/BW/VL/DQ + VNNI, gcc 12). Each figure is dense time / sparse time of the
# same target's kernels on the same weights, interleaved, best of 7 (> 1: sparse is faster). The
# int8 times are the GEMMs alone (quantization costs both the same). The avx512 rows were taken
# while the other tenants were idle (dense 2-thread = 2x 1-thread); the avx2 rows (1 thread)
# while they were busy, so those scatter more (+-20%). avx512_vnni int8 unstructured rows ran
# the compact layout (the packer's pick there), 1o4i rows the quads layout. Dense reference
# times at M=128, 768 x 768, 1 thread: fp32 0.57 ms (avx512) / 1.2 ms (avx2), int8 0.148 ms
# (avx512_vnni) / 0.30 ms (avx_vnni) / 1.1 ms (avx2).
#
#   sqc_f32_spmm_64t__avx512_u8s8_spmm_64t__avx512_vnni
#     kind pattern      M     K    N   | dense/sparse, sparsity 0.5 .. 0.95 (1 / 2 threads)
#     f32  unstructured  128   768   768 | 0.55/0.54 1.11/1.18 1.79/1.74 3.62/3.21 6.62/5.63
#     f32  unstructured  128   768  3072 | 0.51/0.53 1.09/1.07 1.76/1.72 3.42/3.28 6.01/5.50
#     f32  unstructured  128  3072   768 | 0.67/0.69 1.23/1.22 1.83/1.82 3.38/3.28 6.24/5.93
#     f32  unstructured 2048   768   768 | 0.52/0.55 1.01/1.08 1.63/1.72 3.09/3.22 5.15/5.67
#     f32  unstructured 2048   768  3072 | 0.53/0.56 1.07/1.11 1.68/1.73 2.98/3.18 4.56/5.25
#     f32  unstructured 2048  3072   768 | 0.68/0.71 1.17/1.17 1.62/1.64 2.75/2.70 4.27/4.26
#     f32  1o4i          128   768   768 | 0.48/0.48 0.83/0.81 1.38/1.35 3.04/2.79 6.31/5.10
#     f32  1o4i          128   768  3072 | 0.45/0.47 0.80/0.80 1.35/1.32 2.84/2.76 5.94/5.10
#     f32  1o4i          128  3072   768 | 0.43/0.47 0.79/0.81 1.36/1.35 3.20/3.06 6.45/5.82
#     f32  1o4i         2048   768   768 | 0.46/0.48 0.77/0.83 1.28/1.38 2.65/2.83 5.40/5.31
#     f32  1o4i         2048   768  3072 | 0.47/0.49 0.80/0.85 1.32/1.38 2.67/2.82 4.61/5.00
#     f32  1o4i         2048  3072   768 | 0.48/0.50 0.80/0.83 1.33/1.31 2.73/2.68 4.51/4.54
#     f32  4o1i          128   768   768 | 0.55/0.54 1.17/1.13 2.16/2.09 4.72/4.44 8.24/7.49
#     f32  4o1i          128   768  3072 | 0.51/0.53 1.19/1.16 2.16/2.11 4.46/4.23 7.34/6.76
#     f32  4o1i          128  3072   768 | 0.65/0.66 1.25/1.21 1.86/1.79 3.45/3.32 7.13/6.62
#     f32  4o1i         2048   768   768 | 0.52/0.54 1.08/1.18 1.94/2.13 3.82/4.38 6.09/7.30
#     f32  4o1i         2048   768  3072 | 0.52/0.56 1.15/1.20 2.01/2.14 3.62/4.15 5.81/6.32
#     f32  4o1i         2048  3072   768 | 0.67/0.68 1.17/1.19 1.65/1.66 2.79/2.80 4.61/4.70
#     int8 unstructured  128   768   768 | 0.73/0.72 1.12/1.10 1.56/1.51 2.69/2.60 4.11/3.85
#     int8 unstructured  128   768  3072 | 0.72/0.69 1.08/1.03 1.47/1.37 2.40/2.17 3.39/2.97
#     int8 unstructured  128  3072   768 | 0.55/0.54 0.93/0.90 1.43/1.37 2.71/2.64 4.91/4.62
#     int8 unstructured 2048   768   768 | 0.71/0.73 1.12/1.12 1.55/1.53 2.58/2.56 3.87/3.66
#     int8 unstructured 2048   768  3072 | 0.65/0.69 0.94/0.98 1.20/1.25 1.68/1.77 2.16/2.34
#     int8 unstructured 2048  3072   768 | 0.52/0.53 0.84/0.88 1.25/1.33 2.26/2.39 3.65/4.09
#     int8 1o4i          128   768   768 | 0.99/0.99 1.56/1.56 2.18/2.11 3.43/3.21 5.00/4.53
#     int8 1o4i          128   768  3072 | 0.94/0.92 1.45/1.39 1.95/1.86 2.97/2.68 3.96/3.41
#     int8 1o4i          128  3072   768 | 0.56/0.56 1.13/1.11 1.79/1.77 3.58/3.35 6.42/6.02
#     int8 1o4i         2048   768   768 | 0.97/1.00 1.55/1.58 2.11/2.08 3.42/3.29 4.78/4.43
#     int8 1o4i         2048   768  3072 | 0.87/0.88 1.20/1.23 1.47/1.58 1.98/2.15 2.43/2.54
#     int8 1o4i         2048  3072   768 | 0.54/0.55 1.02/1.07 1.57/1.65 2.87/3.03 4.87/5.18
#   sqc_f32_spmm_32t__avx2_u8s8_spmm_32t__avx_vnni
#     kind pattern      M     K    N   | dense/sparse, sparsity 0.5 .. 0.95 (1 thread)
#     f32  unstructured  128   768   768 |  0.99  1.97  2.86  5.41 10.55
#     f32  unstructured  128   768  3072 |  0.95  2.03  3.02  5.67 10.09
#     f32  unstructured  128  3072   768 |  0.76  1.06  2.60  5.37  9.27
#     f32  unstructured 2048   768   768 |  0.91  1.77  2.48  4.47  7.22
#     f32  unstructured 2048   768  3072 |  1.14  2.10  2.82  4.89  7.41
#     f32  unstructured 2048  3072   768 |  0.86  1.63  2.52  4.30  7.39
#     f32  1o4i          128   768   768 |  0.87  1.77  2.29  5.21  9.22
#     f32  1o4i          128   768  3072 |  0.90  1.75  2.74  5.32  9.92
#     f32  1o4i          128  3072   768 |  0.55  1.17  2.14  5.40  8.40
#     f32  1o4i         2048   768   768 |  0.94  1.64  2.44  4.34  7.67
#     f32  1o4i         2048   768  3072 |  0.86  1.82  2.53  4.80  6.75
#     f32  1o4i         2048  3072   768 |  0.77  1.45  1.72  3.89  6.70
#     f32  4o1i          128   768   768 |  0.84  2.22  2.97  6.75  9.80
#     f32  4o1i          128   768  3072 |  0.98  2.21  3.29  6.10 10.52
#     f32  4o1i          128  3072   768 |  1.04  1.86  3.01  4.89 11.14
#     f32  4o1i         2048   768   768 |  0.95  1.91  2.63  4.80  7.63
#     f32  4o1i         2048   768  3072 |  0.96  1.96  3.03  4.92  7.94
#     f32  4o1i         2048  3072   768 |  1.91  1.79  2.72  7.81  7.37
#     int8 unstructured  128   768   768 |  0.69  0.83  1.02  1.71  2.68
#     int8 unstructured  128   768  3072 |  0.67  0.83  1.03  1.63  2.71
#     int8 unstructured  128  3072   768 |  0.61  0.73  1.01  1.62  2.96
#     int8 unstructured 2048   768   768 |  0.68  0.82  1.04  1.60  2.60
#     int8 unstructured 2048   768  3072 |  0.66  0.72  0.99  1.64  2.12
#     int8 unstructured 2048  3072   768 |  0.44  0.62  0.63  1.61  2.57
#     int8 1o4i          128   768   768 |  1.18  1.87  2.53  3.99  5.56
#     int8 1o4i          128   768  3072 |  1.18  1.83  2.52  3.97  5.30
#     int8 1o4i          128  3072   768 |  0.90  1.59  1.98  5.11  8.94
#     int8 1o4i         2048   768   768 |  1.15  1.81  2.50  3.79  5.15
#     int8 1o4i         2048   768  3072 |  1.11  1.68  2.05  3.88  2.72
#     int8 1o4i         2048  3072   768 |  0.96  4.81  2.63  5.96  6.60
#   sqc_f32_spmm_32t__avx2_u8s8_spmm_32t__avx2
#     kind pattern      M     K    N   | dense/sparse, sparsity 0.5 .. 0.95 (1 thread)
#     f32  unstructured  128   768   768 |  0.92  2.42  1.37  6.29  9.98
#     f32  unstructured  128   768  3072 |  0.94  2.60  2.99  5.49  8.85
#     f32  unstructured  128  3072   768 |  0.80  1.80  2.74  5.70 10.39
#     f32  unstructured 2048   768   768 |  0.81  1.82  2.25  4.07  6.48
#     f32  unstructured 2048   768  3072 |  0.94  1.88  3.25  4.83  7.99
#     f32  unstructured 2048  3072   768 |  0.79  1.77  2.68  4.38  7.15
#     f32  1o4i          128   768   768 |  0.30  1.89  2.68  5.05  9.37
#     f32  1o4i          128   768  3072 |  0.91  1.38  2.63  5.15  8.28
#     f32  1o4i          128  3072   768 |  0.72  1.47  2.28  4.48  5.91
#     f32  1o4i         2048   768   768 |  0.93  1.46  2.28  4.63  9.68
#     f32  1o4i         2048   768  3072 |  0.91  1.81  2.64  4.92  7.88
#     f32  1o4i         2048  3072   768 |  0.83  1.47  2.12  4.53  6.87
#     f32  4o1i          128   768   768 |  1.03  2.11  3.13  5.54  9.85
#     f32  4o1i          128   768  3072 |  1.02  2.16  2.86  7.73  8.91
#     f32  4o1i          128  3072   768 |  1.00  1.86  2.75  5.52 11.85
#     f32  4o1i         2048   768   768 |  0.96  1.75  2.42  4.32  5.50
#     f32  4o1i         2048   768  3072 |  0.96  1.96  3.06  4.89  7.99
#     f32  4o1i         2048  3072   768 |  0.88  1.87  2.50  4.95  6.92
#     int8 unstructured  128   768   768 |  0.93  1.29  2.32  2.26  4.88
#     int8 unstructured  128   768  3072 |  0.86  1.28  1.33  2.82  3.45
#     int8 unstructured  128  3072   768 |  0.98  1.29  1.07  2.77  5.12
#     int8 unstructured 2048   768   768 |  1.02  1.66  1.67  2.28  4.26
#     int8 unstructured 2048   768  3072 |  0.97  1.24  1.77  2.59  4.24
#     int8 unstructured 2048  3072   768 |  1.00  1.21  1.57  2.67  5.17
#     int8 1o4i          128   768   768 |  1.96  3.43  3.18  6.33 13.34
#     int8 1o4i          128   768  3072 |  1.25  5.83  5.50  6.73 13.12
#     int8 1o4i          128  3072   768 |  2.35  3.20  5.00  9.31 29.33
#     int8 1o4i         2048   768   768 |  1.59  2.76  3.89  7.06  8.53
#     int8 1o4i         2048   768  3072 |  1.74  2.86  3.99  5.73  9.13
#     int8 1o4i         2048  3072   768 |  1.85  2.95  4.30  7.69 10.25
#
# Where the time goes (1 thread, avx512 target, bert-base shapes):
# - fp32 (the table above is the previous kernel's, per column, kind 1): each FMA needs its own
#   64-byte activation load (no register reuse across columns for unstructured weights), so the
#   kernel is bound by how fast activation rows come in: measured on the Xeon, a 4-FMA entry
#   costs 0.9 ns with the rows in L1 and 1.4-1.75 ns from L2 (K = 768 / 3072 panels are 192 /
#   768 KiB), plus a mispredicted branch at the end of every column. The chunk layout (kind 5,
#   f32_chunks) reads a panel block by block and runs one branch-free loop over chunks of 4
#   nonzeros (f32_cw; 8 since the twenty-third session), adding into accumulators in L1
#   (prefetching the tile's C lines first, so the epilogue's stores do not stall the next
#   tile's accumulator stores behind memory): 1.1-1.3x the kind-1 kernel at 90% on the Xeon,
#   1.3-1.4x at 80% and for 1o4i, and bert-base pruned 90% 16 x 128 went 637 -> 553 ms.
#   Break-even about 50% sparsity there.
# - int8 quads (1o4i): 4 zmm loads + 4 vpdpbusd per non-empty quad per 64 tokens, load bound;
#   the dense kernel runs ~2 vpdpbusd per cycle: 2.9-3.6x at 90% 1o4i (2.0x at M=2048,
#   N=3072). Break-even about 55-70%.
# - int8 compact (unstructured, avx512_vnni): 4 byte-row loads + 8 unpacks + 4 vpdpbusd per 4
#   nonzeros per 64 tokens, shuffle bound (~2 cycles per nonzero): 2.3-2.7x at 90% (1.7x at
#   M=2048, N=3072). Quads would give ~1.4x there (34% of quads non-empty). Break-even about
#   70-75%.
# - fixed costs per call (transpose in, ct round trip, 16x16 transpose back, epilogue): 0.15-0.4
#   ns per output, up to 0.65 ns when C (25 MB at M=2048, N=3072) streams to memory. They cap
#   the gain at high sparsity (all-zero weights: 3-60x, not infinite) and are why the
#   M=2048, N=3072 rows gain least.
# - avx2 targets: their dense fp32 runs at half the zmm rate, so sparse fp32 gains more there
#   (4-6x at 90%); int8 on avx_vnni has no compact layout (ymm): quads, 1.6x at 90%
#   unstructured, 4-5x at 90% 1o4i; int8 on plain avx2 (vpmaddwd) gains 2.3-2.8x / 5.7-9x.
#
# Cost model (1 thread, ns; calibrated by non-negative least squares on the 1-thread rows above
# with sparsity >= 0.5, fixed costs from the all-zero runs; median error of the predicted sparse
# time 16-26%, worst 45-77%; it errs towards dense near break-even):
#   dense  = dense_mac * M * N * K
#   sparse = T * (entry * entries + column * N + transpose * K_units)
#   T = M rounded up to the token tile; entries = nonzeros (fp32), non-empty k quads (int8 quads)
#   or groups of 4 nonzeros (int8 compact, cost compact_entry); K_units = K (fp32), ceil(K/4) (int8)
# gain = dense / sparse; the ratio is taken as thread-independent.


def sparse_stats(W: np.ndarray, kind: str) -> dict:
    """Sparsity statistics of W[K, N] the cost model reads (and the manifest records)."""
    W = np.asarray(W)
    K, N = W.shape
    nz = W != 0
    nnz = int(nz.sum())
    stats = {
        "K": int(K),
        "N": int(N),
        "nnz": nnz,
        "density": nnz / max(K * N, 1),
    }
    kq = -(-K // 4)
    padded = np.zeros((kq * 4, N), dtype=bool)
    padded[:K] = nz
    quads = padded.reshape(kq, 4, N).any(axis=1)
    stats["nonempty_quads"] = int(quads.sum())
    stats["quad_fraction"] = stats["nonempty_quads"] / max(kq * N, 1)
    stats["compact_groups"] = int((-(-nz.sum(axis=0) // 4)).sum())
    full = padded.reshape(kq, 4, N).all(axis=1)
    # share of the nonzeros in fully populated aligned k quads (1 for a 1o4i pattern)
    stats["full_quad_share"] = 4 * int(full.sum()) / max(nnz, 1)
    stats["kind"] = kind
    return stats


# Cost model constants per (kind, isa), ns (1 thread); see the comment above sparse_stats.
#   dense_mac:     ns per multiply-add of the dense kernel
#   entry:         ns per (stored entry x token): fp32 nonzero, int8 non-empty k quad
#   compact_entry: ns per (group of 4 nonzeros x token), int8 compact layout (avx512_vnni)
#   column:        ns per (output column x token): accumulators out, transpose back, epilogue
#   transpose:     ns per (k x token) (fp32) or (k quad x token) (int8) of the panel transpose
SPARSE_COST: dict[tuple[str, str], dict[str, float]] = {
    # the fp32 chunk kernel (blob version 2), fitted on an Intel Xeon (1 thread, the bench
    # rows at sparsity 0.5-0.95, M 128 and 2048, the three bert-base shapes, every pattern;
    # relative least squares: median error 7%, worst 34%, at M = 2048 where C streams to L3).
    # Measured there: 1.03-1.13x at 50% sparsity, 1.5-1.9x at 70%, 3.0-4.4x at 90%. Not yet
    # measured on Zen 4, whose figures for the previous kernel (kind 1) were dense_mac 0.00774,
    # entry 0.0222, column 0.232, transpose 0.048.
    ("f32", "avx512"): {"dense_mac": 0.0105, "entry": 0.0184, "column": 0.283, "transpose": 0.547},
    # the two avx2 targets run the same fp32 kernels: the faster dense figure (best-of) and the
    # slower sparse one, so the model errs towards dense
    ("f32", "avx2"): {"dense_mac": 0.0171, "entry": 0.0379, "column": 0.365, "transpose": 0.054},
    ("int8", "avx512_vnni"): {
        "dense_mac": 0.00196,
        "entry": 0.01685,
        "compact_entry": 0.0233,
        "column": 0.194,
        "transpose": 0.041,
    },
    # The avx512amx target: dense on AMX tiles, sparse on the avx512_vnni kernels. Fitted on an
    # Intel Xeon (Emerald Rapids class, 1 thread; benchmarks/sparse_gemm_bench.py --dense-int8
    # avx512_amx, sparsity 0.5-0.95, M 128 and 2048, the three bert-base shapes): the sparse
    # figures by non-negative least squares on relative error (median 8%, worst 26%); dense
    # measured 0.00061-0.00103 ns per multiply-add (median 0.00095; the fastest at K = 3072),
    # 0.00075 taken. There dense AMX beats every sparse kernel at 90% unstructured (0.60x-0.74x)
    # and about ties at 90% 1o4i (0.90x-1.17x): pruned int8 layers mostly stay dense.
    ("int8", "avx512_amx"): {
        "dense_mac": 0.00075,
        "entry": 0.0197,
        "compact_entry": 0.0354,
        "column": 0.275,
        "transpose": 0.298,
    },
    ("int8", "avx_vnni"): {
        "dense_mac": 0.00416,
        "entry": 0.0291,
        "column": 0.313,
        "transpose": 0.045,
    },
    ("int8", "avx2"): {"dense_mac": 0.0190, "entry": 0.0770, "column": 0.320, "transpose": 0.034},
}


# int8 isas of a dense GEMM with no sparse kernel of its own: the target's sparse kernels are
# those of this isa (the cost table has the pair's dense figure under the dense isa)
DENSE_ONLY_ISA = {"avx512_amx": "avx512_vnni"}


def sparse_cost_ns(kind: str, isa: str, stats: dict, M: int) -> tuple[float, float]:
    """(dense, sparse) estimated ns of one call with M tokens, from :func:`sparse_stats`."""
    if (kind, isa) not in SPARSE_COST:
        raise ValueError(f"sparse cost model: unknown kind / isa {kind!r} {isa!r}")
    c = SPARSE_COST[(kind, isa)]
    isa = DENSE_ONLY_ISA.get(isa, isa)  # the sparse kernel's own isa
    layout_cost = SPARSE_COST[(kind, isa)]  # the packer's layout choice (s8_sparse_layout)
    K, N = stats["K"], stats["N"]
    tt = _token_tile(kind, isa)
    lanes = {"avx512": 16, "avx512_vnni": 16}.get(isa, 8)
    compact = False
    if kind == "f32":
        # the chunk kernel costs the same per nonzero whatever the pattern (1o4i fills its
        # chunks exactly; unstructured pads about 6% at 90% sparsity with chunks of 4, 12% with
        # the 8 of today's kernels, which are faster per nonzero: fitted with 4, the model errs
        # dense)
        work, k_units = c["entry"] * stats["nnz"], K
    else:
        k_units = -(-K // 4)
        work = c["entry"] * stats["nonempty_quads"]
        if "compact_entry" in c:  # the packer takes the cheaper layout (s8_sparse_layout)
            compact = (
                layout_cost["compact_entry"] * stats["compact_groups"]
                < layout_cost["entry"] * stats["nonempty_quads"]
            )
            if compact:
                work = c["compact_entry"] * stats["compact_groups"]
    # the kernel's token tile: 1 or 2 vectors when M is that short (not for the compact layout)
    if not compact:
        tt = lanes if M <= lanes else (2 * lanes if M <= 2 * lanes else tt)
    tokens = -(-max(M, 1) // tt) * tt  # padded to whole token panels
    dense = c["dense_mac"] * max(M, 1) * N * max(K, 1)
    sparse = tokens * (work + c["column"] * N + c["transpose"] * k_units)
    return dense, sparse


def sparse_gain(kind: str, isa: str, W: np.ndarray, M: int) -> float:
    """Estimated time ratio dense / sparse for W[K, N] at M tokens (> 1: sparse is faster).

    ``kind`` "f32" (``isa`` the fp32 isa) or "int8" (``isa`` the int8 isa). The compiler takes
    the sparse kernel when this is >= 1.1.
    """
    dense, sparse = sparse_cost_ns(kind, isa, sparse_stats(W, kind), M)
    return dense / sparse
