"""Fuse chains of float elementwise ops into one sqc.Elementwise loop.

pattern (root: the last op of a tree): float32 elementwise ops (FUSIBLE) whose intermediate
results have the root's shape and no other reader, e.g. the QDQ tail of a linear layer
    FakeQuant(Add(FakeQuant(y), bias))         or GELU's Div, Erf, Add, Mul, Mul
after: one sqc.Elementwise node per tree: its ``steps`` are the fused ops in order, each
reading external inputs ("in", i) or earlier steps ("step", j); the last step is the output.
Each value is read and written once instead of once per op. Runs after the other fusions,
which own the patterns they recognise (LayerNorm, GELU, bias epilogues).
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.passes.rewrite import Matcher, rewrite

# (domain, op) -> arity. The C of each is in compiler/codegen/emit_c.py (UNARY, BINARY) and
# emit_quant.py (FakeQuant).
FUSIBLE = {
    ("", "Add"): 2,
    ("", "Sub"): 2,
    ("", "Mul"): 2,
    ("", "Div"): 2,
    ("", "Neg"): 1,
    ("", "Erf"): 1,
    ("", "Tanh"): 1,
    ("", "Relu"): 1,
    ("", "Sqrt"): 1,
    ("", "Sigmoid"): 1,
    ("sqc", "FakeQuant"): 1,
}
MAX_INPUTS = 8


def fuse_elementwise(graph):
    return rewrite(graph, _rule)


def _fusible(m: Matcher, node: Node | None) -> bool:
    if node is None or FUSIBLE.get((node.domain or "", node.op)) != len(node.inputs):
        return False
    if len(node.outputs) != 1 or np.dtype(m.value(node.outputs[0]).dtype) != np.float32:
        return False
    return all(np.dtype(m.value(i).dtype) == np.float32 for i in node.inputs)


def _rule(m: Matcher, node: Node):
    if not _fusible(m, node):
        return None
    shape = m.value(node.outputs[0]).shape
    user = m.only_user(node.outputs[0])
    if _fusible(m, user) and m.value(user.outputs[0]).shape == shape:
        return None  # not the end of its chain: the tree is fused at its root
    steps: list[tuple] = []
    inputs: list[str] = []
    seen: dict[str, tuple] = {}

    def ref(name: str) -> tuple:
        if name in seen:
            return seen[name]
        producer = m.node_of(name)
        if (
            producer is not None
            and _fusible(m, producer)
            and m.private(name)
            and m.value(name).shape == shape
        ):
            args = [ref(i) for i in producer.inputs]
            steps.append((producer.domain or "", producer.op, dict(producer.attrs), args))
            seen[name] = ("step", len(steps) - 1)
        else:
            if name not in inputs:
                inputs.append(name)
            seen[name] = ("in", inputs.index(name))
        return seen[name]

    args = [ref(i) for i in node.inputs]
    steps.append((node.domain or "", node.op, dict(node.attrs), args))
    if len(steps) < 2 or len(inputs) > MAX_INPUTS:
        return None
    return [
        Node(
            "Elementwise",
            inputs,
            list(node.outputs),
            {"steps": steps},
            name=node.name + "/fused_elementwise",
            domain="sqc",
        )
    ]
