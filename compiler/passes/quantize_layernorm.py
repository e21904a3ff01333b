"""A QDQ file's LayerNorm outputs as the uint8 levels its readers quantize them to.

In a QDQ transformer every reader of a LayerNorm's output X quantizes it to one grid: the next
layer's Q, K and V (one QuantizeLinear, fuse_quant_epilogue's pattern 5), the FFN's first layer
(its static input quantization), and the residual of the layer two steps on (stage r of that
layer's epilogue, FQ_r(X)). So X is written as floats, then read three times and divided by
the same scale each time.

pattern: a LayerNorm P (LayerNormalization over the last axis, or sqc.SkipLayerNorm without
    its sum output) writing X, not a graph output, whose every reader quantizes X to one
    uint8 grid (scale s, zero point z; an int8 grid is the same levels shifted by 128):
      - QuantizeLinear(X, s, z) to uint8;
      - sqc.QLinear with X as its input, statically quantized (``x_quant`` "static", s, z);
      - sqc.QLinear L with X as its residual, rounded by stage r of ``post``, where L's output
        is read only by a LayerNormalization N (the next LayerNorm).
after: P is an sqc.SkipLayerNorm with ``out_grid`` {s, z} writing X's uint8 levels X8
    (QuantizeLinear's bytes); the QuantizeLinear is gone and its readers read X8; the static
    layers read X8 as it is (``x_quant`` "u8"); each L loses its residual and stages r and c,
    which N takes over: N becomes sqc.SkipLayerNorm(L's output, X8) with ``skip_grid`` {s, z}
    and ``sum_grid`` = stage c, computing FQ_c(x + FQ_r(X)) as L's epilogue did (X8's values
    are FQ_r(X): the same levels times the same scale), then the LayerNorm.

Every value is the one the graph computed (the bytes are those QuantizeLinear made; the sums
the same float operations); X is never written as floats, and two of its four divisions per
element (the static layer's and stage r's) are gone.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Graph, Node
from sqc.compiler.ops.quant_ops import u8_grid
from sqc.compiler.passes.rewrite import new_value


def quantize_layernorm(graph: Graph) -> Graph:
    g = graph.copy()
    for p in list(g.nodes):
        if p in g.nodes:  # (nodes this loop removed are skipped)
            _rewrite(g, p)
    return g


def _rewrite(g: Graph, p: Node) -> None:
    if not _is_layernorm(g, p) or p.attrs.get("out_grid"):
        return
    x = p.outputs[0]
    readers = [(n, i) for n in g.nodes for i, name in enumerate(n.inputs) if name == x]
    if x in g.outputs or not readers:
        return
    grids, moves = set(), []
    for n, pos in readers:
        grid = _reader_grid(g, n, pos)
        if grid is None:
            return
        grids.add(grid)
        if pos == 3:
            moves.append(n)
    if len(grids) != 1:
        return
    ((scale, zp),) = grids
    v = g.values[x]
    quantizes = [n for n, _ in readers if n.op == "QuantizeLinear"]
    # the bytes take a QuantizeLinear's output name where there is one (its readers stay)
    x8 = (
        quantizes[0].outputs[0]
        if quantizes
        else new_value(g, x + "/uint8", np.uint8, v.shape, v.batched)
    )
    grid = {"scale": float(scale), "zero_point": zp}
    _to_skip_layernorm(g, p, {"out_grid": grid}, outputs=[x8])
    for q in quantizes:
        _rename(g, q.outputs[0], x8)
        g.nodes.remove(q)
    for n, pos in readers:
        if n.op == "QLinear" and pos == 0:
            n.inputs = [x8] + list(n.inputs[1:])
            n.attrs = {**n.attrs, "x_quant": "u8"}
    for layer in moves:
        post = layer.attrs["post"]
        (ln,) = [n for n in g.nodes if layer.outputs[0] in n.inputs]
        layer.inputs = list(layer.inputs[:3]) + [""] + list(layer.inputs[4:])
        layer.attrs = {**layer.attrs, "post": {**post, "r": None, "c": None}}
        _to_skip_layernorm(g, ln, {"skip_grid": grid, "sum_grid": post["c"]}, skip=x8)
    del g.values[x]


def _is_layernorm(g: Graph, node: Node) -> bool:
    """A LayerNorm over the last axis whose only output in use is the normalized one."""
    if node.domain == "" and node.op == "LayerNormalization":
        rank = len(g.values[node.inputs[0]].shape)
        if node.attrs.get("axis", -1) % rank != rank - 1:
            return False
    elif not (node.domain == "sqc" and node.op == "SkipLayerNorm"):
        return False
    extra = [o for o in node.outputs[1:] if o]
    return not any(o in g.outputs or any(o in n.inputs for n in g.nodes) for o in extra)


def _reader_grid(g: Graph, n: Node, pos: int) -> tuple[np.float32, int] | None:
    """The uint8 grid (scale, zero point) to which reader ``n`` quantizes its input ``pos``, or
    None where it reads the floats otherwise."""
    if n.domain == "" and n.op == "QuantizeLinear" and pos == 0:
        scale, zp = g.const(n.input(1)), g.const(n.input(2))
        if scale is None or zp is None or scale.size != 1 or zp.dtype != np.uint8:
            return None
        return np.float32(scale.reshape(())), int(zp.reshape(()))
    if not (n.domain == "sqc" and n.op == "QLinear"):
        return None
    a = n.attrs
    if pos == 0 and a["x_quant"] == "static":
        return np.float32(a["x_scale"]), int(a["x_zero_point"])
    if pos != 3 or not (a.get("post") or {}).get("r") or n.inputs[0] == n.inputs[3]:
        return None
    users = [m for m in g.nodes if n.outputs[0] in m.inputs]
    if n.outputs[0] in g.outputs or len(users) != 1:
        return None
    (ln,) = users
    if not (
        _is_layernorm(g, ln) and ln.op == "LayerNormalization" and ln.inputs[0] == n.outputs[0]
    ):
        return None
    if n.outputs[0] in ln.inputs[1:]:
        return None
    r = a["post"]["r"]
    if np.dtype(r["dtype"]) not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return None
    return u8_grid(r)


def _to_skip_layernorm(g: Graph, n: Node, attrs: dict, skip: str = "", outputs=None) -> None:
    """``n`` (a LayerNorm whose other outputs are unused) as an sqc.SkipLayerNorm with ``attrs``
    added and only its normalized output (renamed to ``outputs``), in place."""
    if n.op == "LayerNormalization":
        ins = [n.inputs[0], skip, n.inputs[1], n.input(2), ""]
        n.op, n.domain, n.inputs = "SkipLayerNorm", "sqc", ins
        n.attrs = {"epsilon": n.attrs.get("epsilon", 1e-5)}
    n.attrs = {**n.attrs, **attrs}
    for extra in n.outputs[1:]:
        g.values.pop(extra, None)
    n.outputs = outputs or n.outputs[:1]


def _rename(g: Graph, old: str, new: str) -> None:
    for n in g.nodes:
        if old in n.inputs:
            n.inputs = [new if i == old else i for i in n.inputs]
    g.outputs = [new if o == old else o for o in g.outputs]
