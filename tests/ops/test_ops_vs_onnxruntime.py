"""Layer 1: each op, as onnx.helper builds it, compiled by sqc and run next to onnxruntime.

Every case is a small graph whose inputs are [batch, sequence, ...]. The cases of one opset are
merged into one model (names prefixed by the case), so the suite pays for one C build per opset;
each case still gets its own test and its own tolerance row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from tests.conftest import ort_run
from tests.tolerances import TOLERANCE, relative_error

SEQ = 8
F = 16
rng = np.random.default_rng(0)


@dataclass
class Case:
    name: str
    nodes: list
    inputs: list  # (name, elem_type, dims after batch, "sequence" where the bucket goes)
    outputs: list  # (name, elem_type)
    tolerance: str = "f32_elementwise"
    inits: list = field(default_factory=list)
    positive: bool = False  # inputs drawn > 0 (Sqrt, Log, Pow)


def n(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


X = [("x", T.FLOAT, ["sequence", F])]
XY = X + [("y", T.FLOAT, ["sequence", F])]
Y_OUT = [("out", T.FLOAT)]


def unary(op, tol="f32_transcendental", positive=False):
    return Case(op, [n(op, ["x"], ["out"])], X, Y_OUT, tol, positive=positive)


def cases(opset: int) -> list[Case]:
    c = [unary(op) for op in ("Exp", "Tanh", "Erf", "Sigmoid")]
    c += [
        unary(op, "f32_elementwise")
        for op in ("Neg", "Abs", "Floor", "Ceil", "Relu", "Sign", "Identity")
    ]
    c += [
        unary("Sqrt", positive=True),
        unary("Log", positive=True),
        unary("Reciprocal", "f32_elementwise", positive=True),
    ]
    for op in ("Add", "Sub", "Mul", "Div"):
        c.append(
            Case(
                f"{op}_broadcast_row",
                [n(op, ["x", "b"], ["out"])],
                X,
                Y_OUT,
                inits=[const("b", rng.standard_normal(F).astype(np.float32) + 3)],
            )
        )
        c.append(Case(f"{op}_batched", [n(op, ["x", "y"], ["out"])], XY, Y_OUT))
    c.append(
        Case(
            "Mul_broadcast_column",
            [n("Mul", ["x", "y"], ["out"])],
            [("x", T.FLOAT, ["sequence", F]), ("y", T.FLOAT, ["sequence", 1])],
            Y_OUT,
        )
    )
    c.append(
        Case(
            "Sub_scalar_first",
            [n("Sub", ["one", "x"], ["out"])],
            X,
            Y_OUT,
            inits=[const("one", np.float32(1.0))],
        )
    )
    for e in (2.0, 3.0, 0.5, 1.7):
        c.append(
            Case(
                f"Pow_{e}",
                [n("Pow", ["x", "e"], ["out"])],
                X,
                Y_OUT,
                "f32_transcendental",
                [const("e", np.float32(e))],
                positive=True,
            )
        )
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        c.append(
            Case(
                f"{op}_int",
                [n(op, ["i", "j"], ["out"])],
                [("i", T.INT64, ["sequence"]), ("j", T.INT64, ["sequence"])],
                [("out", T.BOOL)],
                "exact",
            )
        )
    for op in ("And", "Or", "Xor"):
        c.append(
            Case(
                op,
                [
                    n("Greater", ["x", "zero"], ["p"]),
                    n("Less", ["y", "zero"], ["q"]),
                    n(op, ["p", "q"], ["out"]),
                ],
                XY,
                [("out", T.BOOL)],
                "exact",
                [const("zero", np.float32(0))],
            )
        )
    c.append(
        Case(
            "Not",
            [n("Greater", ["x", "zero"], ["p"]), n("Not", ["p"], ["out"])],
            X,
            [("out", T.BOOL)],
            "exact",
            [const("zero", np.float32(0))],
        )
    )
    c.append(
        Case(
            "Where",
            [n("Greater", ["x", "zero"], ["p"]), n("Where", ["p", "x", "y"], ["out"])],
            XY,
            Y_OUT,
            "exact",
            [const("zero", np.float32(0))],
        )
    )
    c.append(
        Case(
            "Where_mask_fill",
            [n("Equal", ["i", "zero"], ["p"]), n("Where", ["p", "fill", "x"], ["out"])],
            [("i", T.INT64, [1, "sequence"]), ("x", T.FLOAT, [F, "sequence"])],
            Y_OUT,
            "exact",
            [const("zero", np.int64(0)), const("fill", np.float32(-3.4028235e38))],
        )
    )
    c.append(
        Case(
            "Cast_float_int64",
            [n("Cast", ["x"], ["out"], to=T.INT64)],
            X,
            [("out", T.INT64)],
            "exact",
        )
    )
    c.append(
        Case(
            "Cast_int64_float",
            [n("Cast", ["i"], ["out"], to=T.FLOAT)],
            [("i", T.INT64, ["sequence"])],
            Y_OUT,
            "exact",
        )
    )
    c.append(
        Case(
            "Cast_bool_float",
            [n("Greater", ["x", "zero"], ["p"]), n("Cast", ["p"], ["out"], to=T.FLOAT)],
            X,
            Y_OUT,
            "exact",
            [const("zero", np.float32(0))],
        )
    )
    for op in ("Max", "Min", "Sum"):
        c.append(
            Case(
                f"{op}_variadic",
                [n(op, ["x", "y", "b"], ["out"])],
                XY,
                Y_OUT,
                inits=[const("b", np.float32(0.25))],
            )
        )
    c.append(
        Case(
            "MatMul_const_weight",
            [n("MatMul", ["x", "w"], ["out"])],
            X,
            Y_OUT,
            "f32_matmul",
            [const("w", rng.standard_normal((F, 24)).astype(np.float32))],
        )
    )
    c.append(
        Case(
            "MatMul_bias_gelu",
            [
                n("MatMul", ["x", "w"], ["h"]),
                n("Add", ["h", "b"], ["g"]),
                n("Div", ["g", "sq2"], ["d"]),
                n("Erf", ["d"], ["e"]),
                n("Add", ["e", "one"], ["e1"]),
                n("Mul", ["g", "e1"], ["m"]),
                n("Mul", ["m", "half"], ["out"]),
            ],
            X,
            Y_OUT,
            "f32_matmul",
            [
                const("w", rng.standard_normal((F, 40)).astype(np.float32)),
                const("b", rng.standard_normal(40).astype(np.float32)),
                const("sq2", np.float32(1.4142135)),
                const("one", np.float32(1)),
                const("half", np.float32(0.5)),
            ],
        )
    )
    c.append(
        Case(
            "MatMul_batched",
            [n("MatMul", ["x", "y"], ["out"])],
            [("x", T.FLOAT, ["sequence", F]), ("y", T.FLOAT, [F, "sequence"])],
            Y_OUT,
            "f32_matmul",
        )
    )
    c.append(
        Case(
            "Gemm_transB",
            [n("Gemm", ["g", "w", "b"], ["out"], transB=1, alpha=0.5, beta=2.0)],
            [("g", T.FLOAT, [F])],
            Y_OUT,
            "f32_matmul",
            [
                const("w", rng.standard_normal((12, F)).astype(np.float32)),
                const("b", rng.standard_normal(12).astype(np.float32)),
            ],
        )
    )
    c.append(
        Case("Softmax_last", [n("Softmax", ["x"], ["out"], axis=-1)], X, Y_OUT, "f32_normalization")
    )
    if opset >= 17:
        c.append(
            Case(
                "LayerNormalization",
                [n("LayerNormalization", ["x", "s", "b"], ["out"], axis=-1, epsilon=1e-5)],
                X,
                Y_OUT,
                "f32_normalization",
                [
                    const("s", rng.standard_normal(F).astype(np.float32)),
                    const("b", rng.standard_normal(F).astype(np.float32)),
                ],
            )
        )
    axes_in = opset >= 18
    c.append(
        Case(
            "ReduceMean_last",
            [
                n(
                    "ReduceMean",
                    ["x"] + (["ax"] if axes_in else []),
                    ["out"],
                    **({} if axes_in else {"axes": [-1]}),
                )
            ],
            X,
            Y_OUT,
            "f32_normalization",
            [const("ax", np.array([-1]))] if axes_in else [],
        )
    )
    c.append(
        Case(
            "ReduceSum_seq_nokeep",
            [n("ReduceSum", ["x", "ax"], ["out"], keepdims=0)],
            X,
            Y_OUT,
            "f32_normalization",
            [const("ax", np.array([1]))],
        )
    )
    c.append(
        Case(
            "ReduceMax_last",
            [
                n(
                    "ReduceMax",
                    ["x"] + (["ax"] if axes_in else []),
                    ["out"],
                    **({} if axes_in else {"axes": [2]}),
                )
            ],
            X,
            Y_OUT,
            "exact",
            [const("ax", np.array([2]))] if axes_in else [],
        )
    )
    c.append(Case("Transpose", [n("Transpose", ["x"], ["out"], perm=[0, 2, 1])], X, Y_OUT, "exact"))
    c.append(
        Case(
            "Reshape_split_heads",
            [n("Reshape", ["x", "s"], ["r"]), n("Transpose", ["r"], ["out"], perm=[0, 2, 1, 3])],
            X,
            Y_OUT,
            "exact",
            [const("s", np.array([0, 0, 4, F // 4]))],
        )
    )
    c.append(
        Case(
            "Shape_subgraph_Reshape",
            [
                n("Shape", ["x"], ["sh"]),
                n("Gather", ["sh", "zero"], ["b"], axis=0),
                n("Unsqueeze", ["b", "ax0"], ["bu"]),
                n("Concat", ["bu", "minus1"], ["target"], axis=0),
                n("Reshape", ["x", "target"], ["out"]),
            ],
            X,
            Y_OUT,
            "exact",
            [
                const("zero", np.array(0)),
                const("ax0", np.array([0])),
                const("minus1", np.array([-1])),
            ],
        )
    )
    c.append(
        Case(
            "Flatten_Unsqueeze_Squeeze",
            [
                n("Flatten", ["x"], ["f"], axis=1),
                n("Unsqueeze", ["f", "a"], ["u"]),
                n("Squeeze", ["u", "a"], ["out"]),
            ],
            X,
            Y_OUT,
            "exact",
            [const("a", np.array([2]))],
        )
    )
    c.append(
        Case("Concat_last", [n("Concat", ["x", "y", "x"], ["out"], axis=-1)], XY, Y_OUT, "exact")
    )
    c.append(
        Case(
            "Split_given",
            [n("Split", ["x", "sp"], ["out", "out2"], axis=-1)],
            X,
            [("out", T.FLOAT), ("out2", T.FLOAT)],
            "exact",
            [const("sp", np.array([5, F - 5]))],
        )
    )
    c.append(
        Case(
            "Slice_steps",
            [n("Slice", ["x", "st", "en", "ax", "sp"], ["out"])],
            X,
            Y_OUT,
            "exact",
            [
                const("st", np.array([1, -2])),
                const("en", np.array([7, 0])),
                const("ax", np.array([1, 2])),
                const("sp", np.array([2, -3])),
            ],
        )
    )
    c.append(
        Case(
            "Gather_embedding",
            [n("Gather", ["table", "i"], ["out"])],
            [("i", T.INT64, ["sequence"])],
            Y_OUT,
            "exact",
            [const("table", rng.standard_normal((50, F)).astype(np.float32))],
        )
    )
    c.append(
        Case(
            "Gather_int32_ids",
            [n("Cast", ["i"], ["i32"], to=T.INT32), n("Gather", ["table", "i32"], ["out"])],
            [("i", T.INT64, ["sequence"])],
            Y_OUT,
            "exact",
            [const("table", rng.standard_normal((50, F)).astype(np.float32))],
        )
    )
    c.append(
        Case(
            "Gather_const_index_batched_data",
            [n("Gather", ["x", "idx"], ["out"], axis=2)],
            X,
            Y_OUT,
            "exact",
            [const("idx", np.array([[3, 0], [-1, 5]]))],
        )
    )
    c.append(
        Case(
            "Expand",
            [n("Expand", ["y", "s"], ["out"])],
            [("y", T.FLOAT, [1, "sequence"])],
            Y_OUT,
            "exact",
            [const("s", np.array([1, 3, SEQ]))],
        )
    )
    c.append(
        Case(
            "Tile",
            [n("Tile", ["y", "r"], ["out"])],
            [("y", T.FLOAT, ["sequence", 1])],
            Y_OUT,
            "exact",
            [const("r", np.array([1, 1, 3]))],
        )
    )
    c.append(
        Case(
            "CumSum",
            [n("CumSum", ["i", "ax"], ["out"])],
            [("i", T.INT64, ["sequence"])],
            [("out", T.INT64)],
            "exact",
            [const("ax", np.array(1))],
        )
    )
    c.append(
        Case(
            "CumSum_exclusive_reverse",
            [n("CumSum", ["x", "ax"], ["out"], exclusive=1, reverse=1)],
            X,
            Y_OUT,
            "f32_elementwise",
            [const("ax", np.array(1))],
        )
    )
    c.append(
        Case(
            "Range_ConstantOfShape",
            [
                n("Shape", ["i"], ["sh"]),
                n(
                    "ConstantOfShape",
                    ["sh"],
                    ["ones"],
                    value=numpy_helper.from_array(np.array([1], np.int64)),
                ),
                n("CumSum", ["ones", "ax"], ["pos"]),
                n("Add", ["pos", "i"], ["out"]),
            ],
            [("i", T.INT64, ["sequence"])],
            [("out", T.INT64)],
            "exact",
            [const("ax", np.array(1))],
        )
    )
    return c


def build_zoo(opset: int) -> tuple[onnx.ModelProto, list[Case]]:
    """Merge every case into one model; names are prefixed by the case name."""
    all_cases = cases(opset)
    return merge_cases(all_cases, opset, f"zoo{opset}"), all_cases


def merge_cases(all_cases, opset: int, name: str) -> onnx.ModelProto:
    """One model holding every case (anything with name, nodes, inputs, outputs, inits), each
    case's names prefixed by its own, inputs given a leading "batch" axis."""
    nodes, inputs, outputs, inits = [], [], [], []
    for case in all_cases:
        p = case.name + "__"
        for k, node in enumerate(case.nodes):
            node = onnx.NodeProto.FromString(node.SerializeToString())
            node.input[:] = [p + i if i else "" for i in node.input]
            node.output[:] = [p + o for o in node.output]
            node.name = f"{p}{node.op_type}_{k}"
            nodes.append(node)
        for name, elem, dims in case.inputs:
            inputs.append(helper.make_tensor_value_info(p + name, elem, ["batch"] + dims))
        for name, elem in case.outputs:
            outputs.append(helper.make_tensor_value_info(p + name, elem, None))
        for init in case.inits:
            init = onnx.TensorProto.FromString(init.SerializeToString())
            init.name = p + init.name
            inits.append(init)
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def feeds_for(model: onnx.ModelProto, all_cases, batch: int) -> dict:
    positive = {c.name for c in all_cases if c.positive}
    feeds = {}
    for vi in model.graph.input:
        dims = [
            batch if d.dim_param == "batch" else SEQ if d.dim_param else d.dim_value
            for d in vi.type.tensor_type.shape.dim
        ]
        if vi.type.tensor_type.elem_type == T.INT64:
            feeds[vi.name] = rng.integers(0, 4, dims).astype(np.int64)
        else:
            x = rng.standard_normal(dims).astype(np.float32) * 2
            feeds[vi.name] = np.abs(x) + 0.05 if vi.name.split("__")[0] in positive else x
    return feeds


