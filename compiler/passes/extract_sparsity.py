"""Read each linear layer's zero pattern and choose its kernel: dense or sparse.

pattern: every sqc.Linear (float weight) and sqc.QLinear (int8 weight after quantization
folding: a pruned weight is int8 0 when its zero point is 0, as quantizers make weights).
after: each carries attrs
    sparsity  fraction of zero weights (float, 4 decimals)
    pattern   "dense" (under DENSE_BELOW zeros), "1o4i" (zeros in whole blocks of 4
              consecutive inputs k of one output n, aligned to k % 4 == 0), "4o1i" (whole
              blocks of 4 consecutive outputs of one input), or "unstructured"
    format    "dense" or "sparse": the kernel the emitter calls
    gain      the cost model's estimate of dense time / sparse time for this layer
    why       one line for the manifest and `sqc inspect`
``graph.meta["sparse"]`` (`sqc compile --sparse`): "auto" (the default) as below; "never" keeps
every layer dense; "always" runs every linear layer sparse, dense ones too (for tests and
measurements).
The choice is per bucket (the token count changes the costs) and per target
(``graph.meta["isa"]``, set by the driver; "avx2" if absent): sparse where the model of cost in
:func:`sqc.compiler.codegen.sparse_packing.sparse_gain` says it is at least MIN_GAIN times
faster than dense, dense otherwise. Blocked patterns need no special format: the kernels'
formats take any pattern, and a block pattern is cheaper in them.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import CompileError

SPARSE_MODES = ("auto", "always", "never")
DENSE_BELOW = 0.10  # fewer zeros than this: a dense layer, whatever their positions
BLOCK_COVER = 0.98  # share of the zeros that must lie in whole blocks to call the pattern blocked
MIN_GAIN = 1.1  # estimated dense/sparse time ratio a sparse kernel must reach to be chosen


def extract_sparsity(graph):
    from sqc.compiler.codegen.build import TARGETS

    g = graph
    isa = g.meta.get("isa", "avx2")
    mode = g.meta.get("sparse", "auto")
    if mode not in SPARSE_MODES:
        raise CompileError(f"sparse must be one of {', '.join(SPARSE_MODES)}, got {mode!r}")
    for node in g.nodes:
        if node.domain != "sqc" or node.op not in ("Linear", "QLinear"):
            continue
        w = g.const(node.inputs[1])
        k = w.shape[0]
        rows = g.values[node.inputs[0]].numel // k
        zp = g.const(node.inputs[5]).reshape(1, -1) if node.op == "QLinear" else 0
        zeros = w == zp
        sparsity, pattern = classify_zeros(zeros)
        attrs = {"sparsity": round(sparsity, 4), "pattern": pattern, "format": "dense", "gain": 1.0}
        if node.op == "QLinear":
            kind, kernel_isa = "int8", TARGETS[isa]["int8_gemm"]  # the dense GEMM it competes with
        else:
            kind, kernel_isa = "f32", TARGETS[isa]["f32_isa"]
        if mode == "never":
            attrs["why"] = f"{pattern} {sparsity:.1%} zeros; --sparse never: dense kernel"
        elif mode == "always":
            attrs["format"] = "sparse"
            attrs["why"] = f"{pattern} {sparsity:.1%} zeros; --sparse always: sparse kernel"
        elif np.any(zp):
            attrs["why"] = (
                f"{pattern} {sparsity:.1%} zeros, but the weight zero point is not 0 "
                "(pruned weights are not int8 zeros): dense kernel"
            )
        elif pattern == "dense":
            attrs["why"] = f"dense weights ({sparsity:.1%} zeros)"
        else:
            from sqc.compiler.codegen.sparse_packing import sparse_gain

            gain = float(sparse_gain(kind, kernel_isa, w, rows))
            attrs["gain"] = round(gain, 2)
            where = f"{pattern} {sparsity:.1%} zeros, {rows} rows: sparse kernel estimated"
            if gain >= MIN_GAIN:
                attrs["format"] = "sparse"
                attrs["why"] = f"{where} {gain:.1f}x faster than dense"
            else:
                attrs["why"] = f"{where} at {gain:.2f}x of dense (< {MIN_GAIN}): dense kept"
        node.attrs.update(attrs)
    return g


def classify_zeros(zeros: np.ndarray) -> tuple[float, str]:
    """(fraction of zeros, pattern name) of a boolean zero mask [K, N]."""
    sparsity = float(zeros.mean()) if zeros.size else 0.0
    if sparsity < DENSE_BELOW:
        return sparsity, "dense"
    total = int(zeros.sum())
    for pattern, mask in (("1o4i", zeros), ("4o1i", zeros.T)):
        if _zeros_in_blocks(mask) >= BLOCK_COVER * total:
            return sparsity, pattern
    return sparsity, "unstructured"


def _zeros_in_blocks(zeros: np.ndarray) -> int:
    """How many zeros of ``zeros`` [A, B] lie in aligned blocks of 4 along A that are all zero
    (a last, shorter block at the edge counts when all of its rows are zero)."""
    a = zeros.shape[0]
    padded = np.ones((-(-a // 4) * 4, zeros.shape[1]), bool)
    padded[:a] = zeros
    whole = padded.reshape(-1, 4, zeros.shape[1]).all(axis=1)
    return int(np.repeat(whole, 4, axis=0)[:a].sum())
