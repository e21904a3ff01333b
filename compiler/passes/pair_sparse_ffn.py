"""Pair a transformer FFN's two sparse fp32 layers, so that one kernel runs both.

pattern: sqc.Linear L1 (format sparse, no residual) whose output H is read only by the next
sqc.Linear L2 (format sparse, act none, reading H as its input X), both fp32.
after: L1.attrs["ffn_next"] = L2's name, L2.attrs["ffn_with"] = L1's name, and L2.attrs
["reads_too"] = [L1's input X]: the emitter runs both as one sqc_f32_spmm_ffn call at L1's place
(templates/kernels/sparse_gemm.h.j2: with enough token panels per thread, each thread takes a
token panel through both layers, H's panel staying in its L2 instead of going to memory and
back) and nothing at L2's; plan_memory keeps X's bytes alive through L2 (the fused call reads
X while it writes L2's output). The graph's values and each node's semantics do not change:
the interpreter and every other pass see two Linear nodes, and H keeps its buffer (the
kernel's per-thread panels, and the two-call path for short batches, use it).
"""

from __future__ import annotations

import numpy as np


def pair_sparse_ffn(graph):
    g = graph.copy()
    users = g.consumers()
    by_name = {n.name: n for n in g.nodes}
    for i, l1 in enumerate(g.nodes[:-1]):
        l2 = g.nodes[i + 1]
        if not (_sparse_f32(g, l1) and _sparse_f32(g, l2)):
            continue
        h = l1.outputs[0]
        if (
            l1.input(3)
            or l2.attrs.get("act", "none") != "none"
            or l2.inputs[0] != h
            or h in g.outputs
            or len(users.get(h, [])) != 1
            or "ffn_with" in l1.attrs
            or not l1.name
            or not l2.name
            or by_name.get(l1.name) is not l1
            or by_name.get(l2.name) is not l2
        ):
            continue
        l1.attrs = {**l1.attrs, "ffn_next": l2.name}
        l2.attrs = {**l2.attrs, "ffn_with": l1.name, "reads_too": [l1.inputs[0]]}
    return g


def _sparse_f32(g, node) -> bool:
    return (
        node.domain == "sqc"
        and node.op == "Linear"
        and node.attrs.get("format") == "sparse"
        and np.dtype(g.values[node.inputs[0]].dtype) == np.float32
    )
