"""Run the attention of QDQ graphs in integers where its operands lie on quantization grids.

pattern: an sqc.Attention with QDQ stages whose probabilities are rounded (stage 3) and whose
    Q, K and V each lie on a grid of at most 256 levels (the rounded outputs of int8 layers;
    see fuse_quant_epilogue.output_grid).
after: the node gains ``int8`` = {"q", "k", "v": grid attrs}. On VNNI targets both of its
    products then run in integers (sqc_attention_q8 in templates/kernels/ops.h): exact sums of
    the same grid values, where the float kernel rounds each partial sum, so the scores may
    differ from the float kernel's in their last bits (and a rounding stage may then move by
    one step), as onnxruntime's integer kernels for these products differ from its float ones.
    Other targets keep the float kernel.
"""

from __future__ import annotations

from sqc.compiler.ir import Node
from sqc.compiler.passes.fuse_quant_epilogue import output_grid, small_grid
from sqc.compiler.passes.rewrite import Matcher, replaced, rewrite


def int8_attention(graph):
    return rewrite(graph, _rule)


def _rule(m: Matcher, node: Node):
    if node.domain != "sqc" or node.op != "Attention" or node.attrs.get("int8"):
        return None
    quant = node.attrs.get("quant")
    if not quant or not quant["stages"][3] or not small_grid(quant["stages"][3]):
        return None
    grids = {key: output_grid(m, name) for key, name in zip("qkv", node.inputs[:3])}
    if not all(grid and small_grid(grid) for grid in grids.values()):
        return None
    attrs = {**node.attrs, "int8": grids}
    return replaced(node, attrs)
