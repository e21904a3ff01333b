"""The one graph-rewriting driver that every fusion pass uses, and its matching helpers.

A rule looks at one node (the root of a pattern, its last node) and returns the nodes that
replace it (producing the root's outputs), or ``None`` when the pattern does not apply. The
driver splices the replacement in at the root's position and removes nodes that became dead,
so rules never walk or edit the graph themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sqc.compiler.ir import Graph, Node, Value
from sqc.compiler.passes.eliminate_dead_nodes import drop_dead_nodes


class Matcher:
    """Read-only views of a graph for rules: producers, consumers, constants."""

    def __init__(self, graph: Graph):
        self.g = graph
        self.producer = graph.producers()
        self.users = graph.consumers()
        self.outputs = set(graph.outputs)

    def node_of(
        self, name: str, op: str | tuple[str, ...] | None = None, domain: str = ""
    ) -> Node | None:
        """The node producing ``name`` if it is ``op`` (any op when None)."""
        n = self.producer.get(name)
        if n is None:
            return None
        ops = (op,) if isinstance(op, str) else op
        if ops is not None and (n.op not in ops or (n.domain or "") != domain):
            return None
        return n

    def only_user(self, name: str) -> Node | None:
        """The single node reading ``name``, if it has exactly one and is not a graph output."""
        users = self.users.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def private(self, name: str) -> bool:
        """True if ``name`` is read by one node only and is not a graph output."""
        return self.only_user(name) is not None

    def scalar(self, name: str) -> float | None:
        """The value of a constant with a single element, else None."""
        c = self.g.const(name)
        if c is None or c.size != 1:
            return None
        return float(c.reshape(()))

    def value(self, name: str) -> Value:
        return self.g.values[name]


Rule = Callable[[Matcher, Node], "list[Node] | None"]


def rewrite(graph: Graph, rule: Rule) -> Graph:
    """Apply ``rule`` at every node, in order, until it no longer applies; then drop dead nodes.
    After each replacement the scan starts again from the first node (a replacement changes
    who reads what: a node before it may match now), on the graph as a full prune would leave
    it. The graph is copied once, on entry. After a replacement, what it killed is removed
    (_died), or, where that is not simple, the whole graph is pruned in place; a copy and a
    prune of the whole graph per replacement made every fusion pass quadratic (20 s of the
    pruned 1o4i QDQ bert-base's compile)."""
    g = graph.copy()
    i = 0
    m = Matcher(g)
    pruned = False  # every node live and every value used (true after a prune)
    while i < len(g.nodes):
        node, n_values = g.nodes[i], len(g.values)
        replacement = rule(m, node)
        if replacement is None:
            i += 1
            continue
        g.nodes[i : i + 1] = replacement
        died = _died(m, node, replacement, len(g.values) - n_values) if pruned else None
        if died is None:
            drop_dead_nodes(g)
            pruned = True
        else:  # what the prune would remove, and nothing else
            dead_nodes, dead_values = died
            if dead_nodes:
                g.nodes[:] = [n for n in g.nodes if id(n) not in dead_nodes]
            for name in dead_values:
                del g.values[name]
        m = Matcher(g)
        i = 0
    drop_dead_nodes(g)
    return g


def _died(m: Matcher, old: Node, new: list[Node], added: int) -> tuple[set[int], set[str]] | None:
    """What pruning would remove after ``old`` (a node of a pruned graph: every node live and
    every value used; m its matcher before the replacement) was replaced by ``new``: the nodes
    (ids) that fed only ``old`` and those that fed only them, and the values no node makes or
    reads any more. None where the answer is not that simple (a node of ``new`` whose outputs
    nobody reads, an output of ``old`` that ``new`` does not make, a value the rule declared
    and ``new`` does not use): the caller prunes the graph."""
    made = {o for n in new for o in n.outputs if o}
    read = {i for n in new for i in n.inputs if i}
    outs, g = m.outputs, m.g
    if not all(o in made for o in old.outputs if o):
        return None
    live_reads: set[str] = set()
    for n in reversed(new):
        if not any(o in outs or o in live_reads or m.users.get(o) for o in n.outputs if o):
            return None
        live_reads.update(i for i in n.inputs if i)
    if added and not all(v in made or v in read for v in list(g.values)[-added:]):
        return None
    dead_nodes: set[int] = {id(old)}
    dead_values: set[str] = set()

    def unread(name: str) -> bool:
        return not (
            name in outs
            or name in read
            or any(id(u) not in dead_nodes for u in m.users.get(name, ()))
        )

    todo = [i for i in old.inputs if i]
    while todo:
        name = todo.pop()
        if name in dead_values or not unread(name):
            continue
        producer = m.producer.get(name)
        if producer is None:
            if name not in g.inputs:
                dead_values.add(name)
            continue
        if id(producer) in dead_nodes or not all(unread(o) for o in producer.outputs if o):
            continue
        dead_nodes.add(id(producer))
        dead_values.update(o for o in producer.outputs if o and o not in g.inputs)
        todo.extend(i for i in producer.inputs if i)
    dead_nodes.discard(id(old))
    return dead_nodes, dead_values


def replaced(node: Node, attrs: dict, inputs=None, outputs=None) -> list[Node]:
    """A rule's replacement: ``node`` with new ``attrs`` (and inputs or outputs, if given)."""
    inputs = node.inputs if inputs is None else inputs
    outputs = node.outputs if outputs is None else outputs
    return [Node(node.op, list(inputs), list(outputs), attrs, name=node.name, domain=node.domain)]


def new_value(g: Graph, hint: str, dtype, shape, batched: bool = True) -> str:
    """Declare a fresh intermediate value for a replacement node; return its name."""
    name = g.fresh_name(hint)
    g.values[name] = Value(name, np.dtype(dtype), tuple(shape), None, batched)
    return name


def commuted(node: Node, m: Matcher, op: str) -> list[tuple[Node, str]]:
    """For a binary commutative node, the (producer if it is ``op``, other input) pairs."""
    out = []
    for a, b in ((0, 1), (1, 0)):
        n = m.node_of(node.inputs[a], op)
        if n is not None:
            out.append((n, node.inputs[b]))
    return out