OPSETS = (14, 17, 18)


@pytest.fixture(scope="module")
def zoo(compile_onnx):
    """zoo(opset) -> (results by batch, cases): one compiled model per opset, built once."""
    built = {}

    def get(opset):
        if opset not in built:
            model, all_cases = build_zoo(opset)
            engine = compile_onnx(model, buckets=(SEQ,), max_batch_size=4)
            results = {}
            for batch in (1, 3):
                feeds = feeds_for(model, all_cases, batch)
                got = engine.run(feeds)
                want = ort_run(model, feeds)
                results[batch] = dict(zip(engine.output_names, zip(got, want)))
            built[opset] = results, {c.name: c for c in all_cases}
        return built[opset]

    return get


@pytest.mark.parametrize("opset,case_name", [(o, c.name) for o in OPSETS for c in cases(o)])
def test_op_matches_onnxruntime(zoo, opset, case_name):
    results, all_cases = zoo(opset)
    case = all_cases[case_name]
    for batch, outputs in results.items():
        for name, _ in case.outputs:
            got, want = outputs[f"{case_name}__{name}"]
            assert got.dtype == want.dtype
            err = relative_error(got, want)
            assert err <= TOLERANCE[case.tolerance], (
                f"opset {opset} batch {batch}: {name} error {err:.2e} > {case.tolerance}"
            )


def test_matmul_shape_rule_is_numpys():
    """MatMul's, MatMulInteger's and QLinearMatMul's shape rule (from the shapes alone) gives
    np.matmul's output shape, and refuses what np.matmul refuses: 1-D operands, broadcast batch
    axes, inner dimensions that differ, scalars."""
    import itertools

    from sqc.compiler.ops.onnx_ops import matmul_shape

    shapes = [(), (3,), (4,), (2, 3), (3, 4), (4, 3), (5, 2, 3), (1, 3, 4), (5, 1, 3, 4)]
    shapes += [(2, 1, 3), (7, 3, 2), (1, 3), (6, 3, 4)]
    refused = 0
    for sa, sb in itertools.product(shapes, repeat=2):
        try:
            want = np.matmul(np.zeros(sa), np.zeros(sb)).shape
        except ValueError:
            with pytest.raises(ValueError, match="matmul"):
                matmul_shape(sa, sb)
            refused += 1
            continue
        assert matmul_shape(sa, sb) == want, (sa, sb)
    assert 0 < refused < len(shapes) ** 2
