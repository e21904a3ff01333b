"""Fuse GELU in its erf and tanh forms into one sqc.Gelu.

patterns (root: the outermost Mul; factors in any order and nesting):
    erf:  x * 0.5 * (1 + Erf(x / sqrt(2)))            (Div by 1.414.. or Mul by 0.707..)
    tanh: x * 0.5 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
The argument of Erf/Tanh is checked numerically on sample points, so every arrangement of
its arithmetic that exporters produce matches, and nothing else does.
after: sqc.Gelu(x, approximation=none|tanh) replaces the chain.
"""

from __future__ import annotations

import math

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.ops import lookup
from sqc.compiler.passes.rewrite import Matcher, rewrite

SAMPLES = np.linspace(-4.0, 4.0, 33, dtype=np.float32)
EXPECTED_ARG = {
    "Erf": lambda x: x / math.sqrt(2.0),
    "Tanh": lambda x: math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3),
}


def fuse_gelu(graph):
    return rewrite(graph, _rule)


def _factors(m: Matcher, name: str, root: bool) -> list[str]:
    """Flatten a product tree of private Muls into its factors."""
    n = m.node_of(name, "Mul")
    if n is None or (not root and not m.private(name)):
        return [name]
    return _factors(m, n.inputs[0], False) + _factors(m, n.inputs[1], False)


def _rule(m: Matcher, node: Node):
    if node.op != "Mul" or node.domain:
        return None
    factors = _factors(m, node.outputs[0], True)
    if len(factors) != 3:
        return None
    half = [f for f in factors if m.scalar(f) == 0.5]
    if len(half) != 1:
        return None
    rest = [f for f in factors if f != half[0]]
    for one_plus, x in (rest, rest[::-1]):
        add = m.node_of(one_plus, "Add")
        if add is None:
            continue
        for a, b in ((0, 1), (1, 0)):
            fn = m.node_of(add.inputs[a], ("Erf", "Tanh"))
            if fn is None or m.scalar(add.inputs[b]) != 1.0:
                continue
            if _argument_is(m, fn.inputs[0], x, EXPECTED_ARG[fn.op]):
                kind = "tanh" if fn.op == "Tanh" else "none"
                return [
                    Node(
                        "Gelu",
                        [x],
                        [node.outputs[0]],
                        {"approximation": kind},
                        name=node.name + "/fused_gelu",
                        domain="sqc",
                    )
                ]
    return None


def _argument_is(m: Matcher, arg: str, x: str, expected) -> bool:
    """Evaluate the subgraph from ``x`` to ``arg`` on sample points and compare."""
    env: dict[str, np.ndarray] = {x: SAMPLES}

    def value_of(name: str, depth: int) -> np.ndarray | None:
        if name in env:
            return env[name]
        c = m.g.const(name)
        if c is not None:
            return c
        n = m.node_of(name)
        if n is None or depth > 8:
            return None  # depends on something other than x, or too large to be GELU
        args = [value_of(i, depth + 1) for i in n.inputs]
        if any(a is None for a in args):
            return None
        env.update(zip(n.outputs, lookup(n).evaluate(n, args, m.g.opset_of(n))))
        return env[name]

    got = value_of(arg, 0)
    return (
        got is not None
        and got.shape == SAMPLES.shape
        and np.allclose(got, expected(SAMPLES.astype(np.float64)), rtol=1e-4, atol=1e-5)
    )
