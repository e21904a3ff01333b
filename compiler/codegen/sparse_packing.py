"""Sparse weight packing for sqc's sparse GEMM kernels (templates/kernels/sparse_gemm.h.j2), their
knob table, scratch sizing, and the cost model that decides sparse vs dense per layer.

The blob layout and the kernel that reads it are two halves of one contract; the layout is
described in the template's header comment and written by :func:`_blob`.
"""

from __future__ import annotations

import numpy as np

# Sparse GEMM knobs per target (fp32 isa, int8 isa): the one table. Knob meanings are in the
# template's header comment. MEASURED TABLE: see the comment above SPARSE_COST.
_SPARSE_GEMM_KNOBS: dict[tuple[str, str], dict[str, int]] = {
    # 32 zmm: 2 x 4 accumulators (64 tokens) + 4 panel vectors + 2 broadcasts.
    ("avx512", "avx512_vnni"): {
        "f32_tt": 64,
        "i8_tt": 64,
        "f32_nc": 64,
        "i8_nc": 64,
        "l2_budget": 524288,
    },
    # 16 ymm: 2 x 4 accumulators (32 tokens) + 4 panel vectors + 2 broadcasts.
    ("avx2", "avx_vnni"): {
        "f32_tt": 32,
        "i8_tt": 32,
        "f32_nc": 64,
        "i8_nc": 64,
        "l2_budget": 524288,
    },
    ("avx2", "avx2"): {"f32_tt": 32, "i8_tt": 32, "f32_nc": 64, "i8_nc": 64, "l2_budget": 524288},
}

SPARSE_TARGETS: tuple[tuple[str, str], ...] = tuple(_SPARSE_GEMM_KNOBS)

_MAGIC = 0x50535153  # "SQSP" little endian
_VERSION = 1
_KIND_F32, _KIND_S8_QUADS, _KIND_S8_PAIRS, _KIND_S8_COMPACT = 1, 2, 3, 4
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


def _token_tile(kind: str, isa: str) -> int:
    """Token tile of the fp32 kernel for fp32 ``isa``, or of the int8 kernel for int8 ``isa``."""
    for (f_isa, i_isa), knobs in _SPARSE_GEMM_KNOBS.items():
        if kind == "f32" and f_isa == isa:
            return knobs["f32_tt"]
        if kind == "int8" and i_isa == isa:
            return knobs["i8_tt"]
    raise ValueError(f"sparse GEMM: unknown {kind} isa {isa!r}")


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
) -> np.ndarray:
    """header | ptr uint32[N + 1] | idx uint16[...] | val 32-bit words, 64-byte aligned.

    ``entries`` entries of ``words`` 32-bit value words each (the idx count per entry is 1, or
    4 for the compact int8 layout).
    """
    off_ptr = _ALIGN
    off_idx = off_ptr + _align(4 * ptr.size)
    off_val = off_idx + _align(2 * idx.size)
    total = off_val + _align(4 * val.size)
    if total >= 2**32:
        raise ValueError(f"sparse packing: blob of {total} bytes does not fit 32-bit offsets")
    header = np.zeros(16, dtype=np.uint32)
    header[:13] = [_MAGIC, _VERSION, kind, K, N, 1, N, words, entries, 0, off_ptr, off_idx, off_val]
    blob = np.zeros(total, dtype=np.uint8)
    blob[:64] = header.view(np.uint8)
    blob[off_ptr : off_ptr + 4 * ptr.size] = ptr.astype("<u4").view(np.uint8)
    blob[off_idx : off_idx + 2 * idx.size] = idx.astype("<u2").view(np.uint8)
    blob[off_val : off_val + 4 * val.size] = np.ascontiguousarray(val).view(np.uint8).reshape(-1)
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


