"""Fuse the decomposed LayerNorm that older exporters emit into one LayerNormalization.

pattern (root: the final Add, or the Mul when there is no bias):
    mean = ReduceMean(x, axes=[-1]); d = Sub(x, mean)
    var = ReduceMean(Pow(d, 2) | Mul(d, d), axes=[-1])
    y = Div(d, Sqrt(Add(var, eps))) * gamma (+ beta)
after: no ReduceMean/Sub/Pow/Sqrt/Div chain of that shape remains; a LayerNormalization
(axis -1, epsilon eps) computes it.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.passes.rewrite import Matcher, commuted, rewrite


def fuse_layernorm(graph):
    return rewrite(graph, _rule)


def _last_axis_mean(m: Matcher, name: str) -> Node | None:
    n = m.node_of(name, "ReduceMean")
    if n is None:
        return None
    rank = len(m.value(n.inputs[0]).shape)
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1:
        c = m.g.const(n.inputs[1])
        axes = None if c is None else c.tolist()
    if axes is None or [a % rank for a in axes] != [rank - 1] or not n.attrs.get("keepdims", 1):
        return None
    return n


def _normalized(m: Matcher, name: str):
    """Match Div(d, Sqrt(Add(var, eps))); return (x, eps) or None."""
    div = m.node_of(name, "Div")
    if div is None:
        return None
    sub = m.node_of(div.inputs[0], "Sub")
    sqrt = m.node_of(div.inputs[1], "Sqrt")
    if sub is None or sqrt is None:
        return None
    mean = _last_axis_mean(m, sub.inputs[1])
    if mean is None or mean.inputs[0] != sub.inputs[0]:
        return None
    x = sub.inputs[0]
    for add, eps_name in commuted(
        m.node_of(sqrt.inputs[0], "Add") or Node("", ["", ""], []), m, "ReduceMean"
    ):
        eps = m.scalar(eps_name)
        var = _last_axis_mean(m, add.outputs[0])
        if eps is None or var is None:
            continue
        sq = m.node_of(var.inputs[0], ("Pow", "Mul"))
        if sq is None or sq.inputs[0] != sub.outputs[0]:
            continue
        if sq.op == "Pow" and m.scalar(sq.inputs[1]) != 2.0:
            continue
        if sq.op == "Mul" and sq.inputs[1] != sub.outputs[0]:
            continue
        return x, eps
    return None


def _rule(m: Matcher, node: Node):
    beta = None
    mul = node
    if node.op == "Add" and not node.domain:
        for cand, other in commuted(node, m, "Mul"):
            if m.g.const(other) is not None:
                mul, beta = cand, other
                break
        else:
            return None
    if mul.op != "Mul" or mul.domain:
        return None
    if beta is None:
        user = m.only_user(mul.outputs[0])
        if (
            user is not None
            and user.op == "Add"
            and any(m.g.const(i) is not None for i in user.inputs)
        ):
            return None  # the Add of beta is the root; fuse there

    for a, b in ((0, 1), (1, 0)):
        gamma = mul.inputs[b]
        if m.g.const(gamma) is None:
            continue
        found = _normalized(m, mul.inputs[a])
        if found is None:
            continue
        x, eps = found
        size = m.value(x).shape[-1]
        inputs = [x, _vector(m, gamma, size)]
        if beta is not None:
            inputs.append(_vector(m, beta, size))
        return [
            Node(
                "LayerNormalization",
                inputs,
                [node.outputs[0]],
                {"axis": -1, "epsilon": float(eps)},
                name=node.name + "/fused_layernorm",
            )
        ]
    return None


def _vector(m: Matcher, name: str, size: int) -> str:
    c = m.g.const(name)
    if c.shape == (size,):
        return name
    return m.g.add_const(name + "/vector", np.broadcast_to(c.reshape(-1), (size,)).copy())
