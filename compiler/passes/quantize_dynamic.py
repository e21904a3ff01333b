"""`sqc compile --quantize dynamic`: make a float model's linear layers int8 at compile time.

before: sqc.Linear layers with float32 weights [K, N] (fuse_linear has run).
after: when ``graph.meta["quantize"] == "dynamic"``, each becomes an sqc.QLinear with int8
weights quantized per output column, symmetric (scale max|W[:, n]| / 127, zero point 0), and
activations quantized per example at run time (DynamicQuantizeLinear's uint8 range), the
layout onnxruntime's ``quantize_dynamic(per_channel=True)`` produces. Bias, residual and GELU
epilogues are kept. Otherwise the graph is returned unchanged.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.passes.rewrite import Matcher, rewrite

QUANTIZE_MODES = ("none", "dynamic")


def quantize_weights_per_column(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 W, float32 scale[N]) with W ~ W_int8 * scale, symmetric in [-127, 127] per column."""
    amax = np.abs(w).max(axis=0).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def quantize_dynamic(graph):
    if graph.meta.get("quantize", "none") != "dynamic":
        return graph
    return rewrite(graph, _rule)


def _rule(m: Matcher, node: Node):
    if node.op != "Linear" or node.domain != "sqc":
        return None
    w = m.g.const(node.inputs[1])
    q, scale = quantize_weights_per_column(w)
    g = m.g
    inputs = list(node.inputs) + [""] * (4 - len(node.inputs))
    inputs[1] = g.add_const(node.inputs[1] + "/int8", q)
    inputs += [
        g.add_const(node.inputs[1] + "/scale", scale),
        g.add_const(node.inputs[1] + "/zero_point", np.zeros(w.shape[1], np.int32)),
    ]
    attrs = {
        "act": node.attrs.get("act", "none"),
        "x_quant": "dynamic",
        "x_scale": 1.0,
        "x_zero_point": 0,
        "form": "compile-time dynamic",
    }
    return [Node("QLinear", inputs, list(node.outputs), attrs, name=node.name, domain="sqc")]
