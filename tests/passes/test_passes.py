"""Layer 2: each pass on a small "before" graph: the expected graph after it, and the same
numbers before and after (the numpy interpreter is the oracle)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from sqc.compiler.frontend.load_onnx import import_model
from sqc.compiler.interpret import interpret
from sqc.compiler.ir import CompileError
from sqc.compiler.passes.eliminate_dead_nodes import eliminate_dead_nodes
from sqc.compiler.passes.fold_constants import fold_constants
from sqc.compiler.passes.fuse_attention import fuse_attention
from sqc.compiler.passes.fuse_gelu import fuse_gelu
from sqc.compiler.passes.fuse_layernorm import fuse_layernorm
from sqc.compiler.passes.fuse_linear import fuse_linear
from sqc.compiler.passes.fuse_skip_layernorm import fuse_skip_layernorm
from sqc.compiler.passes.lower_contrib_ops import lower_contrib_ops
from sqc.compiler.passes.merge_parallel_linears import merge_parallel_linears
from sqc.compiler.passes.plan_memory import plan_memory
from sqc.compiler.passes.specialize_shapes import specialize_shapes

S, H, HEADS = 6, 8, 2
rng = np.random.default_rng(1)


def c(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def w(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def model(nodes, inits, inputs=None, outputs=("y",), opset=17, extra_opsets=()):
    inputs = inputs or [helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H])]
    outs = [helper.make_tensor_value_info(o, T.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, "g", inputs, outs, inits)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(g, opset_imports=opsets)


def specialized(m, seq=S):
    return eliminate_dead_nodes(fold_constants(specialize_shapes(import_model(m), seq)))


def ops(g):
    return collections.Counter(f"{n.domain + '.' if n.domain else ''}{n.op}" for n in g.nodes)


def check_same(before, after, feeds):
    for a, b in zip(interpret(before, feeds), interpret(after, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def x_feeds(batch=2, seq=S):
    return {"x": rng.standard_normal((batch, seq, H)).astype(np.float32)}


def n(op, ins, outs, **kw):
    return helper.make_node(op, ins, outs, **kw)


# ------------------------------------------------------------------ specialization and folding


def test_specialize_folds_shape_subgraph_and_marks_batched():
    m = model(
        [
            n("Shape", ["x"], ["sh"]),
            n("Gather", ["sh", "one"], ["s"], axis=0),
            n("Unsqueeze", ["s", "zero"], ["su"]),
            n("Concat", ["m1", "su", "four", "two"], ["target"], axis=0),
            n("Reshape", ["x", "target"], ["y"]),
        ],
        [
            c("one", np.array(1)),
            c("zero", np.array([0])),
            c("m1", np.array([-1])),
            c("four", np.array([4])),
            c("two", np.array([2])),
        ],
    )
    g = specialize_shapes(import_model(m), S)
    assert g.values["target"].const.tolist() == [-1, S, 4, 2]
    assert g.values["y"].shape == (1, S, 4, 2) and g.values["y"].batched
    folded = fold_constants(g)
    assert ops(eliminate_dead_nodes(folded)) == {"Reshape": 1}
    check_same(g, folded, x_feeds())


def test_specialize_refuses_fixed_batch_and_mismatched_bucket():
    fixed_batch = model(
        [n("Identity", ["x"], ["y"])],
        [],
        [helper.make_tensor_value_info("x", T.FLOAT, [4, "seq", H])],
    )
    with pytest.raises(CompileError, match="fixed batch size 4"):
        specialize_shapes(import_model(fixed_batch), S)
    fixed_seq = model(
        [n("Identity", ["x"], ["y"])],
        [],
        [helper.make_tensor_value_info("x", T.FLOAT, ["b", 10, H])],
    )
    g = specialize_shapes(import_model(fixed_seq), S)  # fixed dims are kept, not bucketed
    assert g.values["x"].shape == (1, 10, H)


def test_specialize_refuses_data_dependent_reshape():
    m = model(
        [
            n("Cast", ["x"], ["xi"], to=T.INT64),
            n("ReduceMax", ["xi"], ["s"], keepdims=0),
            n("Unsqueeze", ["s", "zero"], ["target"]),
            n("Reshape", ["x", "target"], ["y"]),
        ],
        [c("zero", np.array([0]))],
        opset=13,
    )
    with pytest.raises(CompileError, match="depends on the model's inputs"):
        specialize_shapes(import_model(m), S)


# ------------------------------------------------------------------ fusions


def decomposed_layernorm(x, out, eps=1e-12, square="Pow"):
    sq = (
        [n("Pow", [f"{out}_d", "two"], [f"{out}_p"])]
        if square == "Pow"
        else [n("Mul", [f"{out}_d", f"{out}_d"], [f"{out}_p"])]
    )
    return (
        [n("ReduceMean", [x], [f"{out}_m"], axes=[-1]), n("Sub", [x, f"{out}_m"], [f"{out}_d"])]
        + sq
        + [
            n("ReduceMean", [f"{out}_p"], [f"{out}_v"], axes=[-1]),
            n("Add", [f"{out}_v", "eps"], [f"{out}_ve"]),
            n("Sqrt", [f"{out}_ve"], [f"{out}_s"]),
            n("Div", [f"{out}_d", f"{out}_s"], [f"{out}_n"]),
            n("Mul", [f"{out}_n", "gamma"], [f"{out}_g"]),
            n("Add", [f"{out}_g", "beta"], [out]),
        ]
    )


@pytest.mark.parametrize("square", ["Pow", "Mul"])
def test_fuse_layernorm_decomposed(square):
    m = model(
        decomposed_layernorm("x", "y", square=square),
        [c("two", np.float32(2)), c("eps", np.float32(1e-12)), c("gamma", w(H)), c("beta", w(H))],
        opset=14,
    )
    before = specialized(m)
    after = fuse_layernorm(before)
    assert ops(after) == {"LayerNormalization": 1}
    assert after.nodes[0].attrs["epsilon"] == pytest.approx(1e-12)
    check_same(before, after, x_feeds())


def test_fuse_layernorm_leaves_other_reductions_alone():
    m = model([n("ReduceMean", ["x"], ["m"], axes=[1]), n("Sub", ["x", "m"], ["y"])], [], opset=14)
    before = specialized(m)
    assert ops(fuse_layernorm(before)) == ops(before)


def erf_gelu(x, out):
    return [
        n("Div", [x, "sqrt2"], [f"{out}_d"]),
        n("Erf", [f"{out}_d"], [f"{out}_e"]),
        n("Add", [f"{out}_e", "one"], [f"{out}_a"]),
        n("Mul", [x, f"{out}_a"], [f"{out}_m"]),
        n("Mul", [f"{out}_m", "half"], [out]),
    ]


def tanh_gelu(x, out):
    return [
        n("Mul", [x, "half"], [f"{out}_h"]),
        n("Pow", [x, "three"], [f"{out}_p"]),
        n("Mul", [f"{out}_p", "c"], [f"{out}_pc"]),
        n("Add", [x, f"{out}_pc"], [f"{out}_s"]),
        n("Mul", [f"{out}_s", "k"], [f"{out}_sk"]),
        n("Tanh", [f"{out}_sk"], [f"{out}_t"]),
        n("Add", [f"{out}_t", "one"], [f"{out}_a"]),
        n("Mul", [f"{out}_h", f"{out}_a"], [out]),
    ]


GELU_CONSTS = [
    c("sqrt2", np.float32(1.4142135)),
    c("one", np.float32(1)),
    c("half", np.float32(0.5)),
    c("three", np.float32(3)),
    c("c", np.float32(0.044715)),
    c("k", np.float32(0.7978846)),
]


@pytest.mark.parametrize("form,kind", [(erf_gelu, "none"), (tanh_gelu, "tanh")])
def test_fuse_gelu(form, kind):
    before = specialized(model(form("x", "y"), GELU_CONSTS))
    after = fuse_gelu(before)
    assert ops(after) == {"sqc.Gelu": 1}
    assert after.nodes[0].attrs["approximation"] == kind
    check_same(before, after, x_feeds())


def test_fuse_gelu_rejects_lookalike():
    # 0.5 * x * (1 + erf(x / 2)): not GELU, the argument check must refuse it.
    consts = [c("sqrt2", np.float32(2.0))] + GELU_CONSTS[1:]
    before = specialized(model(erf_gelu("x", "y"), consts))
    assert "sqc.Gelu" not in ops(fuse_gelu(before))


def attention_nodes(mask_input="mask", scale_on_q=False):
    """BERT self-attention as torch exports it: Q/K/V linears, head split, QK^T, mask, PV."""
    nodes = []
    for t in "qkv":
        nodes += [
            n("MatMul", ["x", f"w{t}"], [f"{t}0"]),
            n("Add", [f"{t}0", f"b{t}"], [f"{t}1"]),
            n("Reshape", [f"{t}1", "heads"], [f"{t}2"]),
        ]
    nodes += [
        n("Transpose", ["q2"], ["q3"], perm=[0, 2, 1, 3]),
        n("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v2"], ["v3"], perm=[0, 2, 1, 3]),
    ]
    q = "q3"
    if scale_on_q:
        nodes.append(n("Div", ["q3", "rootd"], ["q4"]))
        q = "q4"
    nodes.append(n("MatMul", [q, "kt"], ["s0"]))
    s = "s0"
    if not scale_on_q:
        nodes.append(n("Div", ["s0", "rootd"], ["s1"]))
        s = "s1"
    nodes += [
        n("Unsqueeze", [mask_input, "ax12"], ["mu"]),
        n("Cast", ["mu"], ["mf"], to=T.FLOAT),
        n("Sub", ["one", "mf"], ["inv"]),
        n("Mul", ["inv", "big"], ["madd"]),
        n("Add", [s, "madd"], ["s2"]),
        n("Softmax", ["s2"], ["p"], axis=-1),
        n("MatMul", ["p", "v3"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx2"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx2", "merge"], ["y"]),
    ]
    inits = (
        [c(f"w{t}", w(H, H)) for t in "qkv"]
        + [c(f"b{t}", w(H)) for t in "qkv"]
        + [
            c("heads", np.array([0, 0, HEADS, H // HEADS])),
            c("rootd", np.float32(2.0)),
            c("ax12", np.array([1, 2])),
            c("one", np.float32(1)),
            c("big", np.float32(-3.4e38)),
            c("merge", np.array([0, 0, H])),
        ]
    )
    return nodes, inits


@pytest.mark.parametrize("scale_on_q", [False, True])
def test_fuse_attention_reads_heads_in_place(scale_on_q):
    nodes, inits = attention_nodes(scale_on_q=scale_on_q)
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("mask", T.INT64, ["batch", "seq"]),
    ]
    before = specialized(model(nodes, inits, inputs, opset=13))
    after = fuse_attention(before)
    hist = ops(after)
    assert hist["sqc.Attention"] == 1 and "Softmax" not in hist and "Transpose" not in hist
    att = next(x for x in after.nodes if x.op == "Attention")
    assert att.attrs["scale"] == pytest.approx(0.5)
    assert att.attrs["out_view"] == {
        "offset": 0,
        "stride_h": H // HEADS,
        "stride_s": H,
        "stride_d": 1,
    }
    mask = np.ones((2, S), np.int64)
    mask[1, 4:] = 0
    check_same(before, after, dict(x_feeds(), mask=mask))
    linear = fuse_linear(after)
    assert ops(linear)["sqc.Linear"] == 3 and "Add" not in ops(linear)
    check_same(before, linear, dict(x_feeds(), mask=mask))
    # The three projections of x: one GEMM of width 3H, attention reading its columns.
    merged = merge_parallel_linears(linear)
    assert ops(merged)["sqc.Linear"] == 1
    lin = next(x for x in merged.nodes if x.op == "Linear")
    assert merged.const(lin.inputs[1]).shape == (H, 3 * H)
    att = next(x for x in merged.nodes if x.op == "Attention")
    assert [v["offset"] for v in (att.attrs[k] for k in ("q_view", "k_view", "v_view"))] == [
        0,
        H,
        2 * H,
    ]
    assert att.attrs["q_view"]["stride_s"] == 3 * H
    check_same(before, merged, dict(x_feeds(), mask=mask))


def test_fuse_linear_bias_and_gelu():
    nodes = [n("MatMul", ["x", "w"], ["h"]), n("Add", ["b", "h"], ["hb"])] + erf_gelu("hb", "y")
    before = specialized(model(nodes, [c("w", w(H, 12)), c("b", w(12))] + GELU_CONSTS))
    after = fuse_linear(fuse_gelu(before))
    assert ops(after) == {"sqc.Linear": 1}
    assert after.nodes[0].attrs["act"] == "gelu_erf" and len(after.nodes[0].inputs) == 3
    check_same(before, after, x_feeds())


def test_fuse_linear_keeps_shared_matmul_output():
    # The MatMul result is read twice: folding the bias into it would change the other reader.
    nodes = [
        n("MatMul", ["x", "w"], ["h"]),
        n("Add", ["h", "b"], ["y"]),
        n("Mul", ["h", "h"], ["z"]),
    ]
    before = specialized(model(nodes, [c("w", w(H, 12)), c("b", w(12))], outputs=("y", "z")))
    after = fuse_linear(before)
    assert ops(after) == {"sqc.Linear": 1, "Add": 1, "Mul": 1}
    check_same(before, after, x_feeds())


def test_fuse_skip_layernorm():
    nodes = [
        n("Add", ["x", "x2"], ["s"]),
        n("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5),
    ]
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("x2", T.FLOAT, ["batch", "seq", H]),
    ]
    before = specialized(model(nodes, [c("g", w(H)), c("b", w(H))], inputs))
    after = fuse_skip_layernorm(before)
    assert ops(after) == {"sqc.SkipLayerNorm": 1}
    feeds = dict(x_feeds(), x2=rng.standard_normal((2, S, H)).astype(np.float32))
    check_same(before, after, feeds)


def test_fuse_skip_layernorm_leaves_shared_sum():
    nodes = [
        n("Add", ["x", "x2"], ["s"]),
        n("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5),
        n("Mul", ["s", "two"], ["z"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("x2", T.FLOAT, ["batch", "seq", H]),
    ]
    before = specialized(
        model(
            nodes, [c("g", w(H)), c("b", w(H)), c("two", np.float32(2))], inputs, outputs=("y", "z")
        )
    )
    assert ops(fuse_skip_layernorm(before)) == ops(before)


def test_lower_contrib_ops_attention_and_skip_layernorm():
    ms = "com.microsoft"
    nodes = [
        n("Attention", ["x", "wqkv", "bqkv", "mask_index"], ["a"], domain=ms, num_heads=HEADS),
        n("SkipLayerNormalization", ["a", "x", "g", "b"], ["y"], domain=ms, epsilon=1e-12),
        n("FastGelu", ["y", "fb"], ["z"], domain=ms),
    ]
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("mask_index", T.INT32, ["batch"]),
    ]
    m = model(
        nodes,
        [c("wqkv", w(H, 3 * H)), c("bqkv", w(3 * H)), c("g", w(H)), c("b", w(H)), c("fb", w(H))],
        inputs,
        outputs=("z",),
        extra_opsets=[(ms, 1)],
    )
    g = specialize_shapes(import_model(m), S)
    lowered = lower_contrib_ops(g)
    hist = ops(lowered)
    assert hist["sqc.Attention"] == 1 and hist["sqc.Linear"] == 1 and hist["sqc.Gelu"] == 1
    assert not any(x.domain == ms for x in lowered.nodes)
    # Reference: onnxruntime runs the com.microsoft graph itself.
    from tests.conftest import ort_run

    feeds = dict(x_feeds(), mask_index=np.array([S, 3], np.int32))
    got = interpret(lowered, feeds)[0]
    want = ort_run(m, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_plan_memory_never_overlaps_live_values():
    nodes, inits = attention_nodes()
    inputs = [
        helper.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("mask", T.INT64, ["batch", "seq"]),
    ]
    g = plan_memory(fuse_linear(fuse_attention(specialized(model(nodes, inits, inputs, opset=13)))))
    mem, alias = g.meta["memory"], g.meta["alias"]
    live = {}
    for i, node in enumerate(g.nodes):
        for name in list(node.inputs) + list(node.outputs):
            if name and not g.values[name].is_const and alias.get(name, name) in mem:
                o = alias.get(name, name)
                lo, hi = live.get(o, (i, i))
                live[o] = (min(lo, i), max(hi, i))
    names = list(live)
    for a in names:
        for b in names:
            if a < b and not (live[a][1] < live[b][0] or live[b][1] < live[a][0]):
                (oa, sa), (ob, sb) = mem[a], mem[b]
                assert oa + sa <= ob or ob + sb <= oa, f"{a} and {b} overlap while both live"
    assert all(o % 64 == 0 for o, _ in mem.values())


def test_bucket_longer_than_position_table_is_named():
    from sqc.compiler.frontend.load_onnx import load_onnx
    from tests.conftest import FIXTURES

    g = load_onnx(FIXTURES / "bert_qa_opset17.onnx")  # 64 position embeddings
    with pytest.raises(CompileError, match="longer than the model's maximum sequence length"):
        specialize_shapes(g, 256)


def test_bucket_longer_than_a_fused_embeddings_position_table_is_named(tmp_path):
    """The same for ONNX Runtime's EmbedLayerNormalization (its lowering slices the table)."""
    from sqc.compiler.driver import compile_model
    from tests.conftest import FIXTURES

    with pytest.raises(CompileError, match=r"128 tokens are more than the model's position table"):
        compile_model(FIXTURES / "bert_qa_ort_optimized.onnx", [128], tmp_path / "out")


