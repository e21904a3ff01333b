"""The rewrite driver (compiler/passes/rewrite.py) against the plain algorithm it stands for:
after each replacement, prune the whole graph (eliminate_dead_nodes) and scan again from the
first node. The driver removes only what the replacement killed; the graphs must be the same,
node for node and value for value (names and their order: fresh names depend on them)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sqc.compiler.ir import Graph, Node, Value
from sqc.compiler.passes.eliminate_dead_nodes import eliminate_dead_nodes
from sqc.compiler.passes.rewrite import Matcher, new_value, rewrite


def _plain_rewrite(graph: Graph, rule) -> Graph:
    g = graph.copy()
    i = 0
    m = Matcher(g)
    while i < len(g.nodes):
        replacement = rule(m, g.nodes[i])
        if replacement is None:
            i += 1
            continue
        g.nodes[i : i + 1] = replacement
        g = eliminate_dead_nodes(g)
        m = Matcher(g)
        i = 0
    return eliminate_dead_nodes(g)


def _random_graph(rng: random.Random, n_nodes: int) -> Graph:
    """A DAG of ops A-D over two inputs and a few constants, some nodes with two outputs,
    some dead from the start; two or three graph outputs."""
    values = {
        "x": Value("x", np.dtype(np.float32), (4,)),
        "y": Value("y", np.dtype(np.float32), (4,)),
    }
    for c in range(4):
        values[f"c{c}"] = Value(f"c{c}", np.dtype(np.float32), (4,), np.full(4, c, np.float32))
    names = list(values)
    nodes = []
    for k in range(n_nodes):
        ins = [
            rng.choice(names[-8:] if rng.random() < 0.7 else names)
            for _ in range(rng.randint(1, 3))
        ]
        outs = [f"v{k}"] + ([f"v{k}b"] if rng.random() < 0.2 else [])
        for o in outs:
            values[o] = Value(o, np.dtype(np.float32), (4,))
        nodes.append(Node(rng.choice("ABCD"), ins, outs, name=f"n{k}"))
        names += outs
    outputs = rng.sample([n for n in names if n.startswith("v")], rng.randint(2, 3))
    return Graph(nodes, values, ["x", "y"], outputs, {"": 17})


def _fuse_rule(m: Matcher, node: Node):
    """A(B(p, q), r) with B's output private -> C(p, q, r): B dies, and maybe what fed it."""
    if node.op != "A":
        return None
    b = m.node_of(node.inputs[0], "B")
    if b is None or not m.private(b.outputs[0]) or len(b.outputs) > 1:
        return None
    return [Node("C", b.inputs + node.inputs[1:], list(node.outputs), name=node.name)]


def _split_rule(m: Matcher, node: Node):
    """D(p, ...) -> B(p) then A(that, const): a new value, a new constant, D's other inputs
    unread (what fed only them dies)."""
    if node.op != "D":
        return None
    t = new_value(m.g, f"{node.name}/t", np.float32, (4,))
    c = m.g.add_const(f"{node.name}/k", np.ones(4, np.float32))
    return [
        Node("B", [node.inputs[0]], [t], name=node.name + "/b"),
        Node("A", [t, c], list(node.outputs), name=node.name),
    ]


def _drop_rule(m: Matcher, node: Node):
    """C(p, ..., const, ...) -> E without its constant inputs (a constant read by nobody else
    dies, a value that no node makes)."""
    if node.op != "C":
        return None
    consts = [i for i in node.inputs if m.g.const(i) is not None]
    if consts and len(node.inputs) > 1:
        return [
            Node(
                "E", [i for i in node.inputs if i not in consts], list(node.outputs), name=node.name
            )
        ]
    return None


def _unused_value_rule(m: Matcher, node: Node):
    """B -> E, declaring a value it does not use (the driver must prune it as the plain one
    would)."""
    if node.op != "B":
        return None
    new_value(m.g, f"{node.name}/unused", np.float32, (4,))
    return [Node("E", list(node.inputs), list(node.outputs), name=node.name)]


def _orphan_rule(m: Matcher, node: Node):
    """B -> an extra E whose output nobody reads (it dies at once), then E."""
    if node.op != "B":
        return None
    t = new_value(m.g, f"{node.name}/orphan", np.float32, (4,))
    return [
        Node("E", list(node.inputs), [t], name=node.name + "/orphan"),
        Node("E", list(node.inputs), list(node.outputs), name=node.name),
    ]


def _narrow_rule(m: Matcher, node: Node):
    """A node with a second output nobody reads -> the same op without it (the value goes)."""
    if len(node.outputs) < 2 or node.op == "E" or m.users.get(node.outputs[1]):
        return None
    if node.outputs[1] in m.outputs:
        return None
    return [Node("E", list(node.inputs), node.outputs[:1], name=node.name)]


def _summary(g: Graph):
    return [(n.op, tuple(n.inputs), tuple(n.outputs), n.name) for n in g.nodes], list(g.values)


def _traced(rule):
    """The rule, recording the graph as it sees it at every call."""
    seen = []

    def traced(m: Matcher, node: Node):
        seen.append((node.name, _summary(m.g)))
        return rule(m, node)

    return traced, seen


RULES = [_fuse_rule, _split_rule, _drop_rule, _unused_value_rule, _orphan_rule, _narrow_rule]


@pytest.mark.parametrize("rule", RULES)
def test_rewrite_equals_pruning_after_every_replacement(rule):
    """The same graph at the end, and the same graph seen by every call of the rule (a dead
    node left in place would change who reads what, and so what matches)."""
    rng = random.Random(7)
    changed = 0
    for trial in range(300):
        g = _random_graph(rng, rng.randint(3, 30))
        plain, want_seen = _traced(rule)
        want = _plain_rewrite(g, plain)
        driven, got_seen = _traced(rule)
        got = rewrite(g, driven)
        assert _summary(got) == _summary(want), f"trial {trial}"
        assert got_seen == want_seen, f"trial {trial}"
        changed += _summary(want) != _summary(eliminate_dead_nodes(g))
    assert changed >= 5  # the rule did fire
