"""One-shot magnitude pruning of a float ONNX model's encoder linear weights (`sqc prune`).

Each linear layer (MatMul or Gemm with a constant 2-D weight, both sides at least
:data:`MIN_SIDE`, so the 2-wide QA head and tiny projections stay dense) loses the given fraction
of its weights, those of smallest magnitude, independently per layer. With a block pattern the
unit is a block instead of a weight, scored by its L2 norm:

- ``1o4i``: 4 consecutive inputs (k) of one output (n) -- the int8 VNNI quad;
- ``4o1i``: 4 consecutive outputs of one input.

Blocks are aligned to multiples of 4 from 0 along their axis (a last, shorter block at the edge).
One-shot pruning without fine-tuning costs accuracy; this exists so users and benchmarks can
make sparse models from dense ones, not to make good sparse models.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sqc.compiler.frontend.load_onnx import read_model
from sqc.compiler.ir import CompileError

BLOCKS = ("unstructured", "1o4i", "4o1i")
MIN_SIDE = 64
# Ops that mark an already-quantized model: pruning belongs before quantization.
_QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearMatMul",
    "QAttention",
}
_EXTERNAL_DATA_BYTES = 1 << 31  # protobuf's 2 GiB limit: larger models keep their data beside


@dataclass
class PrunedLayer:
    node: str
    weight: str
    k: int
    n: int
    sparsity: float  # fraction of zeros after pruning


def prune_model(
    model_path: str | Path,
    out_path: str | Path,
    sparsity: float,
    block: str = "unstructured",
    progress=None,
    min_side: int = MIN_SIDE,
) -> list[PrunedLayer]:
    """Prune ``model_path``'s linear weights to ``sparsity``, write ``out_path``; return the layers.

    Tokenizer files beside the model are copied beside the output (so ``sqc compile OUT`` finds
    them), unless the output folder has its own.
    """
    from sqc.compiler.driver import TOKENIZER_FILES

    say = progress or (lambda message: None)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"--sparsity must be in [0, 1], got {sparsity}")
    if block not in BLOCKS:
        raise ValueError(f"--block must be one of {', '.join(BLOCKS)}, got {block!r}")
    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.resolve() == model_path.resolve():
        raise ValueError(f"{out_path}: the output would overwrite the input model")
    proto = read_model(model_path)
    try:
        onnx.load_external_data_for_model(proto, str(model_path.parent))
    except Exception as e:
        raise CompileError(f"{model_path}: its external data could not be read ({e})") from None
    found = sorted({n.op_type for n in proto.graph.node} & _QUANT_OPS)
    if found:
        raise CompileError(
            f"{model_path} is already quantized ({', '.join(found)}): prune the float model, "
            "then quantize the pruned one (or compile it with --quantize dynamic)"
        )
    inits = {t.name: t for t in proto.graph.initializer}
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    layers: list[PrunedLayer] = []
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        name = node.input[1]
        tensor = inits.get(name)
        if tensor is None or len(tensor.dims) != 2 or uses.get(name, 0) != 1:
            continue
        w = numpy_helper.to_array(tensor)
        if w.dtype != np.float32 or min(w.shape) < min_side:
            continue
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        wk = w.T if trans_b else w  # [K, N]: k the input axis, n the output axis
        pruned = prune_weights(wk, sparsity, block)
        tensor.CopyFrom(numpy_helper.from_array(pruned.T if trans_b else pruned, name))
        layers.append(
            PrunedLayer(
                node.name or name, name, wk.shape[0], wk.shape[1], float(np.mean(pruned == 0))
            )
        )
        say(f"{node.name or name}: {wk.shape[0]}x{wk.shape[1]} -> {layers[-1].sparsity:.1%} zeros")
    if not layers:
        raise CompileError(
            f"{model_path}: no linear layer to prune (MatMul/Gemm with a constant float32 weight "
            f"of at least {min_side}x{min_side} used once)"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    big = proto.ByteSize() >= _EXTERNAL_DATA_BYTES
    onnx.save_model(
        proto,
        str(out_path),
        save_as_external_data=big,
        location=out_path.name + ".data" if big else None,
    )
    if out_path.parent.resolve() != model_path.parent.resolve():
        theirs = [f for f in TOKENIZER_FILES if (out_path.parent / f).exists()]
        if not theirs:
            for f in TOKENIZER_FILES:
                if (model_path.parent / f).exists():
                    shutil.copyfile(model_path.parent / f, out_path.parent / f)
    return layers


def prune_weights(w: np.ndarray, sparsity: float, block: str = "unstructured") -> np.ndarray:
    """W[K, N] with the ``round(sparsity * units)`` smallest units (weights or blocks) zeroed.

    Ties at the threshold are broken by position (a stable sort), so the count is exact."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
    w = np.array(w, dtype=np.float32, copy=True)
    K, N = w.shape
    if block == "unstructured":
        scores = np.abs(w).reshape(-1)
    else:
        # blocks along k (1o4i) or along n (4o1i), padded with zeros to a multiple of 4
        along_k = block == "1o4i"
        size = K if along_k else N
        padded = -(-size // 4) * 4
        v = w if along_k else w.T  # [size, other]
        pad = np.zeros((padded, v.shape[1]), np.float32)
        pad[:size] = v
        scores = np.sqrt((pad.reshape(padded // 4, 4, -1) ** 2).sum(axis=1)).reshape(-1)
    count = int(round(sparsity * scores.size))
    drop = np.zeros(scores.size, bool)
    drop[np.argsort(scores, kind="stable")[:count]] = True
    if block == "unstructured":
        w.reshape(-1)[drop] = 0.0
        return w
    mask = np.repeat(drop.reshape(padded // 4, -1), 4, axis=0)[:size]
    if along_k:
        w[mask] = 0.0
    else:
        w[mask.T] = 0.0
    return w
