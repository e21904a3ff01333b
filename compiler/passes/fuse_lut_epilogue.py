"""Let an int8 layer write the bytes that its only reader, a table, would make from its output.

In a QDQ file the FFN's first layer ends on a grid (its output's QuantizeLinear) and the GELU is
a table of that grid's levels writing the next layer's uint8 input (fuse_quant_epilogue.py,
patterns 2 and 3). Run apart, the layer writes 4 bytes per value (bert-base at 16 x 128: 25 MB,
past L2) and the table reads them back only to turn each into a level and one byte.

pattern: sqc.QLinear L (dense or sparse kernel, QDQ ``post`` whose last stage puts its output Y
    on a grid: b, or a with neither b nor a bias; no residual, no activation), Y read only by
    the next node, an sqc.Elementwise E whose ``lut`` tabulates Y's grid into uint8
    (``lut["quantize"]``).
after: L.attrs["lut_next"] = E's name, E.attrs["lut_with"] = L's name and E.attrs["reads_too"]
    = [L's input]: the emitter makes E's table at L's place and L's GEMM epilogue writes, for
    each output, the table's byte at its level's index into E's output (sqc_u8s8_gemm's or
    sqc_u8s8_spmm's C8);
    nothing runs at E's place, and Y is not written. The bytes are E's: the epilogue's level is
    the one E would recover from Y (Y = level * scale, and E's index is nearbyint(Y / scale)).
    The graph's values and each node's semantics do not change: the interpreter and the other
    passes see both nodes. reads_too keeps L's input alive through E (plan_memory), since E's
    output is written while L reads it.

pattern 2: such a layer L whose output Y only an integer attention (int8_attention's ``int8``
    grids, on a target where its kernel is sqc_attention_q8) reads, as one of Q, K and V, on
    that operand's grid.
after: L.attrs["out8"] = the grid, and Y is uint8: the levels' bytes (level - lowest level),
    which the attention reads as they are where it would have turned each float back into its
    level. A quarter of the bytes written and read; the same levels (the epilogue's own).

pattern 3: an integer attention A whose output rounding (``quant["out"]``, a grid of at most
    256 levels) is exactly what its readers quantize to: each an sqc.QLinear with A's output as
    its statically quantized input on that grid (the attention output's dense layer).
after: A.attrs["out8"] = the grid and A's output is uint8, its levels (level - lowest level);
    the layers read those bytes as they are (``x_quant`` "u8"), where they divided each float
    back into the same level.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ops.quant_ops import u8_grid
from sqc.compiler.passes.fuse_quant_epilogue import output_grid, small_grid
from sqc.compiler.passes.rewrite import Matcher


def fuse_lut_epilogue(graph):
    g = graph.copy()
    m = Matcher(g)
    users = g.consumers()
    for layer, table in zip(g.nodes[:-1], g.nodes[1:]):
        if not _layer_ok(layer) or not _table_ok(table):
            continue
        y = layer.outputs[0]
        lut = table.attrs["lut"]
        if (
            table.inputs[lut["input"]] != y
            or y in table.inputs[: lut["input"]] + table.inputs[lut["input"] + 1 :]
            or y in g.outputs
            or len(users.get(y, [])) != 1
            or output_grid(m, y) != lut["grid"]
            or not layer.name
            or not table.name
            or sum(n.name == layer.name or n.name == table.name for n in g.nodes) != 2
        ):
            continue
        layer.attrs = {**layer.attrs, "lut_next": table.name}
        table.attrs = {**table.attrs, "lut_with": layer.name, "reads_too": [layer.inputs[0]]}
    for attention in g.nodes:
        if _integer_attention(g, attention):
            for pos, key in enumerate("qkv"):
                _levels_to_attention(g, m, users, attention, pos, key)
            _levels_from_attention(g, users, attention)
    return g


def _integer_attention(g, node) -> bool:
    from sqc.compiler.codegen.emit_c import attention_kernel

    isa = g.meta.get("isa", "avx2")
    return (
        node.domain == "sqc"
        and node.op == "Attention"
        and attention_kernel(node, isa) == "sqc_attention_q8"
    )


def _levels_from_attention(g, users, attention) -> None:
    grid = (attention.attrs.get("quant") or {}).get("out")
    y = attention.outputs[0]
    readers = users.get(y, [])
    if not grid or not small_grid(grid) or y in g.outputs or not readers:
        return
    scale, zp = u8_grid(grid)
    for n in readers:
        a = n.attrs
        if not (
            n.domain == "sqc"
            and n.op == "QLinear"
            and n.inputs.count(y) == 1
            and n.inputs[0] == y
            and a["x_quant"] == "static"
            and np.float32(a["x_scale"]) == scale
            and int(a["x_zero_point"]) == zp
        ):
            return
    attention.attrs = {**attention.attrs, "out8": dict(grid)}
    g.values[y].dtype = np.dtype(np.uint8)
    for n in readers:
        n.attrs = {**n.attrs, "x_quant": "u8"}


def _levels_to_attention(g, m, users, attention, pos: int, key: str) -> None:
    y = attention.inputs[pos]
    layer = m.node_of(y, "QLinear", "sqc")
    grid = attention.attrs["int8"][key]
    if (
        layer is None
        or not _layer_ok(layer)
        or y in g.outputs
        or [n for n in users.get(y, [])] != [attention]
        or attention.inputs[:3].count(y) != 1
        or output_grid(m, y) != grid
        or not small_grid(grid)
    ):
        return
    layer.attrs = {**layer.attrs, "out8": dict(grid)}
    g.values[y].dtype = np.dtype(np.uint8)


def _layer_ok(node) -> bool:
    a = node.attrs
    return (
        node.domain == "sqc"
        and node.op == "QLinear"
        and bool(a.get("post"))
        and a.get("act", "none") == "none"
        and not node.input(3)
        and "lut_next" not in a
        and "out8" not in a
    )


def _table_ok(node) -> bool:
    lut = node.attrs.get("lut") if node.domain == "sqc" and node.op == "Elementwise" else None
    if not lut or not lut.get("quantize") or "lut_with" in node.attrs:
        return False
    return small_grid(lut["grid"])
