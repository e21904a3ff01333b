"""Fold the QDQ steps that follow an int8 layer into its epilogue, and tabulate functions of
quantized values.

QDQ files (onnxruntime's quantize_static) quantize every float value between ops, so after
fold_quantization and fuse_elementwise each int8 layer is followed by a loop of rounding steps,
and GELU by a loop of five rounded steps. Each such loop is a pass over memory, and the
rounding divides.

pattern 1: sqc.QLinear(x) = y (no bias, residual or activation), whose only reader is an
    sqc.Elementwise of the form
        FQ_c( FQ_b( bias + FQ_a(y) ) + FQ_r(residual) )
    where FQ_* are FakeQuant steps (each optional; FQ_c and FQ_r only with a residual), bias a
    constant [N] and residual a float value of the output's shape.
after: one sqc.QLinear with that bias and residual and ``post`` = {"a", "b", "r", "c"} (each a
    FakeQuant's attrs or None): the GEMM's epilogue rounds where the steps did, in the same
    order, with the same float operations, so the result is bit-identical.

pattern 2: an sqc.Elementwise whose inputs are all single numbers but one, X, and X lies on a
    quantization grid of at most 256 levels: X is the output of a FakeQuant, of an
    sqc.Elementwise whose last step is a FakeQuant, or of an sqc.QLinear whose ``post`` ends in
    one. (The QDQ GELU: x * FQ(FQ(erf(x / sqrt 2)) + 1) * 0.5 with x on the grid.)
after: the node gains ``lut`` = {"input": index of X, "grid": that FakeQuant's attrs}: the
    generated code evaluates the chain once per grid level (the same C expression) and looks
    every element up, which is exact since X can take no other value.

pattern 3: such a table whose output is read only by an sqc.QLinear that quantizes it with a
    static scale and zero point.
after: the table holds the quantized bytes (``lut["quantize"]``; the output is uint8) and the
    layer reads them as they are (``x_quant`` "u8"): the same bytes it would have made, a
    quarter of the memory traffic, and no division per element.

pattern 4: sqc.FakeQuant of an sqc.Attention's output (read by nothing else), the attention
    with QDQ stages and writing every element of its buffer.
after: the attention's ``quant["out"]``: its kernel rounds each output vector as it stores it.

pattern 5: two or more sqc.QLinear quantizing the same float input with the same static
    scale and zero point (a QDQ file's Q, K and V projections).
after: one QuantizeLinear (uint8, the layers' zero point) makes the bytes once; the layers read
    them (``x_quant`` "u8").
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.ops.quant_ops import QRANGE
from sqc.compiler.passes.rewrite import Matcher, new_value, replaced, rewrite

LUT_MAX_LEVELS = 256


def small_grid(attrs: dict) -> bool:
    """True if a FakeQuant's grid has at most LUT_MAX_LEVELS levels (int8 / uint8): a table
    of it, or an integer kernel over it, fits."""
    lo, hi = QRANGE[np.dtype(attrs["dtype"])]
    return hi - lo + 1 <= LUT_MAX_LEVELS


# steps whose cost a table lookup (one multiply, one round, one load) replaces with profit
COSTLY = {"Div", "Erf", "Tanh", "Sqrt", "Sigmoid", "FakeQuant"}


def fuse_quant_epilogue(graph):
    g = rewrite(graph, _rule_epilogue)
    g = rewrite(g, _rule_lut)
    g = rewrite(g, _rule_lut_to_uint8)
    g = rewrite(g, _rule_layer_reads_uint8)
    g = rewrite(g, _rule_attention_output)
    return _quantize_shared_inputs(g)


def _is_fq(step) -> bool:
    return step[0] == "sqc" and step[1] == "FakeQuant"


def _rule_epilogue(m: Matcher, node: Node):
    if node.domain != "sqc" or node.op != "Elementwise":
        return None
    out_shape = m.value(node.outputs[0]).shape
    for y in node.inputs:
        layer = m.node_of(y, "QLinear", "sqc")
        if layer is not None:
            break
    else:
        return None
    a = layer.attrs
    if a.get("act", "none") != "none" or layer.input(2) or layer.input(3) or a.get("post"):
        return None
    if not m.private(y) or m.value(y).shape != out_shape:
        return None
    parsed = _parse_tail(m, node, node.inputs.index(y), out_shape)
    if parsed is None:
        return None
    post, bias, residual = parsed
    inputs = list(layer.inputs) + [""] * (6 - len(layer.inputs))
    inputs[2] = bias or ""
    inputs[3] = residual or ""
    attrs = {**a, "post": post}
    return replaced(layer, attrs, inputs, node.outputs)


def _parse_tail(m: Matcher, node: Node, y_index: int, out_shape):
    """(post, bias, residual) if ``node``'s steps are exactly the tail of pattern 1, else None."""
    steps = node.attrs["steps"]
    used: set[int] = set()
    post = {"a": None, "b": None, "r": None, "c": None}

    def step(ref):
        if ref[0] != "step" or ref[1] in used:
            return None
        used.add(ref[1])
        return steps[ref[1]]

    def input_name(ref):
        return node.inputs[ref[1]] if ref[0] == "in" else None

    def chain(ref, stages):
        """Peel the FakeQuant steps named by ``stages`` (outermost first) where present."""
        for key in stages:
            if ref[0] != "step":
                break
            s = steps[ref[1]]
            if not _is_fq(s):
                break
            step(ref)
            post[key] = dict(s[2])
            ref = s[3][0]
        return ref

    ref = ("step", len(steps) - 1)
    residual = None
    # the residual form: FQ_c(core + FQ_r(residual))
    if _is_fq(steps[-1]):
        inner = steps[-1][3][0]
        if inner[0] == "step" and steps[inner[1]][1] == "Add" and not steps[inner[1]][0]:
            for core, other in (steps[inner[1]][3], steps[inner[1]][3][::-1]):
                r_ref = other
                r_fq = None
                if r_ref[0] == "step" and _is_fq(steps[r_ref[1]]):
                    r_fq = dict(steps[r_ref[1]][2])
                    r_ref = steps[r_ref[1]][3][0]
                name = input_name(r_ref)
                if (
                    name is None
                    or r_ref[1] == y_index
                    or m.g.const(name) is not None
                    or m.value(name).shape != out_shape
                    or np.dtype(m.value(name).dtype) != np.float32
                    or not _mentions(steps, core, ("in", y_index))
                ):
                    continue
                step(ref)
                step(inner)
                if other[0] == "step":
                    step(other)
                post["c"], post["r"], residual = dict(steps[-1][2]), r_fq, name
                ref = core
                break
    ref = chain(ref, ["b"])
    bias = None
    if ref[0] == "step" and steps[ref[1]][1] == "Add" and not steps[ref[1]][0]:
        for b_ref, rest in (steps[ref[1]][3], steps[ref[1]][3][::-1]):
            name = input_name(b_ref)
            c = m.g.const(name) if name else None
            n = out_shape[-1]
            if c is None or c.size != n or c.shape[-1] != n or c.dtype != np.float32:
                continue
            step(ref)
            bias, ref = name, rest
            break
    if bias is None and post["b"] is not None and post["a"] is None:
        post["a"], post["b"] = post["b"], None  # a lone rounding right after the product
    ref = chain(ref, ["a"])
    if ref != ("in", y_index) or len(used) != len(steps) or not any(post.values()):
        return None
    return post, bias, residual


