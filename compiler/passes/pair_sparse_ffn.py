"""Pair a transformer FFN's two sparse layers (fp32, or int8 QDQ), so that one kernel runs both.

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

pattern (int8): sqc.QLinear L1 (format sparse, no residual) whose epilogue writes the bytes of
its GELU table E (fuse_lut_epilogue: L1.attrs["lut_next"] = E, the node after L1), E's output
H8 read only by the node after E, an sqc.QLinear L2 (format sparse) taking H8 as its uint8
input; on a target whose int8 sparse kernels are avx512_vnni's (the 64-token panels).
after: the same attributes on L1 and L2: the emitter runs both (and E's table) as one
sqc_qlinear_ffn call at L1's place, which takes each token panel through both layers with the
hidden bytes in the thread's L2 (sqc_u8s8_spmm_ffn) where its conditions hold at run time, and
makes the two sqc_qlinear calls otherwise; the same bits either way.
"""

from __future__ import annotations

import numpy as np


def pair_sparse_ffn(graph):
    g = graph.copy()
    users = g.consumers()
    by_name = {n.name: n for n in g.nodes}
    for l1, l2 in zip(g.nodes, g.nodes[1:]):
        if (
            _sparse_f32(g, l1)
            and _sparse_f32(g, l2)
            and l2.attrs.get("act", "none") == "none"
            and _pairable(g, users, by_name, l1, l2, l1.outputs[0])
        ):
            _pair(l1, l2)
    if _int8_kernel(g):
        for l1, table, l2 in zip(g.nodes, g.nodes[1:], g.nodes[2:]):
            if (
                _sparse_int8(l1)
                and _sparse_int8(l2)
                and l1.attrs.get("lut_next") == table.name
                and l2.attrs.get("x_quant") == "u8"
                and _pairable(g, users, by_name, l1, l2, table.outputs[0])
            ):
                _pair(l1, l2)
    return g


def _pairable(g, users, by_name, l1, l2, h) -> bool:
    """L1 (no residual, not already a pair's second layer) hands h, read by L2 alone, to L2 as
    its input; both named, each name once (the pair attributes name them)"""
    return (
        not l1.input(3)
        and l2.inputs[0] == h
        and h not in g.outputs
        and len(users.get(h, [])) == 1
        and "ffn_with" not in l1.attrs
        and bool(l1.name)
        and bool(l2.name)
        and by_name.get(l1.name) is l1
        and by_name.get(l2.name) is l2
    )


def _pair(l1, l2) -> None:
    l1.attrs = {**l1.attrs, "ffn_next": l2.name}
    l2.attrs = {**l2.attrs, "ffn_with": l1.name, "reads_too": [l1.inputs[0]]}


def _int8_kernel(g) -> bool:
    from sqc.compiler.codegen.build import TARGETS

    target = TARGETS.get(g.meta.get("isa", "avx2"), {})
    return target.get("int8_isa") == "avx512_vnni"


def _sparse_int8(node) -> bool:
    return node.domain == "sqc" and node.op == "QLinear" and node.attrs.get("format") == "sparse"


def _sparse_f32(g, node) -> bool:
    return (
        node.domain == "sqc"
        and node.op == "Linear"
        and node.attrs.get("format") == "sparse"
        and np.dtype(g.values[node.inputs[0]].dtype) == np.float32
    )
