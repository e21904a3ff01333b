"""Quantization ops, compiled by sqc and run next to onnxruntime: integer results bit-exact.

QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger and QLinearMatMul over
per-tensor / per-channel parameters, uint8 / int8, zero and non-zero zero points; inputs hit
rounding ties (x = k/2 steps) and saturation. Then the three folded forms of an int8 linear
layer (onnxruntime's quantize_dynamic, QDQ, QLinearMatMul) become sqc.QLinear and still match.

One merged model per opset (as in test_ops_vs_onnxruntime.py). DynamicQuantizeLinear is
compared at batch 1 only: sqc takes each example's own range (an answer never depends on the
other requests of a batch), onnxruntime the whole batch tensor's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from tests.conftest import ort_run
from tests.ops.test_ops_vs_onnxruntime import merge_cases
from tests.tolerances import TOLERANCE, relative_error

SEQ = 8
K = 40  # feature dim: not a multiple of 4, 16 or 64, so every kernel tail is taken
N = 35
rng = np.random.default_rng(7)
STEP = 0.05  # the activation scale of the cases below


@dataclass
class Case:
    name: str
    nodes: list
    inputs: list  # (name, elem_type, dims after batch)
    outputs: list  # (name, elem_type)
    tolerance: str = "exact"
    inits: list = field(default_factory=list)
    per_example: bool = False  # compared at batch 1 only (DynamicQuantizeLinear inside)
    data: str = "ties"  # how float inputs are drawn: ties, normal, positive, negative, zeros


def n(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def c(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


XF = [("x", T.FLOAT, ["sequence", K])]
XU8 = [("x", T.UINT8, ["sequence", K])]
XS8 = [("x", T.INT8, ["sequence", K])]


def _weights(dtype):
    if dtype == np.uint8:
        return rng.integers(0, 256, (K, N)).astype(np.uint8)
    return rng.integers(-128, 128, (K, N)).astype(np.int8)


def cases(opset: int) -> list[Case]:
    out: list[Case] = []
    s_col = (rng.uniform(0.5, 2.0, K) * STEP).astype(np.float32)
    for dt, zp in ((np.uint8, 128), (np.uint8, 3), (np.int8, 0), (np.int8, -5)):
        tag = f"{np.dtype(dt).name}_zp{zp}"
        out.append(
            Case(
                f"Quantize_tensor_{tag}",
                [n("QuantizeLinear", ["x", "s", "z"], ["out"])],
                XF,
                [("out", T.UINT8 if dt == np.uint8 else T.INT8)],
                inits=[c("s", np.float32(STEP)), c("z", np.array(zp, dt))],
            )
        )
        out.append(
            Case(
                f"Quantize_channel_{tag}",
                [n("QuantizeLinear", ["x", "s", "z"], ["out"], axis=2)],
                XF,
                [("out", T.UINT8 if dt == np.uint8 else T.INT8)],
                inits=[c("s", s_col), c("z", np.full(K, zp, dt))],
            )
        )
        out.append(
            Case(
                f"Dequantize_tensor_{tag}",
                [n("DequantizeLinear", ["x", "s", "z"], ["out"])],
                XU8 if dt == np.uint8 else XS8,
                [("out", T.FLOAT)],
                inits=[c("s", np.float32(STEP)), c("z", np.array(zp, dt))],
            )
        )
        out.append(
            Case(
                f"Dequantize_channel_{tag}",
                [n("DequantizeLinear", ["x", "s", "z"], ["out"], axis=-1)],
                XU8 if dt == np.uint8 else XS8,
                [("out", T.FLOAT)],
                inits=[c("s", s_col), c("z", np.full(K, zp, dt))],
            )
        )
    out.append(
        Case(
            "Quantize_no_zero_point",
            [n("QuantizeLinear", ["x", "s"], ["out"])],
            XF,
            [("out", T.UINT8)],
            inits=[c("s", np.float32(STEP))],
        )
    )
    out.append(
        Case(
            "Dequantize_int32",
            [n("DequantizeLinear", ["x", "s"], ["out"])],
            [("x", T.INT32, ["sequence", K])],
            [("out", T.FLOAT)],
            inits=[c("s", np.float32(1e-4))],
        )
    )
    for data in ("normal", "positive", "negative", "zeros", "ties"):
        out.append(
            Case(
                f"DynamicQuantize_{data}",
                [n("DynamicQuantizeLinear", ["x"], ["y", "ys", "yz"])],
                XF,
                [("y", T.UINT8), ("ys", T.FLOAT), ("yz", T.UINT8)],
                per_example=True,
                data=data,
            )
        )
    for adt, bdt in ((np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)):
        tag = f"{np.dtype(adt).name}_{np.dtype(bdt).name}"
        a_zp = np.array(100 if adt == np.uint8 else -3, adt)
        b_zp = (rng.integers(0, 256, N) if bdt == np.uint8 else rng.integers(-9, 9, N)).astype(bdt)
        out.append(
            Case(
                f"MatMulInteger_{tag}",
                [n("MatMulInteger", ["x", "w", "az", "bz"], ["out"])],
                XU8 if adt == np.uint8 else XS8,
                [("out", T.INT32)],
                inits=[c("w", _weights(bdt)), c("az", a_zp), c("bz", b_zp)],
            )
        )
        y_dt = adt
        out.append(
            Case(
                f"QLinearMatMul_{tag}",
                [n("QLinearMatMul", ["x", "as", "az", "w", "bs", "bz", "ys", "yz"], ["out"])],
                XU8 if adt == np.uint8 else XS8,
                [("out", T.UINT8 if y_dt == np.uint8 else T.INT8)],
                inits=[
                    c("as", np.float32(0.02)),
                    c("az", a_zp),
                    c("w", _weights(bdt)),
                    c("bs", (rng.uniform(0.5, 2, N) * 0.01).astype(np.float32)),
                    c("bz", b_zp),
                    c("ys", np.float32(0.3)),
                    c("yz", np.array(120 if y_dt == np.uint8 else 4, y_dt)),
                ],
            )
        )
    out.append(
        Case(
            "MatMulInteger_runtime_b",
            [n("MatMulInteger", ["x", "y"], ["out"])],
            XU8 + [("y", T.INT8, [K, N])],
            [("out", T.INT32)],
        )
    )
    # The folded forms (fold_quantization): QDQ around a MatMul, a lone QDQ pair (FakeQuant),
    # and onnxruntime's dynamic form with a bias.
    w = (rng.standard_normal((K, N)) * 0.1).astype(np.float32)
    ws = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int8)
    out.append(
        Case(
            "QDQ_MatMul_per_channel",
            [
                n("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                n("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                n("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
                n("MatMul", ["xd", "wd"], ["out"]),
            ],
            XF,
            [("out", T.FLOAT)],
            "int8_linear",
            inits=[
                c("s", np.float32(STEP)),
                c("z", np.uint8(131)),
                c("wq", wq),
                c("ws", ws),
                c("wz", np.zeros(N, np.int8)),
            ],
        )
    )
    out.append(
        Case(
            "QDQ_pair_s8",
            [
                n("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                n("DequantizeLinear", ["xq", "s", "z"], ["out"]),
            ],
            XF,
            [("out", T.FLOAT)],
            inits=[c("s", np.float32(STEP)), c("z", np.int8(-7))],
        )
    )
    # A residual-style sum of two dequantized values, quantized again on a grid of twice their
    # step: with "ties" data half the sums fall on a rounding tie of the outer grid, decided by
    # the last bit of the two rounded products and their rounded sum. onnxruntime rounds each
    # product, then the sum; an fma of one product into the add (gcc's contraction of the
    # elementwise map) decides some of them the other way. The sum is an output too: otherwise
    # onnxruntime fuses DQ-Add-Q into its QLinearAdd, which rounds differently from the graph.
    out.append(
        Case(
            "QDQ_sum_of_dequantized",
            [
                n("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                n("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                n("QuantizeLinear", ["y", "s", "z"], ["yq"]),
                n("DequantizeLinear", ["yq", "s", "z"], ["yd"]),
                n("Add", ["xd", "yd"], ["sum"]),
                n("QuantizeLinear", ["sum", "s2", "z"], ["sq"]),
                n("DequantizeLinear", ["sq", "s2", "z"], ["out"]),
            ],
            XF + [("y", T.FLOAT, ["sequence", K])],
            [("sum", T.FLOAT), ("out", T.FLOAT)],
            inits=[c("s", np.float32(STEP)), c("s2", np.float32(2 * STEP)), c("z", np.int8(0))],
        )
    )
    out.append(
        Case(
            "Dynamic_MatMul_bias",
            [
                n("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
                n("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"]),
                n("Cast", ["acc"], ["accf"], to=T.FLOAT),
                n("Mul", ["xs", "ws"], ["scale"]),
                n("Mul", ["accf", "scale"], ["y"]),
                n("Add", ["b", "y"], ["out"]),
            ],
            XF,
            [("out", T.FLOAT)],
            "int8_linear",
            inits=[
                c("wq", wq),
                c("wz", np.zeros(N, np.int8)),
                c("ws", ws),
                c("b", rng.standard_normal(N).astype(np.float32)),
            ],
            per_example=True,
            data="normal",
        )
    )
    return out


def _draw(elem: int, dims: list[int], data: str) -> np.ndarray:
    if elem == T.UINT8:
        return rng.integers(0, 256, dims).astype(np.uint8)
    if elem == T.INT8:
        return rng.integers(-128, 128, dims).astype(np.int8)
    if elem == T.INT32:
        return rng.integers(-(2**20), 2**20, dims).astype(np.int32)
    if data == "ties":  # multiples of half a step: every rounding is a tie; far values saturate
        return (rng.integers(-600, 600, dims) * (STEP / 2)).astype(np.float32)
    x = rng.standard_normal(dims).astype(np.float32) * 2
    return {"positive": np.abs(x) + 0.1, "negative": -np.abs(x) - 0.1, "zeros": 0 * x}.get(data, x)


def feeds_for(model: onnx.ModelProto, all_cases: list[Case], batch: int) -> dict:
    data = {cs.name: cs.data for cs in all_cases}
    feeds = {}
    for vi in model.graph.input:
        dims = [
            batch if d.dim_param == "batch" else SEQ if d.dim_param else d.dim_value
            for d in vi.type.tensor_type.shape.dim
        ]
        feeds[vi.name] = _draw(vi.type.tensor_type.elem_type, dims, data[vi.name.split("__")[0]])
    return feeds


OPSETS = (13, 21)


@pytest.fixture(scope="module")
def quant_zoo(compile_onnx):
    built = {}

    def get(opset):
        if opset not in built:
            all_cases = cases(opset)
            model = merge_cases(all_cases, opset, f"quant{opset}")
            engine = compile_onnx(model, buckets=(SEQ,), max_batch_size=4)
            results = {}
            for batch in (1, 3):
                feeds = feeds_for(model, all_cases, batch)
                results[batch] = dict(
                    zip(engine.output_names, zip(engine.run(feeds), ort_run(model, feeds)))
                )
            built[opset] = results, {cs.name: cs for cs in all_cases}, engine
        return built[opset]

    return get


@pytest.mark.parametrize("opset,case_name", [(o, cs.name) for o in OPSETS for cs in cases(o)])
def test_quant_op_matches_onnxruntime(quant_zoo, opset, case_name):
    results, all_cases, _ = quant_zoo(opset)
    case = all_cases[case_name]
    for batch, outputs in results.items():
        if case.per_example and batch != 1:
            continue
        for name, _ in case.outputs:
            got, want = outputs[f"{case_name}__{name}"]
            assert got.dtype == want.dtype
            if TOLERANCE[case.tolerance] == 0:
                bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
                assert bad.size == 0, (
                    f"opset {opset} batch {batch}: {name}: {bad.size} of {got.size} differ, "
                    f"first at {bad[0]}: sqc {got.reshape(-1)[bad[0]]} vs onnxruntime "
                    f"{want.reshape(-1)[bad[0]]}"
                )
            else:
                err = relative_error(got, want)
                assert err <= TOLERANCE[case.tolerance], f"batch {batch}: {name} error {err:.2e}"


def test_linear_forms_are_folded_to_int8_layers(quant_zoo):
    """The three linear forms run as sqc.QLinear (int8 GEMM), not as float ops."""
    import json

    _, _, engine = quant_zoo(21)
    layers = json.loads((engine.path / "manifest.json").read_text())["layers"]
    forms = {layer["name"].split("__")[0]: layer for layer in layers if layer["op"] == "QLinear"}
    assert forms["QDQ_MatMul_per_channel"]["quantization"]["form"] == "qdq"
    assert forms["Dynamic_MatMul_bias"]["quantization"]["form"] == "dynamic"
    for tag in ("uint8_int8", "uint8_uint8", "int8_int8"):
        assert forms[f"QLinearMatMul_{tag}"]["quantization"]["form"] == "qlinear"
    assert all("u8s8_gemm" in layer["kernel"] for layer in forms.values())