def _mentions(steps, ref, target) -> bool:
    if ref == target:
        return True
    if ref[0] != "step":
        return False
    return any(_mentions(steps, r, target) for r in steps[ref[1]][3])


def output_grid(m: Matcher, name: str) -> dict | None:
    """The FakeQuant attrs of the grid that value ``name`` lies on, if it is known to."""
    node = m.node_of(name)
    if node is None or node.domain != "sqc":
        return None
    if node.op == "FakeQuant":
        return dict(node.attrs)
    if node.op == "Elementwise" and _is_fq(node.attrs["steps"][-1]):
        return dict(node.attrs["steps"][-1][2])
    if node.op == "QLinear" and node.attrs.get("post"):
        post = node.attrs["post"]
        last = post["c"] if node.input(3) else (post["b"] or (None if node.input(2) else post["a"]))
        return dict(last) if last else None
    return None


def _rule_lut(m: Matcher, node: Node):
    if node.domain != "sqc" or node.op != "Elementwise" or node.attrs.get("lut"):
        return None
    if sum(step[1] in COSTLY for step in node.attrs["steps"]) < 2:
        return None
    wide = [i for i, name in enumerate(node.inputs) if m.value(name).numel != 1]
    if len(wide) != 1:
        return None
    grid = output_grid(m, node.inputs[wide[0]])
    if grid is None or not small_grid(grid):
        return None
    attrs = {**node.attrs, "lut": {"input": wide[0], "grid": grid}}
    return replaced(node, attrs)


