"""A numpy interpreter of specialized graphs: the oracle of pass tests.

It runs a graph example by example (the batch semantics of ``compiler/ir.py``), using each
op's numpy ``evaluate``; a pass is correct when the graphs before and after it agree here.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Graph
from sqc.compiler.ops import lookup


def interpret(graph: Graph, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``graph`` on batched ``inputs`` ([batch, ...] arrays); return batched outputs."""
    batch = next(iter(inputs.values())).shape[0]
    per_example = []
    for b in range(batch):
        env = {k: v.const for k, v in graph.values.items() if v.is_const}
        for name in graph.inputs:
            env[name] = inputs[name][b : b + 1].reshape(graph.values[name].shape)
        for node in graph.nodes:
            opdef = lookup(node)
            args = [env[i] if i else None for i in node.inputs]
            outs = opdef.evaluate(node, args, graph.opset_of(node))
            for name, val in zip(node.outputs, outs):
                if name:
                    env[name] = np.asarray(val)
        per_example.append([env[o] for o in graph.outputs])
    return [
        np.concatenate(
            [
                ex[i].reshape(
                    (1,) + ex[i].shape[1:]
                    if ex[i].ndim and ex[i].shape[0] == 1
                    else (1,) + ex[i].shape
                )
                for ex in per_example
            ]
        )
        for i in range(len(graph.outputs))
    ]
