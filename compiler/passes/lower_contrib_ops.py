"""Rewrite ONNX Runtime's com.microsoft fused ops into ai.onnx and sqc ops.

before: shapes specialized; the graph may hold com.microsoft Attention,
SkipLayerNormalization, EmbedLayerNormalization, BiasGelu, FastGelu, Gelu.
after: no com.microsoft op remains. Attention is sqc.Linear (packed QKV projection) +
sqc.Attention reading Q, K and V in place from the QKV buffer; the mask index becomes an
additive mask; embeddings are Gathers + Adds + LayerNormalization.
Semantics follow ONNX Runtime's contrib op documentation (ContribOperators.md).
"""

from __future__ import annotations

import math

import numpy as np

from sqc.compiler.ir import CompileError, Node
from sqc.compiler.passes.rewrite import Matcher, new_value, rewrite

MS = "com.microsoft"


def lower_contrib_ops(graph):
    return rewrite(graph, _rule)


def _rule(m: Matcher, node: Node):
    if node.domain != MS:
        return None
    return LOWER[node.op](m, node)


def _used(m: Matcher, name: str) -> bool:
    return bool(name) and (name in m.users or name in m.outputs)


def _refuse(node: Node, what: str):
    raise CompileError(
        f"node '{node.name}': op {node.op} (domain {MS}) {what}, which sqc does not support"
    )


def _as_int64(m: Matcher, name: str, out: list[Node]) -> str:
    v = m.value(name)
    if np.dtype(v.dtype) == np.int64:
        return name
    cast = new_value(m.g, name + "/i64", np.int64, v.shape)
    out.append(Node("Cast", [name], [cast], {"to": 7}, name=name + "/cast_i64"))
    return cast


def _lower_embed_layernorm(m: Matcher, node: Node):
    ids, segment, word, pos, seg_emb, gamma, beta = (node.input(i) for i in range(7))
    mask, position_ids = node.input(7), node.input(8)
    shape = m.value(node.outputs[0]).shape  # [1, S, H]
    S, H = shape[-2], shape[-1]
    out: list[Node] = []
    dtype = m.value(word).dtype

    def gather(table: str, index: str, tag: str) -> str:
        y = new_value(m.g, f"{node.name}/{tag}", dtype, shape)
        out.append(
            Node(
                "Gather",
                [table, _as_int64(m, index, out)],
                [y],
                {"axis": 0},
                name=f"{node.name}/{tag}",
            )
        )
        return y

    acc = gather(word, ids, "word")
    if position_ids:
        pe = gather(pos, position_ids, "position")
    else:
        table = m.g.const(pos)
        if table.shape[0] < S:
            raise CompileError(
                f"node '{node.name}' ({node.op}): the bucket's {S} tokens are more than the "
                f"model's position table holds ({table.shape[0]}); use buckets of at most "
                f"{table.shape[0]}"
            )
        pe = m.g.add_const(f"{node.name}/positions", table[:S].reshape(1, S, H))
    parts = [pe] + ([gather(seg_emb, segment, "segment")] if segment else [])
    for i, p in enumerate(parts):
        y = new_value(m.g, f"{node.name}/sum{i}", dtype, shape)
        out.append(Node("Add", [acc, p], [y], name=f"{node.name}/sum{i}"))
        acc = y
    out.append(
        Node(
            "LayerNormalization",
            [acc, gamma, beta],
            [node.outputs[0]],
            {"axis": -1, "epsilon": float(node.attrs.get("epsilon", 1e-12))},
            name=f"{node.name}/layernorm",
        )
    )
    if len(node.outputs) > 1 and _used(m, node.outputs[1]):
        if node.attrs.get("mask_index_type", 1) != 1:
            _refuse(node, "has mask_index_type other than 1")
        if mask:
            # mask_index = number of ones in each row of the mask
            mi = _as_int64(m, mask, out)
            total = new_value(m.g, f"{node.name}/mask_count", np.int64, (1,))
            axes = m.g.add_const(f"{node.name}/axes", np.array([1], np.int64))
            out.append(
                Node(
                    "ReduceSum",
                    [mi, axes],
                    [total],
                    {"keepdims": 0},
                    name=f"{node.name}/mask_count",
                )
            )
            out.append(
                Node("Cast", [total], [node.outputs[1]], {"to": 6}, name=f"{node.name}/mask_index")
            )
        else:
            _refuse(node, "has a mask_index output without a mask input")
    if len(node.outputs) > 2 and _used(m, node.outputs[2]):
        out.append(Node("Identity", [acc], [node.outputs[2]], name=f"{node.name}/sum_out"))
    return out


