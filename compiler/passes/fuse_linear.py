"""Fuse MatMul / Gemm by a constant weight, its bias and its activation into one sqc.Linear.

patterns:
    MatMul(x, W) [+ b]                 W constant [K, N] (or [1, K, N]), b constant [N]
    Gemm(x, W, C, alpha, beta, transB) x batched 2-D
    sqc.Linear(...) -> sqc.Gelu        (when the Linear output has no other reader)
    sqc.QLinear(...) [+ b] -> sqc.Gelu (int8 layers folded by fold_quantization: the same
                                        bias and activation epilogues)
after: every matmul by a constant weight is an sqc.Linear with W as [K, N] float32 (or an
sqc.QLinear), an optional bias [N] and an ``act`` epilogue; no Add of a bias vector follows
either.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.passes.rewrite import Matcher, rewrite

LINEAR_OPS = ("Linear", "QLinear")  # sqc ops with the bias / residual / act epilogue


def fuse_linear(graph):
    g = rewrite(graph, _rule_matmul)
    g = rewrite(g, _rule_bias)
    return rewrite(g, _rule_activation)


def _rule_matmul(m: Matcher, node: Node):
    if node.domain:
        return None
    if node.op == "MatMul":
        x, w = node.inputs
        weight = m.g.const(w)
        if weight is None or m.g.const(x) is not None or weight.dtype != np.float32:
            return None
        if weight.ndim == 3 and weight.shape[0] == 1:
            weight = weight[0]
        if weight.ndim != 2 or len(m.value(x).shape) < 2:
            return None
        if weight is not m.g.const(w):
            w = m.g.add_const(w + "/2d", weight)
        return [
            Node(
                "Linear", [x, w], list(node.outputs), {"act": "none"}, name=node.name, domain="sqc"
            )
        ]
    if node.op == "Gemm":
        if m.g.const(node.inputs[1]) is None or node.attrs.get("transA", 0):
            return None
        weight = m.g.const(node.inputs[1]).astype(np.float32)
        if node.attrs.get("transB", 0):
            weight = weight.T
        weight = np.ascontiguousarray(weight * np.float32(node.attrs.get("alpha", 1.0)))
        inputs = [node.inputs[0], m.g.add_const(node.inputs[1] + "/gemm", weight)]
        c = m.g.const(node.input(2))
        if node.input(2):
            if c is None or c.size not in (1, weight.shape[1]):
                return None
            bias = np.broadcast_to(c.reshape(-1), (weight.shape[1],)) * np.float32(
                node.attrs.get("beta", 1.0)
            )
            inputs.append(m.g.add_const(node.inputs[2] + "/bias", bias.astype(np.float32)))
        return [
            Node(
                "Linear", inputs, list(node.outputs), {"act": "none"}, name=node.name, domain="sqc"
            )
        ]
    return None


def _rule_bias(m: Matcher, node: Node):
    if node.op != "Add" or node.domain:
        return None
    for a, b in ((0, 1), (1, 0)):
        lin = m.node_of(node.inputs[a], LINEAR_OPS, domain="sqc")
        bias = m.g.const(node.inputs[b])
        if lin is None or bias is None or lin.input(2) or lin.input(3):
            continue
        if not m.private(lin.outputs[0]):
            continue
        n = m.g.const(lin.inputs[1]).shape[1]
        if bias.size != n or any(d != 1 for d in bias.shape[:-1]) or bias.dtype != np.float32:
            continue
        if m.value(node.outputs[0]).shape != m.value(lin.outputs[0]).shape:
            continue
        b_name = node.inputs[b]
        if bias.shape != (n,):
            b_name = m.g.add_const(b_name + "/vector", bias.reshape(n))
        inputs = list(lin.inputs) + [""] * (3 - len(lin.inputs))
        inputs[2] = b_name
        return [
            Node(
                lin.op,
                inputs,
                list(node.outputs),
                dict(lin.attrs),
                name=lin.name,
                domain="sqc",
            )
        ]
    return None


def _rule_activation(m: Matcher, node: Node):
    if node.op != "Gelu" or node.domain != "sqc":
        return None
    lin = m.node_of(node.inputs[0], LINEAR_OPS, domain="sqc")
    if lin is None or not m.private(lin.outputs[0]) or lin.attrs.get("act") != "none":
        return None
    act = "gelu_tanh" if node.attrs.get("approximation") == "tanh" else "gelu_erf"
    return [
        Node(
            lin.op,
            list(lin.inputs),
            list(node.outputs),
            dict(lin.attrs, act=act),
            name=lin.name,
            domain="sqc",
        )
    ]