def _rule_lut_to_uint8(m: Matcher, node: Node):
    if node.domain != "sqc" or node.op != "Elementwise" or not node.attrs.get("lut"):
        return None
    y = node.outputs[0]
    layer = m.only_user(y)
    if layer is None or layer.domain != "sqc" or layer.op != "QLinear" or layer.inputs[0] != y:
        return None
    if (
        node.attrs["lut"].get("quantize")
        or layer.attrs["x_quant"] != "static"
        or y in layer.inputs[1:]
    ):
        return None
    a = layer.attrs
    lut = {
        **node.attrs["lut"],
        "quantize": {"scale": a["x_scale"], "zero_point": a["x_zero_point"]},
    }
    m.g.values[y].dtype = np.dtype(np.uint8)
    return replaced(node, {**node.attrs, "lut": lut})


def _rule_layer_reads_uint8(m: Matcher, node: Node):
    if node.domain != "sqc" or node.op != "QLinear" or node.attrs["x_quant"] != "static":
        return None
    if np.dtype(m.value(node.inputs[0]).dtype) != np.uint8:
        return None
    attrs = {**node.attrs, "x_quant": "u8"}
    return replaced(node, attrs)


def _quantize_shared_inputs(graph):
    g = graph.copy()
    m = Matcher(g)
    groups: dict[tuple, list[Node]] = {}
    for node in g.nodes:
        if node.domain == "sqc" and node.op == "QLinear" and node.attrs["x_quant"] == "static":
            key = (node.inputs[0], node.attrs["x_scale"], node.attrs["x_zero_point"])
            groups.setdefault(key, []).append(node)
    for (x, scale, zp), layers in groups.items():
        if len(layers) < 2 or m.g.const(x) is not None:
            continue
        x8 = new_value(g, x + "/uint8", np.uint8, g.values[x].shape, g.values[x].batched)
        s_name = g.add_const(x8 + "/scale", np.array(scale, np.float32))
        z_name = g.add_const(x8 + "/zero_point", np.array(zp, np.uint8))
        quantize = Node("QuantizeLinear", [x, s_name, z_name], [x8], {}, name=x8)
        first = min(g.nodes.index(layer) for layer in layers)
        g.nodes.insert(first, quantize)
        for layer in layers:  # (copies of the caller's nodes: new lists, not edits)
            layer.inputs = [x8] + list(layer.inputs[1:])
            layer.attrs = {**layer.attrs, "x_quant": "u8"}
    return g


def _rule_attention_output(m: Matcher, node: Node):
    if node.domain != "sqc" or node.op != "FakeQuant":
        return None
    attention = m.node_of(node.inputs[0], "Attention", "sqc")
    if attention is None or not m.private(node.inputs[0]):
        return None
    a = attention.attrs
    if not a.get("quant") or a["quant"].get("out"):
        return None
    if m.value(node.inputs[0]).numel != a["num_heads"] * a["seq_q"] * a["head_dim"]:
        return None  # some of the buffer is not the attention's: the loop rounds all of it
    attrs = {**a, "quant": {**a["quant"], "out": dict(node.attrs)}}
    return replaced(attention, attrs, outputs=node.outputs)
