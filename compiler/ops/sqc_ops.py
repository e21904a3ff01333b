"""The compiler's own fused ops (domain "sqc"), produced by the fusion passes.

Their numpy semantics let the IR interpreter check every pass numerically.
"""

from __future__ import annotations

import math

import numpy as np

from sqc.compiler.ops import register
from sqc.compiler.ops.onnx_ops import layernorm_np, softmax_np

GELU_KINDS = ("none", "gelu_erf", "gelu_tanh")


def gelu_np(x: np.ndarray, kind: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    if kind == "gelu_erf":
        y = 0.5 * x64 * (1.0 + np.vectorize(math.erf)(x64 / math.sqrt(2.0)))
    elif kind == "gelu_tanh":
        y = 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)))
    else:
        y = x64
    return y.astype(x.dtype)


def _linear_infer(node, x, opset):
    dt, sx, sw = x[0][0], x[0][1], x[1][1]
    return [(dt, tuple(sx[:-1]) + (sw[1],))]


@register("Linear", "sqc", attrs=("act",), infer=_linear_infer)
def Linear(node, x, opset):
    """Y = act(X @ W + bias + residual); W is [K, N], bias [N], residual shaped as Y."""
    y = np.matmul(x[0], x[1])
    if len(x) > 2 and x[2] is not None:
        y = y + x[2]
    if len(x) > 3 and x[3] is not None:
        y = y + x[3]
    return [gelu_np(y.astype(x[0].dtype), node.attrs.get("act", "none"))]


@register("Gelu", "sqc", attrs=("approximation",), infer=lambda n, x, o: [x[0]])
def Gelu(node, x, opset):
    kind = "gelu_tanh" if node.attrs.get("approximation", "none") == "tanh" else "gelu_erf"
    return [gelu_np(x[0], kind)]


def _skip_ln_infer(node, x, opset):
    y = (np.dtype(np.uint8), x[0][1]) if node.attrs.get("out_grid") else x[0]
    return [y] + [x[0]] * (len(node.outputs) - 1)


@register(
    "SkipLayerNorm",
    "sqc",
    attrs=("epsilon", "skip_grid", "sum_grid", "out_grid"),
    infer=_skip_ln_infer,
)
def SkipLayerNorm(node, x, opset):
    """sum = input + skip (+ bias); Y = LayerNorm(sum) over the last axis. Outputs Y[, sum].

    QDQ graphs (passes/quantize_layernorm.py): ``skip_grid`` {scale, zero_point}: skip is uint8
    levels on that grid and adds its values (DequantizeLinear); ``sum_grid`` (FakeQuant attrs):
    the sum is rounded to that grid; ``out_grid`` {scale, zero_point}: Y is quantized to uint8
    (QuantizeLinear). skip may be omitted ("").
    """
    from sqc.compiler.ops.quant_ops import dequantize_np, fake_quant_np, quantize_np

    a = node.attrs
    s = x[0]
    skip = x[1] if len(x) > 1 else None
    if skip is not None:
        if a.get("skip_grid"):
            g = a["skip_grid"]
            skip = dequantize_np(skip, np.float32(g["scale"]), g["zero_point"])
        s = (s + skip).astype(np.float32)
    if len(x) > 4 and x[4] is not None:
        s = s + x[4]
    s = fake_quant_np(s, a.get("sum_grid"))
    beta = x[3] if len(x) > 3 else None
    y = layernorm_np(s, x[2], beta, -1, a["epsilon"]).astype(x[0].dtype)
    if a.get("out_grid"):
        g = a["out_grid"]
        y = quantize_np(y, np.float32(g["scale"]), g["zero_point"], np.uint8)
    return [y, s.astype(x[0].dtype)][: len(node.outputs)]


# An attention operand is a strided view into a buffer holding one example:
# element (head h, position s, feature d) sits at offset + h*stride_h + s*stride_s + d*stride_d.
VIEW_KEYS = ("offset", "stride_h", "stride_s", "stride_d")


def view_np(buf: np.ndarray, view: dict, heads: int, seq: int, dim: int) -> np.ndarray:
    """Gather the [heads, seq, dim] view of one example's flat buffer."""
    h = np.arange(heads)[:, None, None] * view["stride_h"]
    s = np.arange(seq)[None, :, None] * view["stride_s"]
    d = np.arange(dim)[None, None, :] * view["stride_d"]
    return buf.reshape(-1)[view["offset"] + h + s + d]


def _attention_infer(node, x, opset):
    dt = x[0][0] if np.dtype(x[0][0]).kind == "f" else np.dtype(np.float32)
    if node.attrs.get("out8"):
        dt = np.dtype(np.uint8)
    return [(dt, tuple(node.attrs["out_shape"]))]


def _operand_np(node, x, key: str) -> np.ndarray:
    """An attention operand's values: a uint8 operand holds the levels of its ``int8`` grid
    (passes/fuse_lut_epilogue.py: the layer before writes them), as that grid's uint8 form."""
    if x.dtype != np.uint8:
        return x
    from sqc.compiler.ops.quant_ops import dequantize_np, u8_grid

    return dequantize_np(x, *u8_grid(node.attrs["int8"][key]))


