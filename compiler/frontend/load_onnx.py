"""Load an ONNX file into the compiler's Graph, refusing what sqc cannot compile by name.

after: every node has a registered handler for its domain and opset, every attribute is one
its handler knows, Constant nodes are folded into constant values, every node input is
produced by a node, an initializer or a graph input.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import numpy_helper

from sqc.compiler.ir import CompileError, Graph, Node, UnsupportedOpError, Value
from sqc.compiler.ops import MAX_OPSET, MIN_OPSET, lookup
from sqc.compiler.ops.onnx_ops import onnx_dtype


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse an ONNX file (with its external data), turning every failure into a CompileError."""
    path = Path(path)
    if not path.exists():
        raise CompileError(f"{path}: no such file")
    if path.is_dir():
        raise CompileError(f"{path}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise CompileError(
            f"{path}: not a readable ONNX model ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'parse failed'})"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise CompileError(
            f"{path}: not an ONNX model (no graph found; is the file truncated "
            "or of another format?)"
        )
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise CompileError(f"{path}: cannot read its external data ({e})") from None
    return model


def _attr_value(attr: onnx.AttributeProto):
    v = onnx.helper.get_attribute_value(attr)
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    if isinstance(v, onnx.GraphProto):
        return v
    return v


def _dims(type_proto: onnx.TypeProto) -> list:
    shape = type_proto.tensor_type.shape
    return [
        d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
        for d in shape.dim
    ]


def import_model(model: onnx.ModelProto, name: str = "model") -> Graph:
    """Convert a parsed ModelProto into a Graph (no shapes yet beyond what is declared)."""
    g = model.graph
    opsets = {(o.domain or ""): o.version for o in model.opset_import}
    if "ai.onnx" in opsets:
        opsets.setdefault("", opsets["ai.onnx"])
    version = opsets.get("", None)
    if version is None or not (MIN_OPSET <= version <= MAX_OPSET):
        raise CompileError(
            f"model uses ai.onnx opset {version}; sqc supports opsets {MIN_OPSET} to {MAX_OPSET}"
        )

    values: dict[str, Value] = {}
    for init in g.initializer:
        try:
            array = numpy_helper.to_array(init)
        except Exception as e:
            raise CompileError(
                f"initializer '{init.name}' cannot be read ({e}); is the model "
                "truncated or its external data missing?"
            ) from None
        values[init.name] = Value(init.name, array.dtype, tuple(array.shape), array)

    inputs, declared = [], {}
    for vi in g.input:
        if vi.name in values:
            continue  # an initializer listed as an input (old exporters): a constant
        elem = vi.type.tensor_type.elem_type
        dtype = onnx_dtype(elem, Node("input", [], [], name=vi.name))
        values[vi.name] = Value(vi.name, dtype, None, None, batched=True)
        inputs.append(vi.name)
        declared[vi.name] = _dims(vi.type)
    for vi in g.output:
        declared[vi.name] = _dims(vi.type)

    nodes: list[Node] = []
    for i, n in enumerate(g.node):
        try:
            node = Node(
                n.op_type,
                list(n.input),
                list(n.output),
                {a.name: _attr_value(a) for a in n.attribute},
                n.name or f"{n.op_type}_{i}",
                n.domain if n.domain != "ai.onnx" else "",
            )
            check_supported(node, opsets.get(node.domain, None))
        except CompileError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise CompileError(
                f"node '{n.name or n.op_type + '_' + str(i)}' ({n.op_type}): malformed "
                f"attribute ({type(e).__name__}: {e}); is the model file damaged?"
            ) from None
        for out in node.outputs:
            if out:
                values.setdefault(out, Value(out))
        nodes.append(node)

    graph = Graph(
        nodes, values, inputs, [o.name for o in g.output], opsets, name, declared_shapes=declared
    )
    _check_connected(graph)
    return graph


def check_supported(node: Node, opset: int | None) -> None:
    opdef = lookup(node)
    if opdef is None:
        raise UnsupportedOpError(node, opset)
    if opset is None:
        raise UnsupportedOpError(node, opset, "has no opset import for its domain")
    if opset < opdef.since:
        raise UnsupportedOpError(node, opset, f"needs opset {opdef.since} or newer in sqc")
    unknown = sorted(set(node.attrs) - opdef.attrs)
    if unknown:
        raise UnsupportedOpError(
            node, opset, f"has attribute(s) {', '.join(unknown)} that sqc does not support"
        )


def _check_connected(graph: Graph) -> None:
    known = set(graph.inputs) | {k for k, v in graph.values.items() if v.is_const}
    for node in graph.nodes:
        for i in node.inputs:
            if i and i not in known:
                raise CompileError(
                    f"node '{node.name}' ({node.op}) reads '{i}', which no node, "
                    "initializer or graph input produces (truncated or "
                    "unsorted model?)"
                )
        known.update(o for o in node.outputs if o)
    for out in graph.outputs:
        if out not in known:
            raise CompileError(f"graph output '{out}' is not produced by any node")


def load_onnx(path: str | os.PathLike) -> Graph:
    """Read and import an ONNX file; the entry point of the compiler frontend."""
    model = read_model(path)
    return import_model(model, Path(path).stem)
