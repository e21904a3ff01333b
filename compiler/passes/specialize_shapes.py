"""Specialize a graph to one sequence-length bucket, for one example.

before: graph inputs have declared ONNX shapes [batch, sequence] (symbolic or fixed).
after: every value has a concrete per-example dtype and shape; values that do not depend on a
graph input (shape subgraphs: Shape -> Gather -> Concat -> Reshape, Range of positions, masks
built from shapes) are constants; every other value is batched (see ``compiler/ir.py``).
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import CompileError, Graph, UnsupportedOpError
from sqc.compiler.ops import lookup


def specialize_shapes(graph: Graph, sequence_length: int) -> Graph:
    g = graph.copy()
    # Batched values with no batch axis in the ONNX graph: DynamicQuantizeLinear's scale and
    # zero point, which sqc computes per example, and what is computed from them alone.
    g.meta["batch_free"] = set()
    for name in g.inputs:
        v = g.values[name]
        v.shape = _input_shape(name, g.declared_shapes.get(name, []), sequence_length)
        v.batched = True
    for node in g.nodes:
        try:
            _specialize_node(g, node)
        except CompileError:
            raise
        except Exception as e:  # a malformed node: too few inputs, a retyped tensor, 2**40 dims
            raise CompileError(
                f"node '{node.name}' ({node.op}): its shapes cannot be computed "
                f"({type(e).__name__}: {e}); is the model valid (onnx.checker.check_model)?"
            ) from None
    return g


def input_dims(name: str, dims: list) -> list:
    """The run-time layout of an input: "batch" first, then "sequence" for every symbolic dim
    (specialized to the bucket) and integers for fixed dims."""
    if len(dims) < 1:
        raise CompileError(
            f"input '{name}' is a scalar; sqc compiles inputs shaped [batch, sequence, ...]"
        )
    batch = dims[0]
    if isinstance(batch, int) and batch not in (0, 1):
        raise CompileError(
            f"input '{name}' has a fixed batch size {batch}; export the model with "
            "a dynamic batch axis (sqc makes batch a run-time argument)"
        )
    return ["batch"] + [d if isinstance(d, int) and d > 0 else "sequence" for d in dims[1:]]


def _input_shape(name: str, dims: list, seq: int) -> tuple[int, ...]:
    return (1,) + tuple(seq if d == "sequence" else d for d in input_dims(name, dims)[1:])


def _specialize_node(g: Graph, node) -> None:
    opdef = lookup(node)
    opset = g.opset_of(node)
    if opdef is None or (opdef.evaluate is None and opdef.infer is None):
        raise UnsupportedOpError(node, opset, "has no shape rule in sqc (was it lowered?)")
    ins = [g.values[i] if i else None for i in node.inputs]
    for pos in opdef.const_inputs:
        if pos < len(ins) and ins[pos] is not None and not ins[pos].is_const:
            raise UnsupportedOpError(
                node,
                opset,
                f"has input {pos} ('{node.inputs[pos]}') that "
                "depends on the model's inputs; sqc needs it constant",
            )
    consts = [None if v is None else v.const for v in ins]
    live = [v for v in ins if v is not None]
    if node.op == "Shape" and not node.domain:
        # The shape of a per-example value is known: this is what folds shape subgraphs.
        consts[0] = np.empty(ins[0].shape, np.bool_)
        results = _evaluate(opdef, node, consts, opset)
        _set_outputs(g, node, results, batched=False)
        return
    if all(v.is_const for v in live) and opdef.evaluate is not None:
        _set_outputs(g, node, _evaluate(opdef, node, consts, opset), batched=False)
        return
    free = g.meta.setdefault("batch_free", set())
    _check_batch_alignment(node, ins, opset, free)
    if node.op == "DynamicQuantizeLinear" and not node.domain:
        free.update(o for o in node.outputs[1:] if o)
    elif all(v.is_const or v.name in free for v in live):
        free.update(o for o in node.outputs if o)
    if opdef.infer is not None:
        try:
            specs = opdef.infer(
                node,
                [None if v is None else (np.dtype(v.dtype), v.shape, v.const) for v in ins],
                opset,
            )
        except (ValueError, IndexError) as e:
            raise _shape_error(node, ins, e) from None
        for out, spec in zip(node.outputs, specs):
            if out:
                val = g.value(out)
                val.dtype, val.shape, val.const, val.batched = (
                    np.dtype(spec[0]),
                    tuple(spec[1]),
                    None,
                    True,
                )
        return
    # Evaluate on zeros: exact shapes for the data-movement ops that have no infer rule.
    zeros = [
        c if c is not None or v is None else np.zeros(v.shape, v.dtype) for c, v in zip(consts, ins)
    ]
    results = _evaluate(opdef, node, zeros, opset)
    for out, r in zip(node.outputs, results):
        if out:
            val = g.value(out)
            val.dtype, val.shape, val.const, val.batched = r.dtype, tuple(r.shape), None, True


BROADCASTING = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Max",
    "Min",
    "Sum",
    "Where",
    "Mod",
}


def _check_batch_alignment(node, ins, opset, batch_free=frozenset()) -> None:
    """Broadcasting aligns trailing axes: two batched operands of different ranks would align
    the batch axis of one with a feature axis of the other, which only batch 1 survives.
    Values with no batch axis in the ONNX graph (``batch_free``: DynamicQuantizeLinear's
    scale, computed per example) broadcast alike whatever the other ranks, so they do not
    count."""
    if node.domain or node.op not in BROADCASTING | {"Expand"}:
        return
    ranks = {len(v.shape) for v in ins if v is not None and v.batched and v.name not in batch_free}
    if node.op == "Expand" and ins[1].is_const:
        ranks.add(max(len(ins[0].shape), len(ins[1].const)))
    if len(ranks) > 1:
        raise UnsupportedOpError(
            node,
            opset,
            "broadcasts batched operands of different ranks "
            f"{sorted(ranks)}; the batch axes would not line up",
        )


def _evaluate(opdef, node, arrays, opset):
    try:
        return opdef.evaluate(node, arrays, opset)
    except CompileError:
        raise
    except Exception as e:
        raise _shape_error(
            node, [None if a is None else np.asarray(a) for a in arrays], e
        ) from None


def _shape_error(node, ins, e: Exception) -> CompileError:
    shapes = ", ".join(str(list(v.shape)) for v in ins if v is not None)
    return CompileError(
        f"node '{node.name}' ({node.op}) cannot take the specialized shapes "
        f"{shapes} ({e}); is the bucket longer than the model's maximum sequence "
        "length (its position table)?"
    )


def _set_outputs(g: Graph, node, results, batched: bool) -> None:
    for out, r in zip(node.outputs, results):
        if out:
            r = np.asarray(r)
            val = g.value(out)
            val.dtype, val.shape, val.const, val.batched = r.dtype, tuple(r.shape), r, batched