@register(
    "Attention",
    "sqc",
    attrs=(
        "num_heads",
        "head_dim",
        "seq_q",
        "seq_k",
        "scale",
        "q_view",
        "k_view",
        "v_view",
        "out_view",
        "out_shape",
        "mask_view",
        "quant",
        "int8",
        "out8",
    ),
    infer=_attention_infer,
)
def Attention(node, x, opset):
    """out[h, s, :] = softmax_j(scale * q[h, s] . k[h, j] + mask[h, s, j]) @ v[h, j, :]

    q, k, v are strided views of one example's buffers (see VIEW_KEYS); mask is an additive
    float mask read through ``mask_view`` (offset, stride_h, stride_s, stride_j) so that its
    broadcasting over heads and query positions costs nothing. The output is written through
    ``out_view`` into a buffer of ``out_shape``. Evaluated here for one example (batch 1).
    """
    a = node.attrs
    H, D, Sq, Sk = a["num_heads"], a["head_dim"], a["seq_q"], a["seq_k"]
    q = view_np(_operand_np(node, x[0], "q"), a["q_view"], H, Sq, D).astype(np.float64)
    k = view_np(_operand_np(node, x[1], "k"), a["k_view"], H, Sk, D).astype(np.float64)
    v = view_np(_operand_np(node, x[2], "v"), a["v_view"], H, Sk, D).astype(np.float64)
    quant = a.get("quant")
    dots = np.einsum("hsd,hjd->hsj", q, k)
    mask = 0.0
    if len(x) > 3 and x[3] is not None:
        mv = a["mask_view"]
        h = np.arange(H)[:, None, None] * mv["stride_h"]
        s = np.arange(Sq)[None, :, None] * mv["stride_s"]
        j = np.arange(Sk)[None, None, :] * mv["stride_j"]
        mask = x[3].reshape(-1)[mv["offset"] + h + s + j].astype(np.float64)
    if quant:  # QDQ graphs: rounding at each stage, in float32 as the graph computes
        from sqc.compiler.ops.quant_ops import fake_quant_np

        st = quant["stages"]
        f = np.float32
        scores = fake_quant_np((dots.astype(f) * f(quant["pre_scale"])).astype(f), st[0])
        scores = fake_quant_np((scores * f(quant["post_scale"])).astype(f), st[1])
        scores = fake_quant_np((scores + mask).astype(f), st[2]).astype(np.float64)
        probs = fake_quant_np(softmax_np(scores, -1).astype(f), st[3]).astype(np.float64)
    else:
        probs = softmax_np(a["scale"] * dots + mask, -1)
    ctx = np.einsum("hsj,hjd->hsd", probs, v)
    out = np.zeros(
        int(np.prod(a["out_shape"])), np.float32 if x[0].dtype == np.uint8 else x[0].dtype
    )
    ov = a["out_view"]
    h = np.arange(H)[:, None, None] * ov["stride_h"]
    s = np.arange(Sq)[None, :, None] * ov["stride_s"]
    d = np.arange(D)[None, None, :] * ov["stride_d"]
    out[ov["offset"] + h + s + d] = ctx
    if quant and quant.get("out"):  # the output's rounding (passes/fuse_quant_epilogue.py)
        from sqc.compiler.ops.quant_ops import fake_quant_np

        out = fake_quant_np(out, quant["out"])
    if a.get("out8"):  # its levels in uint8 form (passes/fuse_lut_epilogue.py)
        from sqc.compiler.ops.quant_ops import quantize_np, u8_grid

        out = quantize_np(out, *u8_grid(a["out8"]), np.uint8)
    return [out.reshape(a["out_shape"])]


@register(
    "Elementwise",
    "sqc",
    attrs=("steps", "lut"),
    infer=lambda n, x, o: [
        (
            np.dtype(np.uint8 if (n.attrs.get("lut") or {}).get("quantize") else np.float32),
            _bcast_all(x),
        )
    ],
)
def Elementwise(node, x, opset):
    """A fused chain of elementwise ops (passes/fuse_elementwise.py): run its steps in order."""
    from sqc.compiler.ir import Node
    from sqc.compiler.ops import lookup

    values = []
    for domain, op, attrs, args in node.attrs["steps"]:
        step = Node(op, [], ["y"], attrs, name=node.name, domain=domain)
        ins = [x[i] if kind == "in" else values[i] for kind, i in args]
        values.append(lookup(step).evaluate(step, ins, opset)[0])
    quantize = (node.attrs.get("lut") or {}).get("quantize")
    if quantize:  # uint8 for the next int8 layer (passes/fuse_quant_epilogue.py)
        from sqc.compiler.ops.quant_ops import quantize_np

        return [quantize_np(values[-1], quantize["scale"], quantize["zero_point"], np.uint8)]
    return [values[-1]]


def _bcast_all(x):
    return tuple(np.broadcast_shapes(*[s for _, s, *_ in x]))
