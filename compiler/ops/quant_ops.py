"""ai.onnx quantization ops and sqc's int8 ops: numpy semantics, bit for bit as onnxruntime.

Rounding is to nearest, ties to even (``np.rint``), in float32, as the spec says and as
onnxruntime's MLAS does: ``x / scale`` is a float32 division (not a multiplication by the
reciprocal), then the zero point is added and the result saturated.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import CompileError, Node
from sqc.compiler.ops import register
from sqc.compiler.ops.onnx_ops import matmul_shape, onnx_dtype
from sqc.compiler.ops.sqc_ops import gelu_np

QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _per_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scale or zero point broadcastable against a rank-``rank`` tensor along ``axis``."""
    param = np.asarray(param)
    if param.ndim == 0 or param.size == 1 and param.ndim <= 1 and rank == 0:
        return param.reshape(())
    if param.ndim != 1:
        raise ValueError(f"blocked quantization (parameters of shape {param.shape}) is unsupported")
    shape = [1] * rank
    shape[axis % rank] = param.shape[0]
    return param.reshape(shape)


def quantize_np(x: np.ndarray, scale, zero_point, dtype) -> np.ndarray:
    """saturate(rint(x / scale) + zero_point) as ``dtype`` (uint8 or int8), float32 arithmetic."""
    lo, hi = QRANGE[np.dtype(dtype)]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x.astype(np.float32) / np.asarray(scale, np.float32))
    q = q.astype(np.float64) + np.asarray(zero_point, np.float64)
    return np.clip(np.nan_to_num(q, nan=0.0), lo, hi).astype(dtype)


def u8_grid(grid: dict) -> tuple[np.float32, int]:
    """A grid's (scale, zero point) in its uint8 form: the same levels, numbered from 0 (an int8
    grid's levels shifted by 128), as the uint8 levels sqc's kernels pass between int8 ops."""
    return np.float32(grid["scale"]), int(grid["zero_point"]) - QRANGE[np.dtype(grid["dtype"])][0]


def dequantize_np(q: np.ndarray, scale, zero_point) -> np.ndarray:
    """(q - zero_point) * scale in float32, as onnxruntime computes it."""
    diff = q.astype(np.int64) - np.asarray(zero_point, np.int64)
    return (diff.astype(np.float32) * np.asarray(scale, np.float32)).astype(np.float32)


def dynamic_qparams_np(x: np.ndarray) -> tuple[np.float32, np.uint8]:
    """DynamicQuantizeLinear's scale and zero point of ``x`` (uint8, range includes 0)."""
    lo = np.float32(min(0.0, float(x.min()) if x.size else 0.0))
    hi = np.float32(max(0.0, float(x.max()) if x.size else 0.0))
    scale = np.float32((hi - lo) / np.float32(255.0))
    if scale == 0:
        return np.float32(0.0), np.uint8(0)
    zp = np.clip(np.rint(np.float32(0.0) - lo / scale), 0, 255)
    return scale, np.uint8(zp)


def _q_axis(node: Node, rank: int) -> int:
    return int(node.attrs.get("axis", 1)) if rank else 0


def _quantize_infer(node, x, opset):
    dtype = x[2][0] if len(x) > 2 and x[2] is not None else np.dtype(np.uint8)
    if node.attrs.get("output_dtype"):
        dtype = onnx_dtype(node.attrs["output_dtype"], node)
    return [(np.dtype(dtype), x[0][1])]


