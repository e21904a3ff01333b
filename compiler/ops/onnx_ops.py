"""ai.onnx ops: numpy semantics per the ONNX operator spec (opsets 11-21).

Names follow the spec: inputs and attributes as the spec calls them, spec defaults.
"""

from __future__ import annotations

import math

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.ops import register

# ONNX TensorProto data type -> numpy dtype (the types BERT-family models use).
ONNX_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}


def onnx_dtype(code: int, node: Node) -> np.dtype:
    from sqc.compiler.ir import CompileError

    if code not in ONNX_DTYPES:
        raise CompileError(
            f"node '{node.name}': op {node.op} uses ONNX data type {code}, "
            "which sqc does not support"
        )
    return np.dtype(ONNX_DTYPES[code])


def _shape_of(x) -> tuple:
    return tuple(int(d) for d in x)


def _bcast(*shapes):
    return tuple(np.broadcast_shapes(*shapes))


# ---------------------------------------------------------------- elementwise


def _unary(op: str, fn):
    def evaluate(node, x, opset):
        with np.errstate(all="ignore"):
            return [np.asarray(fn(x[0])).astype(x[0].dtype, copy=False)]

    def infer(node, x, opset):
        return [x[0]]

    register(op, infer=infer)(evaluate)


_erf = np.vectorize(math.erf, otypes=[np.float64])

_unary("Identity", lambda a: a.copy())
_unary("Neg", np.negative)
_unary("Abs", np.abs)
_unary("Sqrt", np.sqrt)
_unary("Exp", np.exp)
_unary("Log", np.log)
_unary("Reciprocal", np.reciprocal)
_unary("Floor", np.floor)
_unary("Ceil", np.ceil)
_unary("Tanh", np.tanh)
_unary("Erf", lambda a: _erf(a))
_unary("Relu", lambda a: np.maximum(a, 0))
_unary("Sigmoid", lambda a: 1.0 / (1.0 + np.exp(-a)))
_unary("Not", np.logical_not)
_unary("Sign", np.sign)


def _binary(op: str, fn, bool_out: bool = False):
    def evaluate(node, x, opset):
        a, b = x[0], x[1]
        with np.errstate(all="ignore"):
            if op == "Div" and np.issubdtype(a.dtype, np.integer):
                out = np.trunc(a / b).astype(a.dtype)  # ONNX integer Div truncates
            else:
                out = fn(a, b)
        out = np.asarray(out)
        return [out if bool_out else out.astype(a.dtype, copy=False)]

    def infer(node, x, opset):
        shape = _bcast(x[0][1], x[1][1])
        return [(np.dtype(np.bool_) if bool_out else x[0][0], shape)]

    register(op, infer=infer)(evaluate)


_binary("Add", np.add)
_binary("Sub", np.subtract)
_binary("Mul", np.multiply)
_binary("Div", np.divide)
_binary("Pow", np.power)
_binary("Equal", np.equal, True)
_binary("Less", np.less, True)
_binary("LessOrEqual", np.less_equal, True)
_binary("Greater", np.greater, True)
_binary("GreaterOrEqual", np.greater_equal, True)
_binary("And", np.logical_and, True)
_binary("Or", np.logical_or, True)
_binary("Xor", np.logical_xor, True)


@register("Mod", attrs=("fmod",))
def Mod(node, x, opset):
    fmod = node.attrs.get("fmod", 0)
    return [(np.fmod if fmod else np.mod)(x[0], x[1]).astype(x[0].dtype)]


def _variadic(op: str, fn):
    def evaluate(node, x, opset):
        out = x[0]
        for y in x[1:]:
            out = fn(out, y)
        return [np.asarray(out).astype(x[0].dtype, copy=False)]

    def infer(node, x, opset):
        return [(x[0][0], _bcast(*[v[1] for v in x]))]

    register(op, infer=infer)(evaluate)


_variadic("Max", np.maximum)
_variadic("Min", np.minimum)
_variadic("Sum", np.add)


def _where_infer(node, x, opset):
    return [(x[1][0], _bcast(x[0][1], x[1][1], x[2][1]))]


@register("Where", infer=_where_infer)
def Where(node, x, opset):
    return [np.where(x[0], x[1], x[2]).astype(x[1].dtype, copy=False)]


