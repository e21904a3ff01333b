"""Fuse a residual Add feeding a LayerNormalization into one sqc.SkipLayerNorm.

pattern (root: the LayerNormalization):
    y = LayerNormalization(Add(a, b), gamma, beta, axis=-1)     a, b batched, same shape
after: sqc.SkipLayerNorm(a, b, gamma, beta) computes y where the sum has no other reader (where
it has, fusing would compute the sum twice, so the pair is left alone).
"""

from __future__ import annotations

from sqc.compiler.ir import Node
from sqc.compiler.passes.rewrite import Matcher, rewrite


def fuse_skip_layernorm(graph):
    return rewrite(graph, _rule)


def _rule(m: Matcher, node: Node):
    if node.op != "LayerNormalization" or node.domain or len(node.outputs) > 1:
        return None
    shape = m.value(node.inputs[0]).shape
    if node.attrs.get("axis", -1) % len(shape) != len(shape) - 1:
        return None
    add = m.node_of(node.inputs[0], "Add")
    if add is None:
        return None
    a, b = add.inputs
    if (
        m.value(a).shape != shape
        or m.value(b).shape != shape
        or not (m.value(a).batched and m.value(b).batched)
    ):
        return None
    if not m.private(add.outputs[0]):
        return None
    inputs = [a, b, node.inputs[1], node.input(2)]
    return [
        Node(
            "SkipLayerNorm",
            inputs,
            [node.outputs[0]],
            {"epsilon": float(node.attrs.get("epsilon", 1e-5))},
            name=node.name + "/fused_skip",
            domain="sqc",
        )
    ]
