"""Remove nodes whose outputs nobody reads, and values nobody references.

after: every node output is read by a node or is a graph output; ``values`` holds only names
that a node or the graph's interface uses.
"""

from __future__ import annotations

from sqc.compiler.ir import Graph


def eliminate_dead_nodes(graph: Graph) -> Graph:
    g = graph.copy()
    drop_dead_nodes(g)
    return g


def drop_dead_nodes(g: Graph) -> None:
    """eliminate_dead_nodes in place, for a graph its caller owns (the rewrite driver's)."""
    needed = set(g.outputs)
    kept = []
    for node in reversed(g.nodes):
        if any(o in needed for o in node.outputs if o):
            kept.append(node)
            needed.update(i for i in node.inputs if i)
    g.nodes = kept[::-1]
    used = needed | set(g.inputs) | {o for n in g.nodes for o in n.outputs if o}
    g.values = {k: v for k, v in g.values.items() if k in used}