# ------------------------------------------------------------------ quantization


def _qdq(name, x, scale=0.05, zp=3, dtype=np.int8):
    """x -> QuantizeLinear -> DequantizeLinear, as QDQ exporters write it (and its inits)."""
    nodes = [
        helper.make_node("QuantizeLinear", [x, name + "_s", name + "_z"], [name + "_q"]),
        helper.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_z"], [name]),
    ]
    return nodes, [c(name + "_s", np.float32(scale)), c(name + "_z", np.array(zp, dtype))]


def test_fold_quantization_qdq_linear_hoists_and_merges_fake_quant():
    from sqc.compiler.passes.fold_quantization import fold_quantization

    wq = rng.integers(-127, 128, (H, H)).astype(np.int8)
    n1, i1 = _qdq("xd", "x")
    n2, i2 = _qdq("hd", "h", scale=0.2, zp=-4)
    n3, i3 = _qdq("td", "t", scale=0.2, zp=-4)
    nodes = (
        n1
        + [
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
            helper.make_node("MatMul", ["xd", "wd"], ["h"]),
        ]
        + n2
        + [helper.make_node("Transpose", ["hd"], ["t"], perm=[0, 2, 1])]
        + n3
    )
    nodes.append(helper.make_node("Relu", ["td"], ["y"]))
    inits = (
        i1
        + i2
        + i3
        + [
            c("wq", wq),
            c("ws", (rng.uniform(0.5, 1.5, H) * 0.01).astype(np.float32)),
            c("wz", np.zeros(H, np.int8)),
        ]
    )
    before = specialize_shapes(import_model(model(nodes, inits)), S)
    after = eliminate_dead_nodes(fold_constants(fold_quantization(before)))
    # The linear layer is int8; the two equal QDQ pairs around the Transpose become one
    # FakeQuant, moved above the Transpose (onto the linear layer's output).
    assert ops(after) == {"sqc.QLinear": 1, "sqc.FakeQuant": 1, "Transpose": 1, "Relu": 1}
    order = [n.op for n in after.nodes]
    assert order.index("FakeQuant") < order.index("Transpose")
    qlinear = next(n for n in after.nodes if n.op == "QLinear")
    assert qlinear.attrs["x_quant"] == "static" and qlinear.attrs["x_zero_point"] == 3 + 128
    check_same(before, after, x_feeds())


