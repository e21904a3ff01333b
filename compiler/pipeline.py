"""The compiler's pass pipeline: one ordered list, read by `sqc compile --dump-after/--disable`.

Each pass is a function Graph -> Graph (one file each under compiler/passes/).
"""

from __future__ import annotations

from collections.abc import Callable

from sqc.compiler.ir import CompileError, Graph
from sqc.compiler.passes.eliminate_dead_nodes import eliminate_dead_nodes
from sqc.compiler.passes.extract_sparsity import extract_sparsity
from sqc.compiler.passes.fold_constants import fold_constants
from sqc.compiler.passes.fold_quantization import fold_quantization
from sqc.compiler.passes.fuse_attention import fuse_attention
from sqc.compiler.passes.fuse_elementwise import fuse_elementwise
from sqc.compiler.passes.fuse_gelu import fuse_gelu
from sqc.compiler.passes.fuse_layernorm import fuse_layernorm
from sqc.compiler.passes.fuse_linear import fuse_linear
from sqc.compiler.passes.fuse_lut_epilogue import fuse_lut_epilogue
from sqc.compiler.passes.fuse_quant_epilogue import fuse_quant_epilogue
from sqc.compiler.passes.fuse_skip_layernorm import fuse_skip_layernorm
from sqc.compiler.passes.int8_attention import int8_attention
from sqc.compiler.passes.lower_contrib_ops import lower_contrib_ops
from sqc.compiler.passes.merge_parallel_linears import merge_parallel_linears
from sqc.compiler.passes.pair_sparse_ffn import pair_sparse_ffn
from sqc.compiler.passes.plan_memory import plan_memory
from sqc.compiler.passes.quantize_dynamic import quantize_dynamic
from sqc.compiler.passes.quantize_layernorm import quantize_layernorm
from sqc.compiler.passes.specialize_shapes import specialize_shapes

Pass = Callable[[Graph], Graph]


def _specialize(graph: Graph) -> Graph:
    return specialize_shapes(graph, graph.meta["bucket"])


PASSES: list[tuple[str, Pass]] = [
    # One example, one bucket: every dim concrete, shape subgraphs computed.
    ("specialize_shapes", _specialize),
    # com.microsoft fused ops become ai.onnx + sqc ops, which the later passes understand.
    ("lower_contrib_ops", lower_contrib_ops),
    # Quantized linear layers (QDQ, dynamic, QLinearMatMul) become int8 sqc.QLinear, while the
    # DequantizeLinear of each weight still shows its int8 data.
    ("fold_quantization", fold_quantization),
    # What specialization computed need not run: drop those nodes.
    ("fold_constants", fold_constants),
    ("eliminate_dead_nodes", eliminate_dead_nodes),
    # Fusions, from the innermost patterns out: LayerNorm and GELU are parts of what follows.
    ("fuse_layernorm", fuse_layernorm),
    ("fuse_gelu", fuse_gelu),
    # Attention before linear fusion, so Q/K/V views are traced to plain MatMul outputs' users.
    ("fuse_attention", fuse_attention),
    ("fuse_linear", fuse_linear),
    # `--quantize dynamic`: float linear layers become int8 ones (a no-op otherwise).
    ("quantize_dynamic", quantize_dynamic),
    # Q, K and V projections of one input: one GEMM, attention reading its columns.
    ("merge_parallel_linears", merge_parallel_linears),
    # Residual + LayerNorm last: the residual Add is only visible once the rest is fused.
    ("fuse_skip_layernorm", fuse_skip_layernorm),
    # What is left of elementwise chains (QDQ tails, unfused activations): one loop each.
    ("fuse_elementwise", fuse_elementwise),
    # QDQ rounding after an int8 layer into its epilogue; functions of a quantized value
    # (the QDQ GELU) by table.
    ("fuse_quant_epilogue", fuse_quant_epilogue),
    # QDQ attention whose Q, K, V and probabilities are on grids: integer products (VNNI).
    ("int8_attention", int8_attention),
    # QDQ LayerNorms write the uint8 levels their readers quantize to, and take the residual
    # stages of the layer before them.
    ("quantize_layernorm", quantize_layernorm),
    # Each linear layer's zero pattern, and its kernel: sparse where a cost model says it pays.
    ("extract_sparsity", extract_sparsity),
    # A dense QDQ layer whose output only a uint8 table (the QDQ GELU) reads: its epilogue
    # writes the table's bytes.
    ("fuse_lut_epilogue", fuse_lut_epilogue),
    # A transformer FFN's two sparse layers (fp32, or int8 with the table's bytes between them)
    # as one kernel call (its hidden panel in L2).
    ("pair_sparse_ffn", pair_sparse_ffn),
    # Must stay last: offsets depend on the final node order.
    ("plan_memory", plan_memory),
]
REQUIRED = {"specialize_shapes", "plan_memory", "lower_contrib_ops"}
PASS_NAMES = [name for name, _ in PASSES]


def check_pass_names(names) -> None:
    for name in names:
        if name not in PASS_NAMES:
            raise CompileError(f"unknown pass '{name}'; passes are: {', '.join(PASS_NAMES)}")


def run_passes(graph: Graph, bucket: int, disable=(), dump=None, on_pass=None) -> Graph:
    """Run the pipeline for one bucket. ``dump(name, graph)`` is called after each pass."""
    for name in disable:
        if name in REQUIRED:
            raise CompileError(f"pass '{name}' cannot be disabled: code generation needs it")
    g = graph.copy()
    g.meta["bucket"] = bucket
    for name, fn in PASSES:
        if name in disable:
            continue
        if on_pass:
            on_pass(name)
        try:
            g = fn(g)
        except CompileError:
            raise
        except Exception as e:  # a construct the pass did not expect: name the pass, not a trace
            raise CompileError(
                f"bucket {bucket}, pass {name}: cannot handle this model ({type(e).__name__}: "
                f"{e}); if onnx.checker.check_model accepts the model, please report it"
            ) from e
        check_invariants(g, name)
        if dump:
            dump(name, g)
    return g


def check_invariants(g: Graph, after: str) -> None:
    """Invariants between stages (cheap; always on)."""
    if PASS_NAMES.index(after) >= PASS_NAMES.index("specialize_shapes"):
        for node in g.nodes:
            for name in list(node.inputs) + list(node.outputs):
                if name and g.values[name].shape is None:
                    raise CompileError(
                        f"internal: after {after}, value '{name}' of node "
                        f"'{node.name}' has no concrete shape"
                    )


def graph_text(g: Graph) -> str:
    """A readable listing of a graph, for --dump-after."""
    lines = [f"graph {g.name} (bucket {g.meta.get('bucket')}): {len(g.nodes)} nodes"]
    for name in g.inputs:
        v = g.values[name]
        lines.append(f"  input {name}: {v.dtype} {list(v.shape or [])}")
    for n in g.nodes:
        ins = ", ".join(_describe(g, i) for i in n.inputs)
        outs = ", ".join(_describe(g, o) for o in n.outputs)
        attrs = {k: v for k, v in n.attrs.items() if not hasattr(v, "shape")}
        op = f"{n.domain}.{n.op}" if n.domain else n.op
        lines.append(f"  {outs} = {op}({ins}) {attrs if attrs else ''}  # {n.name}")
    lines.append("  outputs: " + ", ".join(g.outputs))
    return "\n".join(lines) + "\n"


def _describe(g: Graph, name: str) -> str:
    if not name:
        return "-"
    v = g.values.get(name)
    if v is None or v.shape is None:
        return name
    kind = "const " if v.is_const else ""
    return f"{name}:{kind}{v.dtype}{list(v.shape)}"
