"""Fold every ONNX quantized form of a linear layer into one sqc.QLinear (int8 GEMM).

patterns (root: the last node of each):
    dynamic   Mul(Cast<float>(MatMulInteger(DynamicQuantizeLinear(x).y, Wq, .zero_point, wz)),
                  Mul(DynamicQuantizeLinear(x).scale, ws))       onnxruntime quantize_dynamic
    qdq       MatMul(DequantizeLinear(QuantizeLinear(x, s, z), s, z),
                     DequantizeLinear(Wq, ws, wz, axis=1))        QDQ (quantize_static)
    qlinear   QLinearMatMul(a, as, az, Wq, bs, bz, ys, yz)        QOperator format
                  -> QuantizeLinear(sqc.QLinear(a), 1, yz)
    fakequant DequantizeLinear(QuantizeLinear(x, s, z), s, z)    per-tensor, any other reader
              -> sqc.FakeQuant(x)
    hoist     FakeQuant(View(x)) -> View(FakeQuant(x)) for Reshape, Transpose, Squeeze,
              Unsqueeze, Flatten (rounding commutes with moving data), then
              FakeQuant(FakeQuant(x)) with equal parameters -> FakeQuant(x) (idempotent):
              QDQ graphs quantize before and after every view, and attention fusion must see
              the views between a linear layer and the attention MatMuls.
Wq is a constant (uint8 or int8, [K, N]), its scales and zero points constant, per tensor or per
output column. Activation scales and zero points are constant per tensor (or computed at run
time, dynamic form).

after: each matched layer is an sqc.QLinear whose weights are int8 [K, N] (uint8 weights are
shifted by -128, zero points with them, so products are unchanged), with float32 weight scales
and int32 weight zero points per column; the integer algebra is exact (see QLinear's
semantics in compiler/ops/quant_ops.py). Runs before fold_constants: the DequantizeLinear of a
weight is still there to read the int8 data from.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.ops.quant_ops import requantize_multiplier
from sqc.compiler.passes.rewrite import Matcher, new_value, rewrite


def fold_quantization(graph):
    g = rewrite(graph, _rule_dynamic)
    g = rewrite(g, _rule_qdq)
    g = rewrite(g, _rule_qlinear_matmul)
    g = rewrite(g, _rule_fakequant)
    g = rewrite(g, _rule_hoist_fakequant)
    return rewrite(g, _rule_merge_fakequant)


def _int_weights(m: Matcher, w_name: str, zp_name: str, n_cols: int):
    """(W int8 [K, N], zero points int32 [N]) of a constant quantized weight, or None."""
    w = m.g.const(w_name)
    if w is None or w.dtype not in (np.uint8, np.int8):
        return None
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 2 or w.shape[1] != n_cols:
        return None
    zp = m.g.const(zp_name) if zp_name else np.zeros((), w.dtype)
    if zp is None or zp.size not in (1, n_cols):
        return None
    zp = np.broadcast_to(zp.reshape(-1).astype(np.int32), (n_cols,))
    if w.dtype == np.uint8:
        return (w.astype(np.int16) - 128).astype(np.int8), (zp - 128).astype(np.int32)
    return np.ascontiguousarray(w), np.ascontiguousarray(zp, dtype=np.int32)


def _per_column(c: np.ndarray | None, n_cols: int) -> np.ndarray | None:
    if c is None or c.size not in (1, n_cols) or not np.issubdtype(c.dtype, np.floating):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(-1).astype(np.float32), (n_cols,)))


def _qlinear(m: Matcher, root: Node, x: str, w, wz, ws, attrs: dict, out: str) -> Node:
    g = m.g
    inputs = [
        x,
        g.add_const(root.name + "/w_int8", w),
        "",
        "",
        g.add_const(root.name + "/w_scale", ws),
        g.add_const(root.name + "/w_zero_point", wz),
    ]
    return Node("QLinear", inputs, [out], {"act": "none", **attrs}, name=root.name, domain="sqc")


def _rule_dynamic(m: Matcher, node: Node):
    if node.op != "Mul" or node.domain:
        return None
    for a, b in ((0, 1), (1, 0)):
        cast = m.node_of(node.inputs[a], "Cast")
        if cast is None or cast.attrs.get("to") != 1 or not m.private(cast.outputs[0]):
            continue
        mmi = m.node_of(cast.inputs[0], "MatMulInteger")
        if mmi is None or not m.private(mmi.outputs[0]):
            continue
        dq = m.node_of(mmi.inputs[0], "DynamicQuantizeLinear")
        if dq is None or mmi.input(2) != dq.outputs[2] or len(dq.outputs) < 3:
            continue
        scales = m.node_of(node.inputs[b], "Mul")
        if scales is None:
            continue
        if scales.inputs[0] == dq.outputs[1]:
            ws_name = scales.inputs[1]
        elif scales.inputs[1] == dq.outputs[1]:
            ws_name = scales.inputs[0]
        else:
            continue
        n_cols = m.value(mmi.outputs[0]).shape[-1]
        weights = _int_weights(m, mmi.inputs[1], mmi.input(3), n_cols)
        ws = _per_column(m.g.const(ws_name), n_cols)
        if weights is None or ws is None:
            continue
        return [
            _qlinear(
                m,
                mmi,
                dq.inputs[0],
                *weights,
                ws,
                {"x_quant": "dynamic", "x_scale": 1.0, "x_zero_point": 0, "form": "dynamic"},
                node.outputs[0],
            )
        ]
    return None


def _activation_qparams(m: Matcher, dq: Node, q: Node) -> tuple[float, int, np.dtype] | None:
    """(scale, zero point, dtype) of a per-tensor DequantizeLinear(QuantizeLinear(x)) pair."""
    if dq.inputs[0] != q.outputs[0]:
        return None
    s_q, s_dq = m.g.const(q.inputs[1]), m.g.const(dq.inputs[1])
    z_q = m.g.const(q.input(2)) if q.input(2) else np.zeros((), np.uint8)
    z_dq = m.g.const(dq.input(2)) if dq.input(2) else np.zeros((), np.uint8)
    if any(c is None or c.size != 1 for c in (s_q, s_dq, z_q, z_dq)):
        return None
    if q.attrs.get("output_dtype") or z_q.dtype not in (np.uint8, np.int8):
        return None
    if float(s_q.reshape(())) != float(s_dq.reshape(())) or int(z_q.reshape(())) != int(
        z_dq.reshape(())
    ):
        return None
    scale = float(s_q.reshape(()))
    if not np.isfinite(scale) or scale <= 0:
        return None
    return scale, int(z_q.reshape(())), np.dtype(z_q.dtype)


def _rule_qdq(m: Matcher, node: Node):
    if node.op != "MatMul" or node.domain:
        return None
    a, b = node.inputs
    dq_w = m.node_of(b, "DequantizeLinear")
    dq_x = m.node_of(a, "DequantizeLinear")
    if dq_w is None or dq_x is None or m.g.const(a) is not None:
        return None
    q_x = m.node_of(dq_x.inputs[0], "QuantizeLinear")
    if q_x is None or not m.value(q_x.inputs[0]).batched:
        return None
    qp = _activation_qparams(m, dq_x, q_x)
    n_cols = m.value(node.outputs[0]).shape[-1]
    w = m.g.const(dq_w.inputs[0])
    if qp is None or w is None or w.ndim not in (2, 3):
        return None
    ws = m.g.const(dq_w.inputs[1])
    if ws is None or ws.size != 1 and dq_w.attrs.get("axis", 1) % w.ndim != w.ndim - 1:
        return None  # per-row (per-K) weight scales cannot move past the sum over K
    weights = _int_weights(m, dq_w.inputs[0], dq_w.input(2), n_cols)
    ws = _per_column(ws, n_cols)
    if weights is None or ws is None:
        return None
    scale, zp, dtype = qp
    return [
        _qlinear(
            m,
            node,
            q_x.inputs[0],
            *weights,
            ws,
            {
                "x_quant": "static",
                "x_scale": scale,
                "x_zero_point": zp + (128 if dtype == np.int8 else 0),
                "form": "qdq",
            },
            node.outputs[0],
        )
    ]


def _rule_qlinear_matmul(m: Matcher, node: Node):
    if node.op != "QLinearMatMul" or node.domain:
        return None
    a, a_s, a_z, b, b_s, b_z, y_s, y_z = node.inputs
    consts = [m.g.const(n) for n in (a_s, a_z, y_s, y_z)]
    if any(c is None or c.size != 1 for c in consts) or m.g.const(a) is not None:
        return None
    n_cols = m.value(node.outputs[0]).shape[-1]
    weights = _int_weights(m, b, b_z, n_cols)
    bs = _per_column(m.g.const(b_s), n_cols)
    if weights is None or bs is None:
        return None
    a_scale, a_zp, y_scale, y_zp = consts
    mult = requantize_multiplier(a_scale.reshape(()), bs, y_scale.reshape(()))
    x_dtype = np.dtype(m.value(a).dtype)
    acc = new_value(m.g, node.name + "/acc", np.float32, m.value(node.outputs[0]).shape)
    one = m.g.add_const(node.name + "/one", np.ones((), np.float32))
    lin = _qlinear(
        m,
        node,
        a,
        *weights,
        mult,
        {
            "x_quant": "s8" if x_dtype == np.int8 else "u8",
            "x_scale": 1.0,
            "x_zero_point": int(a_zp.reshape(())),
            "form": "qlinear",
        },
        acc,
    )
    requant = Node(
        "QuantizeLinear", [acc, one, y_z], list(node.outputs), name=node.name + "/requant"
    )
    return [lin, requant]


def _rule_fakequant(m: Matcher, node: Node):
    if node.op != "DequantizeLinear" or node.domain:
        return None
    q = m.node_of(node.inputs[0], "QuantizeLinear")
    if q is None or not m.value(q.inputs[0]).batched:
        return None
    if m.value(q.inputs[0]).dtype != np.float32:
        return None
    qp = _activation_qparams(m, node, q)
    if qp is None:
        return None
    scale, zp, dtype = qp
    return [
        Node(
            "FakeQuant",
            [q.inputs[0]],
            list(node.outputs),
            {"scale": scale, "zero_point": zp, "dtype": dtype.name},
            name=node.name,
            domain="sqc",
        )
    ]


HOISTABLE_VIEWS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _rule_hoist_fakequant(m: Matcher, node: Node):
    if node.op != "FakeQuant" or node.domain != "sqc":
        return None
    view = m.node_of(node.inputs[0], HOISTABLE_VIEWS)
    if view is None or not m.private(view.outputs[0]):
        return None
    src = view.inputs[0]
    rounded = new_value(m.g, src + "/fakequant", np.float32, m.value(src).shape)
    return [
        Node("FakeQuant", [src], [rounded], dict(node.attrs), name=node.name, domain="sqc"),
        Node(
            view.op,
            [rounded] + list(view.inputs[1:]),
            list(node.outputs),
            dict(view.attrs),
            name=view.name,
        ),
    ]


def _rule_merge_fakequant(m: Matcher, node: Node):
    if node.op != "FakeQuant" or node.domain != "sqc":
        return None
    inner = m.node_of(node.inputs[0], "FakeQuant", domain="sqc")
    if inner is None or inner.attrs != node.attrs:
        return None
    return [
        Node(
            "FakeQuant",
            list(inner.inputs),
            list(node.outputs),
            dict(node.attrs),
            name=node.name,
            domain="sqc",
        )
    ]
