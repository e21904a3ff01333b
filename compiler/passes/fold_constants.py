"""Drop the nodes whose outputs specialization computed at compile time.

before: shapes specialized; some node outputs are constants (shape subgraphs, position ids,
masks built from shapes, Casts of fp16-stored weights, transposed weights).
after: no node has only constant outputs; every remaining node reads at least one batched value.
"""

from __future__ import annotations

from sqc.compiler.ir import Graph


def fold_constants(graph: Graph) -> Graph:
    g = graph.copy()
    g.nodes = [n for n in g.nodes if not all(g.values[o].is_const for o in n.outputs if o)]
    return g