def _check_q_dtype(node: Node, dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in QRANGE:
        raise CompileError(
            f"node '{node.name}': {node.op} to {dtype} is not supported (sqc quantizes to uint8 "
            "or int8)"
        )
    return dtype


@register(
    "QuantizeLinear",
    attrs=("axis", "saturate", "block_size", "output_dtype", "precision"),
    infer=_quantize_infer,
    since=10,
)
def QuantizeLinear(node, x, opset):
    if node.attrs.get("block_size"):
        raise CompileError(f"node '{node.name}': blocked QuantizeLinear is not supported")
    zp = x[2] if len(x) > 2 and x[2] is not None else np.zeros((), np.uint8)
    dtype = _quantize_infer(node, [(x[0].dtype, x[0].shape), None, (zp.dtype, zp.shape)], opset)
    dtype = _check_q_dtype(node, dtype[0][0])
    axis = _q_axis(node, x[0].ndim)
    scale = _per_axis(x[1], x[0].ndim, axis)
    return [quantize_np(x[0], scale, _per_axis(zp, x[0].ndim, axis), dtype)]


@register(
    "DequantizeLinear",
    attrs=("axis", "block_size", "output_dtype"),
    infer=lambda n, x, o: [(np.dtype(np.float32), x[0][1])],
    since=10,
)
def DequantizeLinear(node, x, opset):
    if node.attrs.get("block_size"):
        raise CompileError(f"node '{node.name}': blocked DequantizeLinear is not supported")
    zp = x[2] if len(x) > 2 and x[2] is not None else np.zeros((), x[0].dtype)
    axis = _q_axis(node, x[0].ndim)
    return [dequantize_np(x[0], _per_axis(x[1], x[0].ndim, axis), _per_axis(zp, x[0].ndim, axis))]


def _dynq_infer(node, x, opset):
    return [(np.dtype(np.uint8), x[0][1]), (np.dtype(np.float32), ()), (np.dtype(np.uint8), ())]


@register("DynamicQuantizeLinear", infer=_dynq_infer, since=11)
def DynamicQuantizeLinear(node, x, opset):
    """Evaluated for one example: sqc quantizes each example of a batch on its own range."""
    scale, zp = dynamic_qparams_np(x[0])
    q = quantize_np(x[0], scale, zp, np.uint8) if scale else np.full(x[0].shape, zp, np.uint8)
    return [q, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)]


def _int_matmul(a, b, a_zp, b_zp) -> np.ndarray:
    """(a - a_zp) @ (b - b_zp) in int64; a_zp scalar or per row of a, b_zp scalar or per column."""
    a64 = a.astype(np.int64)
    b64 = b.astype(np.int64)
    if a_zp is not None:
        a_zp = np.asarray(a_zp, np.int64)
        a64 = a64 - (a_zp.reshape(-1, 1) if a_zp.ndim == 1 and a.ndim >= 2 else a_zp)
    if b_zp is not None:
        b64 = b64 - np.asarray(b_zp, np.int64)
    return np.matmul(a64, b64)


@register(
    "MatMulInteger",
    infer=lambda n, x, o: [(np.dtype(np.int32), matmul_shape(x[0][1], x[1][1]))],
    since=10,
)
def MatMulInteger(node, x, opset):
    a_zp = x[2] if len(x) > 2 else None
    b_zp = x[3] if len(x) > 3 else None
    return [_int_matmul(x[0], x[1], a_zp, b_zp).astype(np.int32)]


def requantize_multiplier(a_scale, b_scale, y_scale) -> np.ndarray:
    """a_scale * b_scale / y_scale in float32, in that order (onnxruntime's QLinearMatMul)."""
    ab = np.asarray(a_scale, np.float32) * np.asarray(b_scale, np.float32)
    return (ab / np.asarray(y_scale, np.float32)).astype(np.float32)


@register(
    "QLinearMatMul",
    infer=lambda n, x, o: [(x[7][0], matmul_shape(x[0][1], x[3][1]))],
    since=10,
)
def QLinearMatMul(node, x, opset):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = x
    acc = _int_matmul(a, b, a_zp, b_zp)
    mult = requantize_multiplier(a_scale, b_scale, y_scale)
    y = acc.astype(np.float32) * mult
    return [quantize_np(y, np.float32(1.0), y_zp, y_zp.dtype)]


# ---------------------------------------------------------------- sqc's int8 ops