def _lower_attention(m: Matcher, node: Node):
    x, weights, bias, mask_index = (node.input(i) for i in range(4))
    a = node.attrs
    if a.get("unidirectional", 0):
        _refuse(node, "is unidirectional (causal)")
    if any(node.input(i) for i in range(4, 8)):
        _refuse(node, "has past state or attention bias inputs")
    if len(node.outputs) > 1 and _used(m, node.outputs[1]):
        _refuse(node, "has a 'present' output")
    w = m.g.const(weights)
    if (
        w is None
        or w.shape[1] % 3
        or (a.get("qkv_hidden_sizes") and len(set(a["qkv_hidden_sizes"])) != 1)
    ):
        _refuse(node, "has non-constant or unequal Q/K/V weights")
    hidden = w.shape[1] // 3
    heads = a["num_heads"]
    D = hidden // heads
    shape = m.value(x).shape  # [1, S, hidden_in]
    S = shape[-2]
    out: list[Node] = []
    qkv = new_value(m.g, f"{node.name}/qkv", np.float32, tuple(shape[:-1]) + (3 * hidden,))
    out.append(
        Node(
            "Linear",
            [x, weights] + ([bias] if bias else []),
            [qkv],
            {"act": "none"},
            name=f"{node.name}/qkv",
            domain="sqc",
        )
    )
    inputs = [qkv, qkv, qkv]
    attrs = {
        "num_heads": heads,
        "head_dim": D,
        "seq_q": S,
        "seq_k": S,
        "scale": float(a.get("scale", 1.0 / math.sqrt(D))),
        "q_view": _view(0, D, 3 * hidden),
        "k_view": _view(hidden, D, 3 * hidden),
        "v_view": _view(2 * hidden, D, 3 * hidden),
        "out_view": _view(0, D, hidden),
        "out_shape": list(m.value(node.outputs[0]).shape),
    }
    if mask_index:
        inputs.append(_additive_mask(m, node, mask_index, S, out))
        attrs["mask_view"] = {"offset": 0, "stride_h": 0, "stride_s": 0, "stride_j": 1}
    out.append(Node("Attention", inputs, [node.outputs[0]], attrs, name=node.name, domain="sqc"))
    return out


def _additive_mask(m: Matcher, node: Node, mask_index: str, S: int, out: list[Node]) -> str:
    """[1, S] float: 0 where key j may be attended, mask_filter_value where it may not."""
    fill = float(node.attrs.get("mask_filter_value", -10000.0))
    shape = m.value(mask_index).shape
    keep = new_value(m.g, f"{node.name}/keep", np.bool_, (1, S))
    if len(shape) == 1:  # key lengths: keys j < length are kept
        positions = m.g.add_const(f"{node.name}/positions", np.arange(S, dtype=np.int64)[None])
        length = _as_int64(m, mask_index, out)
        out.append(Node("Less", [positions, length], [keep], name=f"{node.name}/keep"))
    elif len(shape) == 2 and shape[-1] == S:  # a raw 0/1 mask
        zero = m.g.add_const(f"{node.name}/zero", np.zeros((), m.value(mask_index).dtype))
        is_zero = new_value(m.g, f"{node.name}/masked", np.bool_, (1, S))
        out.append(Node("Equal", [mask_index, zero], [is_zero], name=f"{node.name}/masked"))
        out.append(Node("Not", [is_zero], [keep], name=f"{node.name}/keep"))
    else:
        _refuse(node, f"has a mask_index of shape {list(shape)} (1-D lengths or 2-D masks only)")
    additive = new_value(m.g, f"{node.name}/mask", np.float32, (1, S))
    out.append(
        Node(
            "Where",
            [
                keep,
                m.g.add_const(f"{node.name}/zero_f", np.float32(0)),
                m.g.add_const(f"{node.name}/fill", np.float32(fill)),
            ],
            [additive],
            name=f"{node.name}/mask",
        )
    )
    return additive


def _view(offset: int, stride_h: int, stride_s: int) -> dict:
    return {"offset": offset, "stride_h": stride_h, "stride_s": stride_s, "stride_d": 1}


def _lower_skip_layernorm(m: Matcher, node: Node):
    for i in (1, 2):
        if len(node.outputs) > i and _used(m, node.outputs[i]):
            _refuse(node, "has mean / inverse-std outputs in use")
    outputs = [node.outputs[0]]
    if len(node.outputs) > 3 and _used(m, node.outputs[3]):
        outputs.append(node.outputs[3])
    inputs = [node.input(i) for i in range(5)]
    return [
        Node(
            "SkipLayerNorm",
            inputs,
            outputs,
            {"epsilon": float(node.attrs.get("epsilon", 1e-12))},
            name=node.name,
            domain="sqc",
        )
    ]


def _lower_gelu(m: Matcher, node: Node):
    approximation = "tanh" if node.op == "FastGelu" else "none"
    x = node.inputs[0]
    out: list[Node] = []
    if node.input(1):  # BiasGelu(A, bias), FastGelu(X, bias)
        v = m.value(node.outputs[0])
        y = new_value(m.g, f"{node.name}/biased", v.dtype, v.shape)
        out.append(Node("Add", [x, node.inputs[1]], [y], name=f"{node.name}/bias"))
        x = y
    out.append(
        Node(
            "Gelu",
            [x],
            [node.outputs[0]],
            {"approximation": approximation},
            name=node.name,
            domain="sqc",
        )
    )
    return out


LOWER = {
    "EmbedLayerNormalization": _lower_embed_layernorm,
    "Attention": _lower_attention,
    "SkipLayerNormalization": _lower_skip_layernorm,
    "BiasGelu": _lower_gelu,
    "FastGelu": _lower_gelu,
    "Gelu": _lower_gelu,
}