def test_fuse_elementwise_makes_one_loop_of_a_chain():
    from sqc.compiler.passes.fuse_elementwise import fuse_elementwise

    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"]),
        helper.make_node("Mul", ["a", "half"], ["m"]),
        helper.make_node("Erf", ["m"], ["e"]),
        helper.make_node("Sub", ["e", "x"], ["y"]),  # x read twice: one external input
        helper.make_node("Relu", ["a"], ["r"]),  # a has two readers: the chain starts after it
    ]
    inits = [c("b", w(H)), c("half", np.float32(0.5))]
    before = specialized(model(nodes, inits, outputs=("y", "r")))
    after = fuse_elementwise(before)
    assert ops(after) == {"Add": 1, "Relu": 1, "sqc.Elementwise": 1}
    fused = next(n for n in after.nodes if n.op == "Elementwise")
    assert [s[1] for s in fused.attrs["steps"]] == ["Mul", "Erf", "Sub"]
    check_same(before, after, x_feeds())


def _qdq_layer_with_tail(gelu: bool, second_layer: bool = False):
    """QDQ linear layer x @ W, then FQ(bias + FQ(h)), then either a QDQ GELU or
    FQ(that + FQ(x)) (the residual form); with ``second_layer``, the GELU feeds another QDQ
    linear layer."""
    wq = rng.integers(-127, 128, (H, H)).astype(np.int8)
    n1, i1 = _qdq("xd", "x")
    n2, i2 = _qdq("hd", "h", scale=0.03, zp=1)
    n3, i3 = _qdq("bd", "ba", scale=0.03, zp=1)
    nodes = n1 + [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["h"]),
    ]
    nodes += n2 + [helper.make_node("Add", ["bias", "hd"], ["ba"])] + n3
    inits = i1 + i2 + i3
    inits += [
        c("wq", wq),
        c("ws", (rng.uniform(0.5, 1.5, H) * 0.01).astype(np.float32)),
        c("wz", np.zeros(H, np.int8)),
        c("bias", w(H)),
    ]
    if gelu:
        n4, i4 = _qdq("ed", "e", scale=0.008, zp=0)
        n5, i5 = _qdq("pd", "p", scale=0.008, zp=-128)
        nodes += [
            helper.make_node("Div", ["bd", "sqrt2"], ["dv"]),
            helper.make_node("Erf", ["dv"], ["e"]),
            *n4,
            helper.make_node("Add", ["ed", "one"], ["p"]),
            *n5,
            helper.make_node("Mul", ["bd", "pd"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["g" if second_layer else "y"]),
        ]
        inits += i4 + i5
        if second_layer:
            n6, i6 = _qdq("gd", "g", scale=0.02, zp=-5)
            nodes += n6 + [
                helper.make_node("DequantizeLinear", ["wq2", "ws", "wz"], ["wd2"], axis=1),
                helper.make_node("MatMul", ["gd", "wd2"], ["y"]),
            ]
            inits += i6 + [c("wq2", rng.integers(-127, 128, (H, H)).astype(np.int8))]
        inits += [c("sqrt2", np.float32(1.4142135)), c("one", np.float32(1.0))]
        inits += [c("half", np.float32(0.5))]
    else:
        n4, i4 = _qdq("rd", "s", scale=0.05, zp=2)
        nodes += [helper.make_node("Add", ["bd", "xd"], ["s"]), *n4]
        nodes += [helper.make_node("Identity", ["rd"], ["y"])]
        inits += i4
    return model(nodes, inits)


@pytest.mark.parametrize("gelu", [False, True], ids=["residual", "gelu"])
def test_fuse_quant_epilogue_folds_qdq_tails_and_tabulates_gelu(gelu):
    from sqc.compiler.pipeline import run_passes

    m = _qdq_layer_with_tail(gelu)
    before = specialize_shapes(import_model(m), S)
    plain = run_passes(import_model(m), S, disable=("fuse_quant_epilogue",))
    after = run_passes(import_model(m), S)
    qlinear = next(n for n in after.nodes if n.op == "QLinear")
    post = qlinear.attrs["post"]
    assert qlinear.input(2), "the bias moved into the layer"
    if gelu:
        assert post["a"] and post["b"] and not post["r"] and not post["c"]
        lut = next(n for n in after.nodes if n.op == "Elementwise")
        assert lut.attrs["lut"]["input"] == lut.inputs.index(qlinear.outputs[0])
        assert lut.attrs["lut"]["grid"]["scale"] == post["b"]["scale"]
    else:
        assert all(post[k] for k in "abc") and qlinear.input(3), "residual with its stages"
        assert not any(n.op == "Elementwise" for n in after.nodes)
    assert sum(n.op == "Elementwise" for n in plain.nodes) > sum(
        n.op == "Elementwise" for n in after.nodes
    )
    feeds = x_feeds()
    for a, b in zip(interpret(before, feeds), interpret(after, feeds)):
        np.testing.assert_array_equal(a, b)


def test_fuse_quant_epilogue_hands_the_table_output_to_the_next_layer_as_uint8():
    from sqc.compiler.pipeline import run_passes

    m = _qdq_layer_with_tail(gelu=True, second_layer=True)
    # (the float graph's second MatMul sums dequantized floats; QLinear sums integers)
    before = run_passes(import_model(m), S, disable=("fuse_quant_epilogue",))
    after = run_passes(import_model(m), S)
    table = next(n for n in after.nodes if n.op == "Elementwise")
    assert table.attrs["lut"]["quantize"]["zero_point"] == -5 + 128  # the u8 domain
    assert np.dtype(after.values[table.outputs[0]].dtype) == np.uint8
    second = next(n for n in after.nodes if n.op == "QLinear" and n.inputs[0] == table.outputs[0])
    assert second.attrs["x_quant"] == "u8"
    feeds = x_feeds()
    for a, b in zip(interpret(before, feeds), interpret(after, feeds)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sparse", ["never", "always"])
def test_fuse_lut_epilogue_hands_the_table_to_the_layer(sparse):
    """An int8 layer (dense or sparse kernel) whose output only the (next) uint8 table reads:
    the layer writes the table's bytes (lut_next / lut_with), and the table keeps the layer's
    input alive (reads_too)."""
    from sqc.compiler.pipeline import run_passes

    graph = import_model(_qdq_layer_with_tail(gelu=True, second_layer=True))
    graph.meta["sparse"] = sparse
    plain = run_passes(graph, S, disable=("fuse_lut_epilogue",))
    after = run_passes(graph, S)
    assert not any("lut_next" in n.attrs or "lut_with" in n.attrs for n in plain.nodes)
    table = next(n for n in after.nodes if n.op == "Elementwise")
    layer = next(n for n in after.nodes if n.op == "QLinear" and n.outputs[0] in table.inputs)
    assert layer.attrs["format"] == ("sparse" if sparse == "always" else "dense")
    assert layer.attrs["lut_next"] == table.name and table.attrs["lut_with"] == layer.name
    assert table.attrs["reads_too"] == [layer.inputs[0]]

    # (plan_memory's reads_too is checked with pair_sparse_ffn's test below; here the layer
    # reads the graph input, which has no workspace bytes)
    assert layer.inputs[0] in after.inputs
    feeds = x_feeds()
    for a, b in zip(interpret(plain, feeds), interpret(after, feeds)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "no_act"])
def test_pair_sparse_ffn_pairs_two_sparse_layers_and_keeps_their_input_alive(gelu):
    """x -> Add -> X -> [MatMul + Add (+ Gelu)] -> H -> [MatMul + Add] -> y, both weights 90%
    zeros, --sparse always: the two layers are paired, and X (read by the fused call until it
    has written y) gets bytes that y's do not overlap; without the pass's reads_too the planner
    could put y over X (X's last reader is the first layer)."""
    from sqc.compiler.pipeline import run_passes

    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((H, 4 * H)).astype(np.float32) * (rng.random((H, 4 * H)) < 0.1)
    w2 = rng.standard_normal((4 * H, H)).astype(np.float32) * (rng.random((4 * H, H)) < 0.1)
    inits = [
        numpy_helper.from_array(np.ones(H, np.float32), "one"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.zeros(4 * H, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(H, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Add", ["x", "one"], ["X"]),
        helper.make_node("MatMul", ["X", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["h0"]),
    ]
    if gelu:
        nodes += [
            helper.make_node("Div", ["h0", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one_s"], ["e1"]),
            helper.make_node("Mul", ["h0", "e1"], ["g"]),
            helper.make_node("Mul", ["g", "half"], ["h"]),
        ]
        inits += [
            numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one_s"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        ]
    nodes += [
        helper.make_node("MatMul", ["h" if gelu else "h0", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    graph = import_model(model(nodes, inits))
    graph.meta["sparse"] = "always"
    plain = run_passes(graph, S, disable=("pair_sparse_ffn",))
    after = run_passes(graph, S)
    l1, l2 = [n for n in after.nodes if n.op == "Linear"]
    assert l1.attrs["ffn_next"] == l2.name and l2.attrs["ffn_with"] == l1.name
    assert l2.attrs["reads_too"] == [l1.inputs[0]]
    assert l1.attrs.get("act", "none") == ("gelu_erf" if gelu else "none")
    assert not any("ffn_next" in n.attrs for n in plain.nodes)

    def span(g, name):
        name = g.meta["alias"].get(name, name)
        offset, size = g.meta["memory"][name]
        return offset, offset + size

    (x0, x1), (y0, y1) = span(after, l1.inputs[0]), span(after, l2.outputs[0])
    assert x1 <= y0 or y1 <= x0, "y's bytes overlap X's, which the fused call still reads"
    feeds = x_feeds()
    for a, b in zip(interpret(plain, feeds), interpret(after, feeds)):
        np.testing.assert_array_equal(a, b)


def _qdq_block_with_layernorms(x_is_output: bool):
    """LayerNorm -> X on a QDQ grid, read by a QDQ layer (L1) and as the residual of the next
    layer (L2) before the next LayerNorm, whose output a third layer (L3) reads: a transformer
    layer's skeleton as onnxruntime's quantize_static writes it."""
    nodes, inits = [], []

    def qdq(name, src, scale, zp):
        n_, i_ = _qdq(name, src, scale=scale, zp=zp)
        nodes.extend(n_)
        inits.extend(i_)

    def layer(k, src, out):
        nodes.append(
            helper.make_node("DequantizeLinear", [f"wq{k}", "ws", "wz"], [f"wd{k}"], axis=1)
        )
        nodes.append(helper.make_node("MatMul", [src, f"wd{k}"], [out]))
        inits.append(c(f"wq{k}", rng.integers(-127, 128, (H, H)).astype(np.int8)))

    def layernorm(k, src, out):
        nodes.append(
            helper.make_node(
                "LayerNormalization", [src, f"g{k}", f"b{k}"], [out], axis=-1, epsilon=1e-12
            )
        )
        inits.extend([c(f"g{k}", rng.uniform(0.5, 1.5, H).astype(np.float32)), c(f"b{k}", w(H))])

    layernorm(0, "x", "X")
    qdq("XD", "X", 0.05, 3)
    layer(1, "XD", "h1")
    qdq("h1d", "h1", 0.04, -2)
    layer(2, "h1d", "h2")
    qdq("h2d", "h2", 0.03, 1)
    nodes.append(helper.make_node("Add", ["bias", "h2d"], ["ba"]))
    qdq("bd", "ba", 0.03, 1)
    nodes.append(helper.make_node("Add", ["bd", "XD"], ["s"]))
    qdq("sd", "s", 0.05, 2)
    layernorm(1, "sd", "Y")
    qdq("YD", "Y", 0.04, -1)
    layer(3, "YD", "y")
    inits += [
        c("ws", (rng.uniform(0.5, 1.5, H) * 0.01).astype(np.float32)),
        c("wz", np.zeros(H, np.int8)),
        c("bias", w(H)),
    ]
    return model(nodes, inits, outputs=("y", "X") if x_is_output else ("y",))


@pytest.mark.parametrize("x_is_output", [False, True], ids=["bytes", "x_is_an_output"])
def test_quantize_layernorm_writes_the_levels_its_readers_quantize_to(x_is_output):
    """quantize_layernorm: the first LayerNorm writes X's uint8 levels, which the next layer
    reads as they are and the second LayerNorm adds as its skip (the residual and its two
    stages moved there from the layer before it), and the second writes its own levels for
    the third layer: the same values, bit for bit. Where X is also a graph output (a float
    reader), that LayerNorm keeps its floats and the layers their residual."""
    from sqc.compiler.pipeline import run_passes

    m = _qdq_block_with_layernorms(x_is_output)
    before = run_passes(import_model(m), S, disable=("quantize_layernorm",))
    after = run_passes(import_model(m), S)
    assert ops(before)["LayerNormalization"] == 2
    lns = [n for n in after.nodes if n.op in ("LayerNormalization", "SkipLayerNorm")]
    l1, l2, l3 = [n for n in after.nodes if n.op == "QLinear"]
    assert l3.attrs["x_quant"] == "u8" and l3.inputs[0] == lns[1].outputs[0]
    assert lns[1].attrs["out_grid"] == {"scale": np.float32(0.04), "zero_point": -1 + 128}
    if x_is_output:
        assert lns[0].op == "LayerNormalization" and l2.input(3) == lns[0].outputs[0]
        assert l1.attrs["x_quant"] == "static" and l2.attrs["post"]["r"]
        assert not lns[1].input(1)
    else:
        assert lns[0].op == "SkipLayerNorm" and lns[0].attrs["out_grid"]["zero_point"] == 131
        x8 = lns[0].outputs[0]
        assert np.dtype(after.values[x8].dtype) == np.uint8
        assert l1.inputs[0] == x8 and l1.attrs["x_quant"] == "u8"
        assert not l2.input(3) and not l2.attrs["post"]["r"] and not l2.attrs["post"]["c"]
        assert lns[1].inputs[:2] == [l2.outputs[0], x8]
        assert lns[1].attrs["skip_grid"] == {"scale": np.float32(0.05), "zero_point": 131}
        assert lns[1].attrs["sum_grid"]["zero_point"] == 2
    assert "QuantizeLinear" not in ops(after)
    feeds = x_feeds()
    for a, b in zip(interpret(before, feeds), interpret(after, feeds)):
        np.testing.assert_array_equal(a, b)