def _cast_infer(node, x, opset):
    return [(onnx_dtype(node.attrs["to"], node), x[0][1])]


@register("Cast", attrs=("to", "saturate"), infer=_cast_infer)
def Cast(node, x, opset):
    to = onnx_dtype(node.attrs["to"], node)
    with np.errstate(all="ignore"):
        return [x[0].astype(to)]


@register("CastLike", attrs=("saturate",))
def CastLike(node, x, opset):
    return [x[0].astype(x[1].dtype)]


@register("Clip", attrs=())
def Clip(node, x, opset):
    lo = x[1] if len(x) > 1 and x[1] is not None else None
    hi = x[2] if len(x) > 2 and x[2] is not None else None
    out = x[0]
    if lo is not None:
        out = np.maximum(out, lo)
    if hi is not None:
        out = np.minimum(out, hi)
    return [out.astype(x[0].dtype)]


@register("Dropout", attrs=("seed",))
def Dropout(node, x, opset):
    # Inference: identity; the optional mask output is all true.
    return [x[0].copy(), np.ones(x[0].shape, np.bool_)][: len(node.outputs)]


# ---------------------------------------------------------------- linear algebra


def matmul_shape(sa: tuple, sb: tuple) -> tuple:
    """np.matmul's output shape for operands of shapes sa and sb, from the shapes alone (a
    product of zeros, as this once was, took 0.12 s per int8 layer of bert-base: numpy has no
    integer BLAS). ValueError, as np.matmul raises it, where they do not multiply."""
    if not sa or not sb:
        raise ValueError(f"matmul: a scalar operand (shapes {tuple(sa)} and {tuple(sb)})")
    a = (1,) + tuple(sa) if len(sa) == 1 else tuple(sa)  # 1-D: a row, dropped after
    b = tuple(sb) + (1,) if len(sb) == 1 else tuple(sb)  # 1-D: a column, dropped after
    if a[-1] != b[-2]:
        raise ValueError(
            f"matmul: inner dimensions differ ({a[-1]} and {b[-2]}; shapes {tuple(sa)} and "
            f"{tuple(sb)})"
        )
    try:
        batch = _bcast(a[:-2], b[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: batch axes do not broadcast (shapes {tuple(sa)} and {tuple(sb)})"
        ) from None
    rows = (a[-2],) if len(sa) > 1 else ()
    cols = (b[-1],) if len(sb) > 1 else ()
    return batch + rows + cols


def _matmul_infer(node, x, opset):
    return [(x[0][0], matmul_shape(x[0][1], x[1][1]))]


@register("MatMul", infer=_matmul_infer)
def MatMul(node, x, opset):
    return [np.matmul(x[0], x[1]).astype(x[0].dtype, copy=False)]


def _gemm_infer(node, x, opset):
    sa, sb = x[0][1], x[1][1]
    m = sa[1] if node.attrs.get("transA", 0) else sa[0]
    n = sb[0] if node.attrs.get("transB", 0) else sb[1]
    return [(x[0][0], (m, n))]


@register("Gemm", attrs=("alpha", "beta", "transA", "transB"), infer=_gemm_infer)
def Gemm(node, x, opset):
    a, b = x[0], x[1]
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    out = node.attrs.get("alpha", 1.0) * (a @ b)
    if len(x) > 2 and x[2] is not None:
        out = out + node.attrs.get("beta", 1.0) * x[2]
    return [out.astype(x[0].dtype)]


# ---------------------------------------------------------------- normalization / reductions


def _same_infer(node, x, opset):
    return [x[0]]


def _softmax_axis(node, rank: int, opset: int) -> int:
    default = -1 if opset >= 13 else 1
    return node.attrs.get("axis", default) % rank


def softmax_np(a: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@register("Softmax", attrs=("axis",), infer=_same_infer)
def Softmax(node, x, opset):
    axis = _softmax_axis(node, x[0].ndim, opset)
    if opset < 13 and axis != x[0].ndim - 1:
        shape = x[0].shape
        flat = x[0].reshape(int(np.prod(shape[:axis])), -1)
        return [softmax_np(flat, 1).reshape(shape).astype(x[0].dtype)]
    return [softmax_np(x[0], axis).astype(x[0].dtype)]


@register("LogSoftmax", attrs=("axis",), infer=_same_infer)
def LogSoftmax(node, x, opset):
    axis = _softmax_axis(node, x[0].ndim, opset)
    return [np.log(softmax_np(x[0], axis)).astype(x[0].dtype)]


def layernorm_np(x, scale, bias, axis, eps):
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * scale
    return y + bias if bias is not None else y


def _ln_infer(node, x, opset):
    return [x[0]] + [(np.dtype(np.float32), x[0][1])] * (len(node.outputs) - 1)


@register("LayerNormalization", attrs=("axis", "epsilon", "stash_type"), infer=_ln_infer, since=17)
def LayerNormalization(node, x, opset):
    axis = node.attrs.get("axis", -1)
    eps = node.attrs.get("epsilon", 1e-5)
    bias = x[2] if len(x) > 2 else None
    return [layernorm_np(x[0], x[1], bias, axis, eps).astype(x[0].dtype)]


def _reduce(op: str, fn, axes_input_since: int):
    def axes_of(node, x, opset):
        if opset >= axes_input_since:
            axes = x[1] if len(x) > 1 and x[1] is not None else None
        else:
            axes = node.attrs.get("axes")
        if axes is None or len(axes) == 0:
            if node.attrs.get("noop_with_empty_axes", 0):
                return ()
            return tuple(range(x[0].ndim))
        return tuple(int(a) % x[0].ndim for a in np.asarray(axes).reshape(-1))

    def evaluate(node, x, opset):
        axes = axes_of(node, x, opset)
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            return [x[0].copy()]
        return [np.asarray(fn(x[0], axis=axes, keepdims=keep)).astype(x[0].dtype)]

    register(op, attrs=("axes", "keepdims", "noop_with_empty_axes"), const_inputs=(1,))(evaluate)


_reduce("ReduceMean", np.mean, 18)
_reduce("ReduceSum", np.sum, 13)
_reduce("ReduceMax", np.max, 18)
_reduce("ReduceMin", np.min, 18)
_reduce("ReduceProd", np.prod, 18)
_reduce(
    "ReduceL2", lambda a, axis, keepdims: np.sqrt(np.sum(a * a, axis=axis, keepdims=keepdims)), 18
)


@register("CumSum", attrs=("exclusive", "reverse"), const_inputs=(1,))
def CumSum(node, x, opset):
    axis = int(np.asarray(x[1]).reshape(-1)[0])
    a = x[0]
    if node.attrs.get("reverse", 0):
        a = np.flip(a, axis)
    out = np.cumsum(a, axis=axis, dtype=x[0].dtype)
    if node.attrs.get("exclusive", 0):
        out = out - a
    if node.attrs.get("reverse", 0):
        out = np.flip(out, axis)
    return [np.ascontiguousarray(out)]


# ---------------------------------------------------------------- shape ops


@register("Shape", attrs=("start", "end"))
def Shape(node, x, opset):
    shape = np.array(x[0].shape, np.int64)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", None)
    return [shape[start:end]]


@register("Size")
def Size(node, x, opset):
    return [np.array(x[0].size, np.int64)]


def reshape_target(data_shape, shape, allowzero: int) -> tuple[int, ...]:
    shape = [int(s) for s in shape]
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            shape[i] = data_shape[i]
    return tuple(np.empty(data_shape, np.bool_).reshape(shape).shape)


def _reshape_infer(node, x, opset):
    return [(x[0][0], reshape_target(x[0][1], x[1][2], node.attrs.get("allowzero", 0)))]


@register("Reshape", attrs=("allowzero",), const_inputs=(1,))
def Reshape(node, x, opset):
    return [x[0].reshape(reshape_target(x[0].shape, x[1], node.attrs.get("allowzero", 0)))]


@register("Flatten", attrs=("axis",))
def Flatten(node, x, opset):
    axis = node.attrs.get("axis", 1) % (x[0].ndim + 1) if x[0].ndim else 0
    lead = int(np.prod(x[0].shape[:axis], dtype=np.int64))
    return [x[0].reshape(lead, -1)]


def _axes(node, x, opset, since=13):
    if opset >= since:
        return None if len(x) < 2 or x[1] is None else [int(a) for a in np.asarray(x[1]).ravel()]
    return node.attrs.get("axes")


@register("Unsqueeze", attrs=("axes",), const_inputs=(1,))
def Unsqueeze(node, x, opset):
    axes = _axes(node, x, opset)
    rank = x[0].ndim + len(axes)
    out = x[0]
    for a in sorted(a % rank for a in axes):
        out = np.expand_dims(out, a)
    return [out]


@register("Squeeze", attrs=("axes",), const_inputs=(1,))
def Squeeze(node, x, opset):
    axes = _axes(node, x, opset)
    if axes is None:
        return [np.squeeze(x[0])]
    return [np.squeeze(x[0], axis=tuple(a % x[0].ndim for a in axes))]


@register("Concat", attrs=("axis",))
def Concat(node, x, opset):
    parts = [a for a in x if a is not None]
    return [np.concatenate(parts, axis=node.attrs["axis"])]


@register("Transpose", attrs=("perm",))
def Transpose(node, x, opset):
    perm = node.attrs.get("perm")
    return [np.ascontiguousarray(np.transpose(x[0], perm))]


def slice_params(shape, starts, ends, axes, steps):
    """Normalised (axis, start, stop, step) per axis, as np slicing clamps them."""
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    out = []
    for a, s, e, st in zip(axes, starts, ends, steps):
        start, stop, step = slice(
            int(max(min(s, 2**62), -(2**62))), int(max(min(e, 2**62), -(2**62))), st
        ).indices(shape[a])
        out.append((a, start, stop, step))
    return out


@register("Slice", const_inputs=(1, 2, 3, 4))
def Slice(node, x, opset):
    data = x[0]
    axes = x[3] if len(x) > 3 and x[3] is not None else None
    steps = x[4] if len(x) > 4 and x[4] is not None else None
    index = [slice(None)] * data.ndim
    for a, start, stop, step in slice_params(data.shape, x[1], x[2], axes, steps):
        index[a] = slice(start, stop, step)
    return [np.ascontiguousarray(data[tuple(index)])]


@register("Split", attrs=("axis", "split", "num_outputs"), const_inputs=(1,))
def Split(node, x, opset):
    axis = node.attrs.get("axis", 0)
    split = x[1] if opset >= 13 and len(x) > 1 and x[1] is not None else node.attrs.get("split")
    dim = x[0].shape[axis]
    n = len(node.outputs)
    if split is None:
        size = -(-dim // n)
        split = [min(size, dim - i * size) for i in range(n)]
    points = np.cumsum([int(s) for s in split])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x[0], points, axis=axis)]


@register("Gather", attrs=("axis",))
def Gather(node, x, opset):
    axis = node.attrs.get("axis", 0)
    idx = np.asarray(x[1]).astype(np.int64)
    dim = x[0].shape[axis]
    idx = np.where(idx < 0, idx + dim, idx)
    return [np.take(x[0], np.clip(idx, 0, max(dim - 1, 0)), axis=axis)]


@register("Expand", const_inputs=(1,))
def Expand(node, x, opset):
    shape = _bcast(x[0].shape, tuple(int(s) for s in x[1]))
    return [np.ascontiguousarray(np.broadcast_to(x[0], shape))]


@register("Tile", const_inputs=(1,))
def Tile(node, x, opset):
    return [np.tile(x[0], [int(r) for r in x[1]])]


@register("ConstantOfShape", attrs=("value",), const_inputs=(0,))
def ConstantOfShape(node, x, opset):
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return [np.full(tuple(int(s) for s in x[0]), value[0], value.dtype)]


@register("Range", const_inputs=(0, 1, 2))
def Range(node, x, opset):
    start, limit, delta = (np.asarray(a).reshape(()) for a in x[:3])
    return [np.arange(start, limit, delta).astype(start.dtype)]


@register(
    "Constant",
    attrs=(
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "sparse_value",
        "value_string",
        "value_strings",
    ),
)
def Constant(node, x, opset):
    a = node.attrs
    if "value" in a:
        return [np.asarray(a["value"])]
    if "value_float" in a:
        return [np.array(a["value_float"], np.float32)]
    if "value_floats" in a:
        return [np.array(a["value_floats"], np.float32)]
    if "value_int" in a:
        return [np.array(a["value_int"], np.int64)]
    if "value_ints" in a:
        return [np.array(a["value_ints"], np.int64)]
    from sqc.compiler.ir import UnsupportedOpError

    raise UnsupportedOpError(node, opset, "has a value kind sqc does not support")