def pack_f32_sparse(W: np.ndarray, isa: str) -> np.ndarray:
    """W[K, N] float32 as the blob ``sqc_f32_spmm`` for ``isa`` reads (uint8, self-describing).

    Per output column n (CSC), its nonzero entries in ascending k: uint16 k, float32 value.
    Any zero pattern works (unstructured, 1o4i, 4o1i, none, all zero); -0.0 counts as zero.
    """
    _token_tile("f32", isa)  # validates isa
    W = _check_weights(W, np.float32, "fp32 sparse packing")
    K, N = W.shape
    n, k = np.nonzero(W.T)  # column-major order: by n, then ascending k
    ptr = np.zeros(N + 1, dtype=np.uint32)
    ptr[1:] = np.cumsum(np.bincount(n, minlength=N))
    return _blob(_KIND_F32, K, N, ptr, k.astype(np.uint16), W[k, n].astype(np.float32), k.size, 1)


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
    stack (one lanes x TT block, at most 4 KiB).
    """
    if kind not in ("f32", "int8"):
        raise ValueError(f"sparse GEMM scratch: kind must be 'f32' or 'int8', got {kind!r}")
    tt = _token_tile(kind, isa)
    panels = -(-max(rows, 0) // tt)
    words = K if kind == "f32" else -(-K // 4)
    return panels * tt * words * 4 + _SCRATCH_SLACK


# ---- Cost model -----------------------------------------------------------------------------
#
# Calibrated from benchmarks/sparse_gemm_bench.py (see the table below); times in ns.


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
    stats["kind"] = kind
    return stats


# Per-thread cost model constants, ns (1 thread), per (kind, isa): PLACEHOLDERS until calibrated.
#   dense_mac: ns per multiply-add of the dense kernel
#   entry:     ns per (stored entry x token): fp32 nonzero, int8 non-empty k quad
#   column:    ns per (output column x token): accumulator store, transpose back, epilogue
#   transpose: ns per (k x token) (fp32) or (k quad x token) (int8) of the panel transpose
SPARSE_COST: dict[tuple[str, str], dict[str, float]] = {
    ("f32", "avx512"): {"dense_mac": 0.021, "entry": 0.02, "column": 0.1, "transpose": 0.1},
    ("f32", "avx2"): {"dense_mac": 0.021, "entry": 0.03, "column": 0.1, "transpose": 0.1},
    ("int8", "avx512_vnni"): {
        "dense_mac": 0.002,
        "entry": 0.02,
        "compact_entry": 0.032,
        "column": 0.1,
        "transpose": 0.1,
    },
    ("int8", "avx_vnni"): {"dense_mac": 0.004, "entry": 0.03, "column": 0.1, "transpose": 0.1},
    ("int8", "avx2"): {"dense_mac": 0.015, "entry": 0.05, "column": 0.1, "transpose": 0.1},
}


def sparse_cost_ns(kind: str, isa: str, stats: dict, M: int) -> tuple[float, float]:
    """(dense, sparse) estimated ns of one call with M tokens, from :func:`sparse_stats`."""
    if (kind, isa) not in SPARSE_COST:
        raise ValueError(f"sparse cost model: unknown kind / isa {kind!r} {isa!r}")
    c = SPARSE_COST[(kind, isa)]
    K, N = stats["K"], stats["N"]
    tt = _token_tile(kind, isa)
    tokens = -(-max(M, 1) // tt) * tt  # padded to whole token panels
    if kind == "f32":
        entries, k_units = stats["nnz"], K
    else:
        entries, k_units = stats["nonempty_quads"], -(-K // 4)
    dense = c["dense_mac"] * max(M, 1) * N * max(K, 1)
    sparse = tokens * (c["entry"] * entries + c["column"] * N + c["transpose"] * k_units)
    return dense, sparse


def sparse_gain(kind: str, isa: str, W: np.ndarray, M: int) -> float:
    """Estimated time ratio dense / sparse for W[K, N] at M tokens (> 1: sparse is faster).

    ``kind`` "f32" (``isa`` the fp32 isa) or "int8" (``isa`` the int8 isa). The compiler takes
    the sparse kernel when this is >= 1.1.
    """
    dense, sparse = sparse_cost_ns(kind, isa, sparse_stats(W, kind), M)
    return dense / sparse