def fake_quant_np(x: np.ndarray, attrs: dict | None) -> np.ndarray:
    """DequantizeLinear(QuantizeLinear(x)) with the scale, zero point and dtype of ``attrs``."""
    if not attrs:
        return x
    q = quantize_np(x, np.float32(attrs["scale"]), attrs["zero_point"], np.dtype(attrs["dtype"]))
    return dequantize_np(q, np.float32(attrs["scale"]), attrs["zero_point"])


@register("FakeQuant", "sqc", attrs=("scale", "zero_point", "dtype"), infer=lambda n, x, o: [x[0]])
def FakeQuant(node, x, opset):
    """DequantizeLinear(QuantizeLinear(x)) with one scale and zero point: x rounded to the grid."""
    return [fake_quant_np(x[0], node.attrs)]


def _qlinear_infer(node, x, opset):
    dt = np.uint8 if node.attrs.get("out8") else np.float32
    return [(np.dtype(dt), tuple(x[0][1][:-1]) + (x[1][1][1],))]


@register(
    "QLinear",
    "sqc",
    attrs=("act", "x_quant", "x_scale", "x_zero_point", "form", "post", "out8"),
    infer=_qlinear_infer,
)
def QLinear(node, x, opset):
    """Y = act(dequant(quant(X)) @ dequant(W) + bias + residual), int8 with int32 accumulators.

    Inputs: X, W (int8 [K, N]), bias, residual, w_scale (float32 [N]), w_zero_point (int32 [N]);
    bias and residual may be omitted (""). ``x_quant`` says how X becomes uint8 rows:
    "dynamic" (float X, DynamicQuantizeLinear's range per example), "static" (float X,
    ``x_scale`` and ``x_zero_point`` in the uint8 domain: int8 activations are shifted by 128),
    "u8" / "s8" (X already quantized: ``x_zero_point`` of its own type, ``x_scale`` 1).
    Per output element: float(acc) * float32(x_scale * w_scale[n]) + bias[n] + residual.
    ``form`` names the quantized form it was folded from (for the manifest and ``sqc inspect``).
    ``post`` (passes/fuse_quant_epilogue.py): QDQ rounding stages {"a", "b", "r", "c"}, each a
    FakeQuant's attrs or None; with it, Y = FQ_c(FQ_b(FQ_a(product) + bias) + FQ_r(residual))
    and there is no activation. ``out8`` (the grid of post's last stage,
    passes/fuse_lut_epilogue.py): Y is that grid's levels as uint8 (level - lowest level).
    """
    a = node.attrs
    xv = x[0]
    mode = a["x_quant"]
    if mode == "dynamic":
        scale, zp = dynamic_qparams_np(xv)
        xq = quantize_np(xv, scale, zp, np.uint8) if scale else np.full(xv.shape, zp, np.uint8)
    elif mode == "static":
        scale, zp = np.float32(a["x_scale"]), int(a["x_zero_point"])
        xq = quantize_np(xv, scale, zp, np.uint8)
    else:
        scale, zp = np.float32(a["x_scale"]), int(a["x_zero_point"])
        xq = xv
    acc = _int_matmul(xq, x[1], zp, x[5])
    s = (np.float32(scale) * x[4].astype(np.float32)).astype(np.float32)
    y = acc.astype(np.float32) * s
    post = a.get("post")
    if post:
        y = fake_quant_np(y, post["a"])
        if len(x) > 2 and x[2] is not None:
            y = (y + x[2]).astype(np.float32)
        y = fake_quant_np(y, post["b"])
        if len(x) > 3 and x[3] is not None:
            r = fake_quant_np(x[3], post["r"])
            y = fake_quant_np((y + r).astype(np.float32), post["c"])
        if a.get("out8"):
            return [quantize_np(y, *u8_grid(a["out8"]), np.uint8)]
        return [y.astype(np.float32)]
    if len(x) > 2 and x[2] is not None:
        y = y + x[2]
    if len(x) > 3 and x[3] is not None:
        y = y + x[3]
    y = gelu_np(y.astype(np.float32), a.get("act", "none"))
    return [y]
