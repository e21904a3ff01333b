"""Merge linear layers that read the same input into one wider GEMM (the Q, K, V projections).

pattern: two or more sqc.Linear (or sqc.QLinear with the same input quantization) reading the
same value, with the same activation and no residual, whose outputs are read only by
sqc.Attention as its q / k / v operands.
after: one layer whose weights are the layers' weights side by side ([K, N1 + N2 + ...]; int8
weights with their per-column scales and zero points), writing one buffer; each attention
operand's view is rewritten to its columns of that buffer. One GEMM of width 3N instead of
three of width N: the input is read (and for int8, quantized) once, and the wider GEMM has
more tiles for threads.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Graph, Node
from sqc.compiler.passes.rewrite import new_value

LINEAR_OPS = ("Linear", "QLinear")
OPERAND_VIEWS = ("q_view", "k_view", "v_view")


def merge_parallel_linears(graph: Graph) -> Graph:
    g = graph.copy()
    users = g.consumers()
    groups: dict[tuple, list[Node]] = {}
    for node in g.nodes:
        if node.domain != "sqc" or node.op not in LINEAR_OPS or node.input(3):
            continue
        readers = users.get(node.outputs[0], [])
        if node.outputs[0] in g.outputs or not readers:
            continue
        if not all(_read_as_attention_operand(g, u, node.outputs[0]) for u in readers):
            continue
        key = (node.op, node.inputs[0], _attrs_key(node))
        groups.setdefault(key, []).append(node)
    for group in groups.values():
        if len(group) > 1:
            _merge(g, group, users)
    return g


def _attrs_key(node: Node) -> tuple:
    return tuple(sorted((k, v) for k, v in node.attrs.items() if k != "form"))


def _read_as_attention_operand(g: Graph, user: Node, name: str) -> bool:
    """True if ``user`` is an sqc.Attention reading ``name`` only as q, k or v, through views
    that stay within rows of the value's last dim."""
    if user.op != "Attention" or user.domain != "sqc":
        return False
    a = user.attrs
    width = g.values[name].shape[-1]
    dims = {
        "q_view": (a["num_heads"], a["seq_q"], a["head_dim"]),
        "k_view": (a["num_heads"], a["seq_k"], a["head_dim"]),
        "v_view": (a["num_heads"], a["seq_k"], a["head_dim"]),
    }
    for pos, n in enumerate(user.inputs):
        if n != name:
            continue
        if pos >= 3 or not _widen_is_exact(a[OPERAND_VIEWS[pos]], dims[OPERAND_VIEWS[pos]], width):
            return False
    return True


def _merge(g: Graph, group: list[Node], users) -> None:
    weights = [g.const(n.inputs[1]) for n in group]
    widths = [w.shape[1] for w in weights]
    total = sum(widths)
    first = group[0]
    x_shape = g.values[first.inputs[0]].shape
    out = new_value(g, first.outputs[0] + "/merged", np.float32, tuple(x_shape[:-1]) + (total,))
    inputs = [first.inputs[0], g.add_const(first.name + "/merged_w", np.concatenate(weights, 1))]
    biases = [
        g.const(n.input(2)) if n.input(2) else np.zeros(w, np.float32)
        for n, w in zip(group, widths)
    ]
    has_bias = any(n.input(2) for n in group)
    inputs.append(g.add_const(first.name + "/merged_b", np.concatenate(biases)) if has_bias else "")
    if first.op == "QLinear":
        inputs.append("")
        for pos in (4, 5):
            inputs.append(
                g.add_const(
                    first.name + f"/merged_{pos}",
                    np.concatenate([g.const(n.inputs[pos]) for n in group]),
                )
            )
    merged = Node(
        first.op,
        inputs,
        [out],
        dict(first.attrs),
        name="+".join(n.name for n in group),
        domain="sqc",
    )
    # Each attention operand now reads its columns of the merged buffer.
    col = 0
    for node, width in zip(group, widths):
        name = node.outputs[0]
        for user in users.get(name, []):
            for pos, view_key in enumerate(OPERAND_VIEWS):
                if user.inputs[pos] == name:
                    user.attrs = dict(user.attrs)
                    user.attrs[view_key] = _widen(user.attrs[view_key], width, total, col)
                    user.inputs = list(user.inputs)
                    user.inputs[pos] = out
        col += width
    index = g.nodes.index(first)
    g.nodes = [n for n in g.nodes if all(n is not m for m in group)]
    g.nodes.insert(index, merged)
    for node in group:
        g.values.pop(node.outputs[0], None)


def _widen(view: dict, width: int, total: int, col0: int) -> dict:
    """A view into rows of ``width`` columns, re-expressed in rows of ``total`` columns whose
    columns [col0, col0 + width) hold the original rows."""
    row, col = divmod(view["offset"], width)
    out = dict(view, offset=row * total + col + col0)
    for key in ("stride_h", "stride_s", "stride_d"):
        st = view[key]
        out[key] = st // width * total if st % width == 0 and st >= width else st
    return out


def _widen_is_exact(view: dict, dims: tuple[int, int, int], width: int) -> bool:
    """True if every element of ``view`` (dims: heads, positions, features) stays within one
    row of ``width`` columns, so that :func:`_widen` maps it exactly."""
    col = view["offset"] % width
    for key, n in zip(("stride_h", "stride_s", "stride_d"), dims):
        st = view[key]
        if not (st % width == 0 and st >= width):
            col += (n - 1) * st
    return col < width
