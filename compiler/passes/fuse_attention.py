"""Fuse scaled dot-product attention with its mask into one sqc.Attention.

pattern (root: the second MatMul):
    scores = MatMul(Q, Kt) [* or / scalar]       Q: [1, H, Sq, D], Kt: [1, H, D, Sk]
    probs  = Softmax(scores [+ mask], axis=-1)   mask broadcastable to [1, H, Sq, Sk]
    out    = MatMul(probs, V)                    V: [1, H, Sk, D]
Q, K and V are traced back through Transpose, Reshape and scalar Mul/Div to the buffers the
linear layers wrote ([1, S, H*D] typically), so the fused op reads them in place through
strided views and the head split costs no copy; scalar factors on the way join ``scale``.
A Transpose(0, 2, 1, 3) + Reshape to [1, Sq, H*D] after the output is folded into the op's
output view, so the heads are merged in place too (also across an sqc.FakeQuant).
QDQ graphs round to a quantization grid between the steps (sqc.FakeQuant, made by
fold_quantization): on the raw scores, after the scale, after the mask and on the
probabilities; these join the op as its ``quant`` stages, computed in the kernel in the
graph's order.
after: no Softmax between two batched MatMuls remains; sqc.Attention computes it.
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import Node
from sqc.compiler.passes.rewrite import Matcher, new_value, rewrite

VIEW_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")


def fuse_attention(graph):
    return rewrite(rewrite(graph, _rule_attention), _rule_output_layout)


def contiguous_strides(shape) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def trace_view(m: Matcher, name: str):
    """(base, offset, strides, scale) such that name[i] = scale * base.flat[offset + i.strides]."""
    shape = m.value(name).shape
    n = m.node_of(name)
    if n is not None and not n.domain:
        if n.op in ("Mul", "Div"):
            for a, b in ((0, 1), (1, 0)):
                c = m.scalar(n.inputs[b])
                if c is None or m.value(n.inputs[a]).shape != shape or (n.op == "Div" and a == 1):
                    continue
                base, off, st, scale = trace_view(m, n.inputs[a])
                return base, off, st, scale * (c if n.op == "Mul" else 1.0 / c)
        if n.op == "Transpose":
            base, off, st, scale = trace_view(m, n.inputs[0])
            perm = n.attrs.get("perm") or list(range(len(st)))[::-1]
            return base, off, [st[p] for p in perm], scale
        if n.op in VIEW_OPS:
            src = n.inputs[0]
            base, off, st, scale = trace_view(m, src)
            src_shape = m.value(src).shape
            if (
                off == 0
                and st == contiguous_strides(src_shape)
                and m.value(base).numel == m.value(src).numel
            ):
                return base, 0, contiguous_strides(shape), scale
    return name, 0, contiguous_strides(shape), 1.0


def _split_leading(shape) -> tuple | None:
    """[1, H, a, b] or [H, a, b] -> (H, a, b); anything else -> None."""
    if len(shape) == 4 and shape[0] == 1:
        return tuple(shape[1:])
    if len(shape) == 3:
        return tuple(shape)
    return None


def _rule_attention(m: Matcher, node: Node):
    if node.op != "MatMul" or node.domain:
        return None
    stages = [None, None, None, None]  # FakeQuant attrs: scores, scaled, masked, probs
    probs = node.inputs[0]
    fq = _fake_quant(m, probs)
    if fq is not None:
        stages[3], probs = fq.attrs, fq.inputs[0]
    soft = m.node_of(probs, "Softmax")
    if soft is None:
        return None
    v_dims = _split_leading(m.value(node.inputs[1]).shape)
    s_shape = m.value(soft.inputs[0]).shape
    s_dims = _split_leading(s_shape)
    axis = soft.attrs.get("axis", -1 if m.g.opset_of(soft) >= 13 else 1)
    if v_dims is None or s_dims is None or axis % len(s_shape) != len(s_shape) - 1:
        return None
    scores, mask, prologue = soft.inputs[0], None, []
    fq = _fake_quant(m, scores)
    if fq is not None:
        stages[2], scores = fq.attrs, fq.inputs[0]
    add = m.node_of(scores, "Add")
    where = m.node_of(scores, "Where")
    if (
        where is not None
        and stages[2] is None
        and m.scalar(where.inputs[1]) is not None
        and _scores_matmul(m, where.inputs[2]) is not None
    ):
        # Where(masked, fill, scores) == scores + Where(masked, fill, 0) after softmax: the
        # fill (-FLT_MAX or -inf) swamps the score either way. Read the condition before its
        # Expand, so the additive mask stays [.., 1, Sk] and costs one row.
        cond = where.inputs[0]
        expand = m.node_of(cond, "Expand")
        if expand is not None:
            cond = expand.inputs[0]
        mask = new_value(m.g, where.name + "/additive", np.float32, m.value(cond).shape)
        zero = m.g.add_const(where.name + "/zero", np.float32(0))
        prologue.append(
            Node("Where", [cond, where.inputs[1], zero], [mask], name=where.name + "/additive")
        )
        scores = where.inputs[2]
    elif add is not None:
        for a, b in ((0, 1), (1, 0)):
            if _scores_matmul(m, add.inputs[a]) is not None:
                scores, mask = add.inputs[a], add.inputs[b]
                break
        else:
            return None
    qk = _scores_matmul(m, scores)
    if qk is None:
        return None
    matmul, scale, stages[0], stages[1] = qk
    H, Sq, Sk = s_dims
    D = v_dims[2]
    q_dims = _split_leading(m.value(matmul.inputs[0]).shape)
    k_dims = _split_leading(m.value(matmul.inputs[1]).shape)
    if (
        q_dims is None
        or k_dims is None
        or q_dims[:2] != (H, Sq)
        or k_dims != (H, q_dims[2], Sk)
        or v_dims != (H, Sk, D)
        or D != q_dims[2]
    ):
        return None
    q_base, q_off, q_st, q_scale = trace_view(m, matmul.inputs[0])
    k_base, k_off, k_st, k_scale = trace_view(m, matmul.inputs[1])
    v_base, v_off, v_st, v_scale = trace_view(m, node.inputs[1])
    if v_scale != 1.0:
        v_base, v_off, v_st = node.inputs[1], 0, contiguous_strides(m.value(node.inputs[1]).shape)
    inputs = [q_base, k_base, v_base]
    attrs = {
        "num_heads": H,
        "head_dim": q_dims[2],
        "seq_q": Sq,
        "seq_k": Sk,
        "scale": float(scale * q_scale * k_scale),
        "q_view": _view(q_off, q_st[-3], q_st[-2], q_st[-1]),
        "k_view": _view(k_off, k_st[-3], k_st[-1], k_st[-2]),  # Kt is [h, d, s]
        "v_view": _view(v_off, v_st[-3], v_st[-2], v_st[-1]),
        "out_view": _view(0, Sq * D, D, 1),
        "out_shape": list(m.value(node.outputs[0]).shape),
    }
    if any(stages):
        attrs["quant"] = {
            "pre_scale": float(q_scale * k_scale),
            "post_scale": float(scale),
            "stages": stages,
        }
    if mask is not None:
        mv = _mask_view(m.value(mask).shape, H, Sq, Sk)
        if mv is None or m.value(mask).dtype != np.float32:
            return None
        inputs.append(mask)
        attrs["mask_view"] = mv
    return prologue + [
        Node(
            "Attention",
            inputs,
            [node.outputs[0]],
            attrs,
            name=node.name + "/fused_attention",
            domain="sqc",
        )
    ]


def _fake_quant(m: Matcher, name: str) -> Node | None:
    """The sqc.FakeQuant producing ``name`` when nothing else reads its output."""
    fq = m.node_of(name, "FakeQuant", domain="sqc")
    return fq if fq is not None and m.private(name) else None


def _scores_matmul(m: Matcher, name: str):
    """MatMul(Q, Kt), then optionally a FakeQuant, scalar Mul/Divs, a FakeQuant:
    (matmul node, scale, first FakeQuant's attrs, second's) or None."""
    scale, after_scale, raw = 1.0, None, None
    fq = _fake_quant(m, name)
    if fq is not None:
        after_scale, name = fq.attrs, fq.inputs[0]
    while True:
        n = m.node_of(name, ("Mul", "Div", "MatMul"))
        if n is None:
            fq = _fake_quant(m, name)
            if fq is None or raw is not None:
                return None
            raw, name = fq.attrs, fq.inputs[0]
            if m.node_of(name, "MatMul") is None:
                return None
            continue
        if n.op == "MatMul":
            if raw is None and scale == 1.0 and after_scale is not None:
                raw, after_scale = after_scale, None  # MatMul -> FakeQuant, no scale: stage 0
            return n, scale, raw, after_scale
        if raw is not None:
            return None  # a scale below the first FakeQuant: not a form the kernel computes
        c = m.scalar(n.inputs[1])
        if c is not None and m.value(n.inputs[0]).batched:
            scale *= c if n.op == "Mul" else 1.0 / c
            name = n.inputs[0]
            continue
        c = m.scalar(n.inputs[0])
        if c is not None and n.op == "Mul":
            scale *= c
            name = n.inputs[1]
            continue
        return None


def _mask_view(shape, H, Sq, Sk) -> dict | None:
    shape = list(shape)
    while len(shape) > 3 and shape[0] == 1:
        shape.pop(0)
    shape = [1] * (3 - len(shape)) + shape
    if len(shape) != 3 or any(d not in (1, full) for d, full in zip(shape, (H, Sq, Sk))):
        return None
    st = contiguous_strides(shape)
    st = [0 if d == 1 else s for d, s in zip(shape, st)]
    return {"offset": 0, "stride_h": st[0], "stride_s": st[1], "stride_j": st[2]}


def _view(offset, sh, ss, sd) -> dict:
    return {"offset": int(offset), "stride_h": int(sh), "stride_s": int(ss), "stride_d": int(sd)}


def _rule_output_layout(m: Matcher, node: Node):
    """Reshape(Transpose(Attention, [0,2,1,3]), [1, Sq, H*D]) -> Attention writing [Sq, H*D]."""
    if node.op not in VIEW_OPS or node.domain:
        return None
    tr = m.node_of(node.inputs[0], "Transpose")
    if tr is None or not m.private(tr.outputs[0]):
        return None
    fq = _fake_quant(m, tr.inputs[0])
    att = m.node_of(fq.inputs[0] if fq else tr.inputs[0], "Attention", domain="sqc")
    if att is None or not m.private(att.outputs[0]):
        return None
    a = att.attrs
    H, Sq, D = a["num_heads"], a["seq_q"], a["head_dim"]
    rank = len(a["out_shape"])
    perm = tr.attrs.get("perm")
    if (rank, perm) not in ((4, [0, 2, 1, 3]), (3, [1, 0, 2])):
        return None
    out_shape = m.value(node.outputs[0]).shape
    if int(np.prod(out_shape)) != H * Sq * D or out_shape[-1] != H * D:
        return None
    attrs = dict(a, out_view=_view(0, D, H * D, 1), out_shape=list(out_shape))
    if fq is None:
        return [
            Node(
                "Attention", list(att.inputs), [node.outputs[0]], attrs, name=att.name, domain="sqc"
            )
        ]
    # Attention -> FakeQuant -> heads merged: write merged heads, round them in place after.
    merged = new_value(m.g, att.outputs[0] + "/merged", np.float32, out_shape)
    return [
        Node("Attention", list(att.inputs), [merged], attrs, name=att.name, domain="sqc"),
        Node("FakeQuant", [merged], [node.outputs[0]], dict(fq.attrs), name=fq.name, domain="sqc"),
    ]
