"""Lower a planned graph to C: one record per node, rendered by ``templates/model.c.j2``.

Every table (shapes, strides, offsets) is computed here; the templates only loop over them.
Each bucket becomes one function ``sqc_run_s{S}`` taking the weights, a workspace, the batch
size, a thread count and the input / output pointers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sqc.compiler.codegen.build import TARGETS
from sqc.compiler.codegen.emit_quant import ACT_CODES, QuantEmitter
from sqc.compiler.ir import CompileError, Graph, Node, UnsupportedOpError
from sqc.compiler.passes.fuse_attention import contiguous_strides
from sqc.compiler.passes.plan_memory import VIEW_OPS

C_TYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.int64): "int64_t",
    np.dtype(np.int32): "int32_t",
    np.dtype(np.int8): "int8_t",
    np.dtype(np.uint8): "uint8_t",
    np.dtype(np.bool_): "uint8_t",
    np.dtype(np.int16): "int16_t",
    np.dtype(np.uint32): "uint32_t",
    np.dtype(np.uint64): "uint64_t",
}

# Elementwise ops as C expressions over their operands a, b, c (spec semantics; integer
# division and modulo by zero give 0 rather than undefined behaviour).
UNARY = {
    "Identity": "{a}",
    "Dropout": "{a}",
    "Neg": "-{a}",
    "Abs": "fabsf({a})",
    "Sqrt": "sqrtf({a})",
    "Exp": "expf({a})",
    "Log": "logf({a})",
    "Reciprocal": "1.0f / {a}",
    "Floor": "floorf({a})",
    "Ceil": "ceilf({a})",
    "Tanh": "tanhf({a})",
    "Erf": "sqc_erf_f32({a})",  # rational minimax, 3e-7 from erff (f32_gemm.h.j2); vectorizes
    "Relu": "({a} > 0 ? {a} : 0)",
    "Sigmoid": "1.0f / (1.0f + expf(-{a}))",
    "Not": "!{a}",
    "Sign": "(({a} > 0) - ({a} < 0))",
    "Expand": "{a}",
    "Transpose": "{a}",
    "Slice": "{a}",
    "Split": "{a}",
    "Concat": "{a}",
    "Tile": "{a}",
}
INT_UNARY = {"Abs": "({a} < 0 ? -{a} : {a})"}
BINARY = {
    "Add": "{a} + {b}",
    "Sub": "{a} - {b}",
    "Mul": "{a} * {b}",
    "Div": "{a} / {b}",
    "Equal": "{a} == {b}",
    "Less": "{a} < {b}",
    "LessOrEqual": "{a} <= {b}",
    "Greater": "{a} > {b}",
    "GreaterOrEqual": "{a} >= {b}",
    "And": "{a} && {b}",
    "Or": "{a} || {b}",
    "Xor": "(!{a}) != (!{b})",
    "Max": "({a} > {b} ? {a} : {b})",
    "Min": "({a} < {b} ? {a} : {b})",
    "Pow": "powf({a}, {b})",
    "Sum": "{a} + {b}",
}
INT_BINARY = {
    "Div": "({b} == 0 ? 0 : {a} / {b})",
    "Pow": "(int64_t)pow((double){a}, (double){b})",
    "Mod": "({b} == 0 ? 0 : {a} % {b})",
}


PARALLEL_MAP_MIN = 1 << 15  # elements per example from which a map runs on every thread
OPERAND_NAMES = "abcdefgh"  # the placeholders of a map expression, one per input operand


@dataclass
class Operand:
    ptr: str  # C expression of the pointer to example 0
    ctype: str
    batch_stride: int  # elements between examples; 0 for constants
    offset: int = 0
    strides: list[int] = field(default_factory=list)


class Emitter(QuantEmitter):
    """Names C pointers for values and lowers nodes; one per bucket."""

    def __init__(self, graph: Graph, bucket: int, weights: WeightsTable, isa: str):
        self.g = graph
        self.bucket = bucket
        self.weights = weights
        self.isa = isa
        self.memory = graph.meta["memory"]
        self.alias = graph.meta["alias"]
        self.decls: list[str] = []
        self.ptr: dict[str, str] = {}
        self.scratch_bytes = 0  # per example, shared by ops that need scratch (QuantEmitter)
        self.planned_workspace = graph.meta["workspace_per_example"]  # bytes per example
        for i, name in enumerate(graph.inputs):
            v = graph.values[name]
            self._declare(name, f"(const {C_TYPES[np.dtype(v.dtype)]} *)in[{i}]", const=True)

    def _declare(self, name: str, expr: str, const: bool) -> str:
        c = f"v{len(self.decls)}"
        ctype = C_TYPES[np.dtype(self.g.values[name].dtype)]
        self.decls.append(f"{'const ' if const else ''}{ctype} *{c} = {expr}; /* {name} */")
        self.ptr[name] = c
        return c

    def pointer(self, name: str) -> str:
        """The C pointer of a value (constants, inputs, workspace buffers, views)."""
        if name in self.ptr:
            return self.ptr[name]
        v = self.g.values[name]
        ctype = C_TYPES.get(np.dtype(v.dtype))
        if ctype is None:
            raise CompileError(f"value '{name}' has dtype {v.dtype}, which sqc cannot emit")
        if v.is_const:
            return self._declare(name, self.weights.ref(v.const, ctype), const=True)
        owner = self.alias.get(name, name)
        if owner != name:
            base = self.pointer(owner)
            const = owner in self.g.inputs
            return self._declare(name, f"({'const ' if const else ''}{ctype} *){base}", const)
        offset = self.memory[name][0]
        return self._declare(name, f"({ctype} *)(ws + (size_t)B * {offset})", const=False)

    def operand(self, name: str) -> Operand:
        v = self.g.values[name]
        return Operand(
            self.pointer(name),
            C_TYPES[np.dtype(v.dtype)],
            0 if v.is_const else v.numel,
            0,
            contiguous_strides(v.shape),
        )

    # ------------------------------------------------------------ lowering

    def lower(self, node: Node) -> dict:
        rec = {
            "comment": f"node: {node.name} ({node.domain + '.' if node.domain else ''}"
            f"{node.op})".replace("*/", "* /")
        }
        if node.domain == "sqc":
            lower = getattr(self, f"_sqc_{node.op}")
        elif node.domain:
            raise UnsupportedOpError(node, self.g.opset_of(node), "has no C emitter")
        elif node.op in VIEW_OPS and self.alias.get(node.outputs[0]):
            rec["kind"] = "none"
            return rec
        else:
            lower = getattr(self, f"_op_{node.op}", None)
            if lower is None:
                if node.op in UNARY or node.op in BINARY or node.op in INT_BINARY:
                    lower = self._elementwise
                else:
                    raise UnsupportedOpError(node, self.g.opset_of(node), "has no C emitter")
        rec.update(lower(node))
        return rec

    def _map(
        self,
        out: str,
        out_shape,
        out_offset,
        out_strides,
        ins: list[Operand],
        expr: str,
        out_bs: int | None = None,
    ) -> dict:
        """out[idx] = expr(ins[idx]) over out_shape, every operand strided; dims merged."""
        o = self.operand(out)
        o.offset, o.strides = out_offset, list(out_strides)
        if out_bs is not None:
            o.batch_stride = out_bs
        shape, operands = _merge_dims(list(out_shape), [o] + ins)
        loops = [{"n": n, "var": f"i{d}"} for d, n in enumerate(shape)]

        def index(op: Operand) -> str:
            terms = [str(op.offset)] + [f"i{d} * {s}" for d, s in enumerate(op.strides) if s]
            return " + ".join(terms)

        args = {
            k: f"(({op.ctype})p{j + 1}[{index(op)}])"
            for j, (k, op) in enumerate(zip(OPERAND_NAMES, operands[1:]))
        }
        return {
            "kind": "map",
            # Large maps (QDQ tails, masks at 384 tokens) split their outer loop over threads.
            "parallel": bool(loops) and int(np.prod(shape)) >= PARALLEL_MAP_MIN,
            "loops": loops,
            "out": operands[0],
            "ins": operands[1:],
            "out_index": index(operands[0]),
            "expr": expr.format(**args),
        }

    def _elementwise(self, node: Node) -> dict:
        out = node.outputs[0]
        v = self.g.values[out]
        is_int = not np.issubdtype(np.dtype(self.g.values[node.inputs[0]].dtype), np.floating)
        if len(node.inputs) == 1 or node.op in UNARY:
            table = INT_UNARY if is_int and node.op in INT_UNARY else UNARY
            expr = table[node.op]
        else:
            table = INT_BINARY if is_int and node.op in INT_BINARY else BINARY
            if node.op not in table:
                raise UnsupportedOpError(node, self.g.opset_of(node), "has no C emitter")
            expr = table[node.op]
        ins = [self._broadcast(i, v.shape) for i in node.inputs]
        if node.op in ("Pow",) and not is_int:
            e = self.g.const(node.inputs[1])
            if e is not None and e.size == 1 and float(e.reshape(())) in (2.0, 3.0, 0.5, 1.0):
                expr = {2.0: "{a} * {a}", 3.0: "{a} * {a} * {a}", 0.5: "sqrtf({a})", 1.0: "{a}"}[
                    float(e.reshape(()))
                ]
                ins = ins[:1]
        if len(node.inputs) > 2 and node.op in BINARY:  # variadic Max / Min / Sum
            acc = "{a}"
            for k in "bc"[: len(node.inputs) - 1]:
                acc = table[node.op].format(a=acc, b="{" + k + "}")
            expr = acc
        return self._map(out, v.shape, 0, contiguous_strides(v.shape), ins, expr)

    def _sqc_Elementwise(self, node: Node) -> dict:
        """A fused chain (passes/fuse_elementwise.py): one loop, each step's C nested."""
        if "lut_with" in node.attrs:  # its layer's epilogue writes it (fuse_lut_epilogue)
            return {"kind": "none"}
        exprs = self._chain_exprs(node)
        if node.attrs.get("lut"):
            return self._lut_map(node, exprs)
        v = self.g.values[node.outputs[0]]
        ins = [self._broadcast(i, v.shape) for i in node.inputs]
        return self._map(node.outputs[0], v.shape, 0, contiguous_strides(v.shape), ins, exprs[-1])

    def _chain_exprs(self, node: Node) -> list[str]:
        """The C of each step of an sqc.Elementwise chain, operands as {a}, {b}, ... (the
        chain's inputs) and earlier steps nested."""
        from sqc.compiler.codegen.emit_quant import fake_quant_expr

        exprs: list[str] = []
        for domain, op, attrs, args in node.attrs["steps"]:
            subs = ["{" + OPERAND_NAMES[i] + "}" if kind == "in" else exprs[i] for kind, i in args]
            if domain == "sqc" and op == "FakeQuant":
                template = fake_quant_expr(attrs)
            elif len(args) == 1:
                template = UNARY[op]
            else:
                template = BINARY[op]
            exprs.append(template.format(**{k: f"({e})" for k, e in zip("ab", subs)}))
        return exprs

    def _broadcast(self, name: str, out_shape) -> Operand:
        op = self.operand(name)
        shape = list(self.g.values[name].shape)
        shape = [1] * (len(out_shape) - len(shape)) + shape
        st = contiguous_strides(shape)
        op.strides = [0 if d == 1 and n != 1 else s for d, n, s in zip(shape, out_shape, st)]
        return op

    def _op_Where(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        ins = [self._broadcast(i, v.shape) for i in node.inputs]
        return self._map(
            node.outputs[0], v.shape, 0, contiguous_strides(v.shape), ins, "{a} ? {b} : {c}"
        )

    def _op_Cast(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        src = np.dtype(self.g.values[node.inputs[0]].dtype)
        dst = np.dtype(v.dtype)
        expr = "{a}"
        if np.issubdtype(src, np.floating) and dst == np.int64:
            expr = "sqc_f2i64({a})"
        elif np.issubdtype(src, np.floating) and np.issubdtype(dst, np.integer):
            expr = "sqc_f2i32({a})"
        elif dst == np.bool_:
            expr = "({a} != 0)"
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            contiguous_strides(v.shape),
            [self._broadcast(node.inputs[0], v.shape)],
            expr,
        )

    _op_CastLike = _op_Cast

    def _op_Clip(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        expr = "{a}"
        lo, hi = self.g.const(node.input(1)), self.g.const(node.input(2))
        if node.input(1) and lo is None or node.input(2) and hi is None:
            raise UnsupportedOpError(node, self.g.opset_of(node), "needs constant bounds")
        if lo is not None:
            expr = f"({expr} < {float(lo):.9g} ? {float(lo):.9g} : {expr})"
        if hi is not None:
            expr = f"({expr} > {float(hi):.9g} ? {float(hi):.9g} : {expr})"
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            contiguous_strides(v.shape),
            [self._broadcast(node.inputs[0], v.shape)],
            expr,
        )

    def _op_Expand(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            contiguous_strides(v.shape),
            [self._broadcast(node.inputs[0], v.shape)],
            "{a}",
        )

    def _op_Identity(self, node: Node) -> dict:  # only when not an alias (e.g. of a constant)
        return self._op_Expand(node)

    _op_Dropout = _op_Identity
    _op_Reshape = _op_Squeeze = _op_Unsqueeze = _op_Flatten = _op_Identity

    def _op_Transpose(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        src = self.operand(node.inputs[0])
        perm = node.attrs.get("perm") or list(range(len(v.shape)))[::-1]
        src.strides = [src.strides[p] for p in perm]
        return self._map(node.outputs[0], v.shape, 0, contiguous_strides(v.shape), [src], "{a}")

    def _op_Slice(self, node: Node) -> dict:
        from sqc.compiler.ops.onnx_ops import slice_params

        v = self.g.values[node.outputs[0]]
        src = self.operand(node.inputs[0])
        in_shape = self.g.values[node.inputs[0]].shape
        consts = [self.g.const(node.input(i)) for i in range(1, 5)]
        offset, strides = 0, list(src.strides)
        for a, start, _, step in slice_params(in_shape, consts[0], consts[1], consts[2], consts[3]):
            offset += start * src.strides[a]
            strides[a] = src.strides[a] * step
        src.offset, src.strides = offset, strides
        return self._map(node.outputs[0], v.shape, 0, contiguous_strides(v.shape), [src], "{a}")

    def _op_Split(self, node: Node) -> dict:
        in_shape = self.g.values[node.inputs[0]].shape
        axis = node.attrs.get("axis", 0) % len(in_shape)
        start, parts = 0, []
        for out in node.outputs:
            v = self.g.values[out]
            src = self.operand(node.inputs[0])
            src.offset = start * src.strides[axis]
            start += v.shape[axis]
            if out:
                parts.append(self._map(out, v.shape, 0, contiguous_strides(v.shape), [src], "{a}"))
        return {"kind": "seq", "parts": parts}

    def _op_Concat(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        axis = node.attrs["axis"] % len(v.shape)
        out_st = contiguous_strides(v.shape)
        start, parts = 0, []
        for name in node.inputs:
            shape = self.g.values[name].shape
            parts.append(
                self._map(
                    node.outputs[0],
                    shape,
                    start * out_st[axis],
                    out_st,
                    [self.operand(name)],
                    "{a}",
                )
            )
            start += shape[axis]
        return {"kind": "seq", "parts": parts}

    def _op_Tile(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        src = self.operand(node.inputs[0])
        in_shape = self.g.values[node.inputs[0]].shape
        if any(r != 1 and d != 1 for r, d in zip(self.g.const(node.inputs[1]), in_shape)):
            raise UnsupportedOpError(
                node, self.g.opset_of(node), "repeats a dimension larger than 1 (not supported)"
            )
        src.strides = [0 if d == 1 else s for d, s in zip(in_shape, src.strides)]
        return self._map(node.outputs[0], v.shape, 0, contiguous_strides(v.shape), [src], "{a}")

    def _op_Gather(self, node: Node) -> dict:
        data, idx = node.inputs
        dv, iv = self.g.values[data], self.g.values[idx]
        axis = node.attrs.get("axis", 0) % len(dv.shape)
        idx_name = idx
        if np.dtype(iv.dtype) not in (np.int64, np.int32):
            if not iv.is_const:
                raise UnsupportedOpError(
                    node,
                    self.g.opset_of(node),
                    f"has {iv.dtype} run-time indices (int32 or int64 only)",
                )
            idx_name = self.g.add_const(idx + "/i64", iv.const.astype(np.int64))
        outer, n, inner = _around_axis(dv.shape, axis)
        return {
            "kind": "gather",
            "outer": outer,
            "n": n,
            "inner": inner,
            "m": iv.numel,
            "data": self.pointer(data),
            "data_bs": 0 if dv.is_const else dv.numel,
            "idx": self.pointer(idx_name),
            "idx_elem": np.dtype(self.g.values[idx_name].dtype).itemsize,
            "idx_bs": 0 if iv.is_const else iv.numel,
            "out": self.pointer(node.outputs[0]),
            "elem": np.dtype(dv.dtype).itemsize,
        }

    def _op_Softmax(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        axis = node.attrs.get("axis", -1 if self.g.opset_of(node) >= 13 else 1) % len(v.shape)
        if axis != len(v.shape) - 1 or np.dtype(v.dtype) != np.float32:
            raise UnsupportedOpError(
                node, self.g.opset_of(node), "is supported over the last axis of float32 only"
            )
        return {
            "kind": "softmax",
            "rows": v.numel // v.shape[-1],
            "n": v.shape[-1],
            "x": self.pointer(node.inputs[0]),
            "y": self.pointer(node.outputs[0]),
        }

    def _op_LayerNormalization(self, node: Node) -> dict:
        return self._layernorm(
            node,
            node.inputs[0],
            "",
            node.inputs[1],
            node.input(2),
            "",
            node.attrs.get("epsilon", 1e-5),
            node.attrs.get("axis", -1),
        )

    def _sqc_SkipLayerNorm(self, node: Node) -> dict:
        return self._layernorm(
            node,
            node.inputs[0],
            node.inputs[1],
            node.inputs[2],
            node.input(3),
            node.input(4),
            node.attrs["epsilon"],
            -1,
        )

    def _layernorm(self, node, x, skip, gamma, beta, bias, eps, axis) -> dict:
        v = self.g.values[x]
        if axis % len(v.shape) != len(v.shape) - 1:
            raise UnsupportedOpError(
                node,
                self.g.opset_of(node),
                "normalizes over more than the last axis (not supported)",
            )
        n = v.shape[-1]
        for name in (gamma, beta, bias):
            c = self.g.const(name) if name else None
            if name and (c is None or c.size != n):
                raise UnsupportedOpError(
                    node, self.g.opset_of(node), "needs constant scale/bias of the normalized size"
                )
        op = {
            "kind": "layernorm",
            "rows": v.numel // n,
            "n": n,
            "x": self.pointer(x),
            "skip": self.pointer(skip) if skip else "NULL",
            "bias": self.pointer(bias) if bias else "NULL",
            "gamma": self.pointer(gamma),
            "beta": self.pointer(beta) if beta else "NULL",
            "eps": f"{float(eps):.9g}f",
            "y": self.pointer(node.outputs[0]),
            "sum": self.pointer(node.outputs[1])
            if len(node.outputs) > 1 and node.outputs[1]
            else "NULL",
        }
        a = node.attrs
        if a.get("skip_grid") or a.get("sum_grid") or a.get("out_grid"):
            op.update(self._layernorm_q(a, op))
        return op

    def _layernorm_q(self, a: dict, op: dict) -> dict:
        """A QDQ LayerNorm's roundings (passes/quantize_layernorm.py): sqc_layernorm_q's
        arguments in place of the float skip and output."""
        from sqc.compiler.codegen.emit_quant import c_float, fake_quant_grid

        def grid(key: str) -> tuple[str, str]:
            g = a.get(key)
            return (c_float(g["scale"]), c_float(g["zero_point"])) if g else ("0.0f", "0.0f")

        skip8 = op["skip"] if a.get("skip_grid") else "NULL"
        sum_fq = (
            self.weights.ref(np.array(fake_quant_grid(a["sum_grid"]), np.float32), "float")
            if a.get("sum_grid")
            else "NULL"
        )
        y8 = op["y"] if a.get("out_grid") else "NULL"
        return {
            "kind": "layernorm_q",
            "skip": "NULL" if a.get("skip_grid") else op["skip"],
            "skip8": skip8,
            "skip_grid": grid("skip_grid"),
            "sum_fq": sum_fq,
            "y": "NULL" if a.get("out_grid") else op["y"],
            "y8": y8,
            "out_grid": grid("out_grid"),
        }

    def _sqc_Gelu(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        fn = (
            "sqc_gelu_tanh_scalar"
            if node.attrs.get("approximation") == "tanh"
            else "sqc_gelu_erf_scalar"
        )
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            contiguous_strides(v.shape),
            [self.operand(node.inputs[0])],
            fn + "({a})",
        )

    def _sqc_Linear(self, node: Node) -> dict:
        x = self.g.values[node.inputs[0]]
        w = self.g.const(node.inputs[1])
        k, n = w.shape
        if x.shape[-1] != k or np.dtype(x.dtype) != np.float32:
            raise CompileError(
                f"node '{node.name}': linear layer input {x.shape} does not match weight {w.shape}"
            )
        from sqc.compiler.codegen.packing import pack_f32_gemm_weights

        if "ffn_with" in node.attrs:  # run by its pair's sqc_f32_spmm_ffn call (pair_sparse_ffn)
            return {"kind": "none"}
        if "ffn_next" in node.attrs:
            return self._sparse_ffn(node, self._named(node.attrs["ffn_next"]))
        f32_isa = TARGETS[self.isa]["f32_isa"]
        rows = x.numel // k
        fn, scratch = "sqc_f32_gemm", None
        if node.attrs.get("format") == "sparse":
            from sqc.compiler.codegen.sparse_packing import pack_f32_sparse, spmm_scratch_bytes

            fn = "sqc_f32_spmm"
            packed = self.weights.ref(
                lambda: pack_f32_sparse(w, f32_isa),
                "uint8_t",
                key=("f32_spmm", f32_isa, node.inputs[1]),
            )
            scratch = self._scratch(spmm_scratch_bytes(rows, k, n, "f32", f32_isa))
        else:
            packed = self.weights.ref(
                lambda: pack_f32_gemm_weights(w, f32_isa),
                "float",
                key=("f32_gemm", f32_isa, node.inputs[1]),
            )
        return {
            "kind": "linear",
            "fn": fn,
            "scratch": scratch,
            "rows": rows,
            "n": n,
            "k": k,
            "x": self.pointer(node.inputs[0]),
            "w": packed,
            "bias": self.pointer(node.input(2)) if node.input(2) else "NULL",
            "residual": self.pointer(node.input(3)) if node.input(3) else "NULL",
            "y": self.pointer(node.outputs[0]),
            "act": ACT_CODES[node.attrs.get("act", "none")],
        }

    def _sparse_ffn(self, l1: Node, l2: Node) -> dict:
        """Both layers of a pair_sparse_ffn pair as one sqc_f32_spmm_ffn call."""
        from sqc.compiler.codegen.sparse_packing import pack_f32_sparse, spmm_scratch_bytes

        f32_isa = TARGETS[self.isa]["f32_isa"]
        w1, w2 = self.g.const(l1.inputs[1]), self.g.const(l2.inputs[1])
        k, n1 = w1.shape
        n2 = w2.shape[1]
        rows = self.g.values[l1.inputs[0]].numel // k
        packed = [
            self.weights.ref(
                lambda w=w: pack_f32_sparse(w, f32_isa),
                "uint8_t",
                key=("f32_spmm", f32_isa, node.inputs[1]),
            )
            for w, node in ((w1, l1), (w2, l2))
        ]
        return {
            "kind": "ffn",
            "comment": f"nodes: {l1.name} + {l2.name} (two sqc.Linear, one call)".replace(
                "*/", "* /"
            ),
            "scratch": self._scratch(spmm_scratch_bytes(rows, max(k, n1), n2, "f32", f32_isa)),
            "rows": rows,
            "k": k,
            "n1": n1,
            "n2": n2,
            "x": self.pointer(l1.inputs[0]),
            "w1": packed[0],
            "b1": self.pointer(l1.input(2)) if l1.input(2) else "NULL",
            "act1": ACT_CODES[l1.attrs.get("act", "none")],
            "w2": packed[1],
            "b2": self.pointer(l2.input(2)) if l2.input(2) else "NULL",
            "residual": self.pointer(l2.input(3)) if l2.input(3) else "NULL",
            "h": self.pointer(l1.outputs[0]),
            "y": self.pointer(l2.outputs[0]),
        }

    def _sqc_Attention(self, node: Node) -> dict:
        a = node.attrs

        def view(name, v, key_d="stride_d"):
            val = self.g.values[name]
            return {
                "ptr": self.pointer(name),
                "off": v["offset"],
                "sh": v["stride_h"],
                "ss": v["stride_s"],
                "sd": v[key_d],
                "bs": 0 if val.is_const else val.numel,
            }

        rec = {
            "kind": "attention",
            "H": a["num_heads"],
            "Sq": a["seq_q"],
            "Sk": a["seq_k"],
            "D": a["head_dim"],
            "scale": f"{a['scale']:.9g}f",
            "q": view(node.inputs[0], a["q_view"]),
            "k": view(node.inputs[1], a["k_view"]),
            "v": view(node.inputs[2], a["v_view"]),
            "o": view(node.outputs[0], a["out_view"]),
            "fq": "NULL",
            "pre": "1.0f",
            "post": "1.0f",
        }
        quant = a.get("quant")
        if quant:
            from sqc.compiler.codegen.emit_quant import c_float, fake_quant_grid

            stages = list(quant["stages"]) + [quant.get("out")]  # 5: see sqc_attention_job
            grid = np.array([fake_quant_grid(st) for st in stages], np.float32)
            rec["fq"] = self.weights.ref(grid.reshape(-1), "float")
            rec["pre"], rec["post"] = c_float(quant["pre_scale"]), c_float(quant["post_scale"])
            if attention_kernel(node, self.isa) == "sqc_attention_q8":
                grids = [fake_quant_grid(a["int8"][key]) for key in "qkv"]
                rec["fn"] = "sqc_attention_q8"
                rec["grids"] = self.weights.ref(np.array(grids, np.float32).reshape(-1), "float")
                # operands written as levels (fuse_lut_epilogue's out8), and the output
                # written as levels for the next layer (the attention's out8): their bytes
                for key, name in zip("qkvo", list(node.inputs[:3]) + [node.outputs[0]]):
                    op = rec[key]
                    if np.dtype(self.g.values[name].dtype) == np.uint8:
                        rec[key + "8"], op["ptr"] = op["ptr"], "NULL"
                    else:
                        rec[key + "8"] = "NULL"
        rec["mask"] = (
            view(node.inputs[3], a["mask_view"], "stride_j")
            if node.input(3)
            else {"ptr": "NULL", "off": 0, "sh": 0, "ss": 0, "sd": 0, "bs": 0}
        )
        return rec

    def _op_MatMul(self, node: Node, dtype_check: bool = True) -> dict:
        a, b = (self.g.values[i] for i in node.inputs[:2])
        out = self.g.values[node.outputs[0]]
        if len(a.shape) < 2 or len(b.shape) < 2 or dtype_check and np.dtype(a.dtype) != np.float32:
            raise UnsupportedOpError(
                node, self.g.opset_of(node), "is supported for float32 operands of rank >= 2"
            )
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        lead = out.shape[:-2]
        pairs = []
        for idx in np.ndindex(*lead) if lead else [()]:
            ia = tuple(
                i if d != 1 else 0 for i, d in zip(idx[len(idx) - len(a.shape) + 2 :], a.shape[:-2])
            )
            ib = tuple(
                i if d != 1 else 0 for i, d in zip(idx[len(idx) - len(b.shape) + 2 :], b.shape[:-2])
            )
            oa = int(np.ravel_multi_index(ia, a.shape[:-2])) * M * K if ia else 0
            ob = int(np.ravel_multi_index(ib, b.shape[:-2])) * K * N if ib else 0
            pairs.append((oa, ob))
        return {
            "kind": "matmul",
            "fn": "sqc_matmul_f32_plain",
            "extra": "",
            "M": M,
            "N": N,
            "K": K,
            "pairs": pairs,
            "a": self.operand(node.inputs[0]),
            "b": self.operand(node.inputs[1]),
            "out": self.operand(node.outputs[0]),
        }

    def _op_CumSum(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        axis = int(self.g.const(node.inputs[1]).reshape(-1)[0]) % len(v.shape)
        outer, n, inner = _around_axis(v.shape, axis)
        return {
            "kind": "cumsum",
            "outer": outer,
            "n": n,
            "inner": inner,
            "x": self.operand(node.inputs[0]),
            "y": self.pointer(node.outputs[0]),
            "ctype": C_TYPES[np.dtype(v.dtype)],
            "exclusive": int(node.attrs.get("exclusive", 0)),
            "reverse": int(node.attrs.get("reverse", 0)),
            "numel": v.numel,
        }

    def _reduce(self, node: Node, init: str, step: str, final: str) -> dict:
        src = self.g.values[node.inputs[0]]
        out = self.g.values[node.outputs[0]]
        rank = len(src.shape)
        since = 13 if node.op == "ReduceSum" else 18
        if self.g.opset_of(node) >= since:
            c = self.g.const(node.input(1))
            axes = None if c is None or c.size == 0 else c.reshape(-1).tolist()
        else:
            axes = node.attrs.get("axes")
        if axes is None:
            axes = [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
        axes = sorted(int(a) % rank for a in axes)
        kept = [d for d in range(rank) if d not in axes]
        st = np.array(contiguous_strides(src.shape), np.int64)

        # Index tables: output element o reads src at base[o] + roff[r] for each reduced r.
        def offsets(dims):
            grid = np.indices([src.shape[d] for d in dims]).reshape(len(dims), -1).T
            return (grid @ st[dims]).astype(np.int64) if dims else np.zeros(1, np.int64)

        base, roff = offsets(kept), offsets(axes)
        return {
            "kind": "reduce",
            "x": self.operand(node.inputs[0]),
            "y": self.pointer(node.outputs[0]),
            "base": base.tolist(),
            "roff": roff.tolist(),
            "init": init,
            "step": step,
            "final": final.format(n=len(roff)),
            "ctype": C_TYPES[np.dtype(out.dtype)],
            "out_numel": out.numel,
        }

    def _op_ReduceMean(self, node):
        return self._reduce(node, "0.0", "acc += x", "acc / {n}")

    def _op_ReduceSum(self, node):
        return self._reduce(node, "0.0", "acc += x", "acc")

    def _op_ReduceMax(self, node):
        return self._reduce(node, "-INFINITY", "acc = x > acc ? x : acc", "acc")

    def _op_ReduceMin(self, node):
        return self._reduce(node, "INFINITY", "acc = x < acc ? x : acc", "acc")


def emit_bucket(g: Graph, seq: int, weights: WeightsTable, isa: str) -> dict:
    """The record ``templates/model.c.j2`` renders as the function ``sqc_run_s{seq}``."""
    emitter = Emitter(g, seq, weights, isa)
    ops = [emitter.lower(n) for n in g.nodes]
    outputs = [
        {"name": o, "ptr": emitter.pointer(o), "nbytes": g.values[o].nbytes} for o in g.outputs
    ]
    g.meta["workspace_per_example"] = emitter.workspace_per_example  # scratch included
    # Parallel maps run as functions of the thread pool (templates/kernels/pool.h): name them.
    maps = []
    for op in ops:
        for part in op.get("parts", [op]):
            if part.get("kind") == "map" and part["parallel"]:
                part["fn"] = f"sqc_map_s{seq}_{len(maps)}"
                inner = int(np.prod([loop["n"] for loop in part["loops"][1:]], dtype=np.int64))
                part["min_chunk"] = max(1, -(-4096 // max(inner, 1)))
                maps.append(part)
    # What `sqc inspect --profile` names each timed op by: the ops the C runs, in order.
    by_name = {n.name: n for n in g.nodes}
    profiled = (_profiled(g, node, op, by_name) for node, op in zip(g.nodes, ops))
    g.meta["profile"] = [p for p in profiled if p]
    return {
        "seq": seq,
        "decls": emitter.decls,
        "ops": ops,
        "maps": maps,
        "outputs": outputs,
        "input_bytes": [g.values[i].nbytes for i in g.inputs],
        "workspace": g.meta["workspace_per_example"],
    }


def _profiled(g: Graph, node: Node, op: dict, by_name: dict) -> dict | None:
    """What `sqc inspect --profile` names the op the C runs for ``node`` (None: nothing runs):
    a pair of nodes run by one call (pair_sparse_ffn, fuse_lut_epilogue) is one timed op."""
    if op["kind"] == "none":
        return None
    pair = node.attrs.get("ffn_next") or node.attrs.get("lut_next")
    if pair is None:
        return {
            "node": node.name,
            "op": f"{node.domain}.{node.op}" if node.domain else node.op,
            "flops": op_flops(g, node),
        }
    other = by_name[pair]
    return {
        "node": f"{node.name} + {pair}",
        "op": f"sqc.{node.op}+{other.op}",
        "flops": op_flops(g, node) + op_flops(g, other),
    }


def emit_model_source(
    planned: dict[int, Graph],
    weights: WeightsTable,
    isa: str,
    source: str,
    source_sha256: str,
    with_kernels: bool = True,
) -> str:
    """The whole generated C of a model: kernels, then one run function per bucket."""
    import sqc
    from sqc.compiler.codegen.kernels import (
        f32_gemm_variant,
        int8_gemm_variant,
        render_kernel,
        sparse_gemm_variant,
    )

    buckets = sorted(planned)
    bucket_fns = [emit_bucket(planned[s], s, weights, isa) for s in buckets]
    gemms = [f32_gemm_variant(TARGETS[isa]["f32_isa"])]
    sparse = any(uses_sparse_kernels(planned[s]) for s in buckets)
    int8 = any(uses_int8_kernels(planned[s]) for s in buckets)
    if int8 or sparse:  # the sparse kernels reuse the int8 header's helpers
        gemms.append(int8_gemm_variant(TARGETS[isa]["int8_gemm"]))
    if sparse:
        gemms.append(sparse_gemm_variant(TARGETS[isa]["f32_isa"], TARGETS[isa]["int8_isa"]))
    kernel_source = ""
    if with_kernels:
        parts = [render_kernel("kernels/ops.h")]
        parts += [render_kernel(k.template, **k.knobs) for k in gemms]
        if int8:
            parts.append(render_kernel("kernels/quant.h", sparse=sparse))
        kernel_source = "\n".join(parts)
    return render_kernel(
        "model.c.j2",
        version=sqc.__version__,
        source=source,
        source_sha256=source_sha256,
        isa=isa,
        buckets=buckets,
        kernels=[k.name for k in gemms],
        kernel_source=kernel_source,
        bucket_fns=bucket_fns,
    )


QUANT_OPS = {
    ("", "QuantizeLinear"),
    ("", "DequantizeLinear"),
    ("", "DynamicQuantizeLinear"),
    ("", "MatMulInteger"),
    ("sqc", "FakeQuant"),
    ("sqc", "QLinear"),
}


def uses_int8_kernels(g: Graph) -> bool:
    """True if the graph has an op whose C needs the int8 kernels and quant.h."""
    return any((n.domain or "", n.op) in QUANT_OPS for n in g.nodes)


def attention_kernel(node: Node, isa: str) -> str:
    """The kernel that runs an sqc.Attention on target ``isa`` (the emitter's choice and the
    manifest's record): integer products need the pass's grids and a VNNI target."""
    if node.attrs.get("int8") and TARGETS[isa]["int8_isa"] in ("avx512_vnni", "avx_vnni"):
        return "sqc_attention_q8"
    return "sqc_attention_f32"


def op_flops(g: Graph, node: Node) -> int:
    """Multiply-adds x 2 of one example through ``node`` (dense count; 0 if not a matmul)."""
    if node.domain == "sqc" and node.op in ("Linear", "QLinear"):
        k, n = g.const(node.inputs[1]).shape
        return 2 * (g.values[node.inputs[0]].numel // k) * k * n
    if node.domain == "sqc" and node.op == "Attention":
        a = node.attrs
        return 4 * a["num_heads"] * a["seq_q"] * a["seq_k"] * a["head_dim"]
    if not node.domain and node.op in ("MatMul", "MatMulInteger"):
        k = g.values[node.inputs[0]].shape[-1]
        return 2 * g.values[node.outputs[0]].numel * k
    return 0


def uses_sparse_kernels(g: Graph) -> bool:
    """True if a linear layer of the graph runs a sparse kernel (extract_sparsity chose it)."""
    return any(
        n.domain == "sqc" and n.op in ("Linear", "QLinear") and n.attrs.get("format") == "sparse"
        for n in g.nodes
    )


class WeightsTable:
    """The constants of every bucket, deduplicated by content, laid out in ``weights.bin``.

    Buckets reference the same arrays (weights, packed weights), so they share one copy.
    """

    ALIGN = 64

    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self.offsets: list[int] = []
        self.size = 0
        self._by_key: dict = {}

    def ref(self, array, ctype: str, key=None) -> str:
        """Add ``array`` (once) and return the C expression of a pointer to it.

        ``array`` may be a function making the array, called only when ``key`` is new.
        """
        import hashlib

        if key is not None and key in self._by_key:
            return f"(const {ctype} *)(W + {self.offsets[self._by_key[key]]})"
        array = np.ascontiguousarray(array() if callable(array) else array)
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        if key is None:
            key = (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
        if key not in self._by_key:
            self._by_key[key] = len(self.arrays)
            self.arrays.append(array)
            self.offsets.append(self.size)
            self.size += (array.nbytes + self.ALIGN - 1) // self.ALIGN * self.ALIGN
        index = self._by_key[key]
        return f"(const {ctype} *)(W + {self.offsets[index]})"

    def write(self, path) -> None:
        with open(path, "wb") as f:
            for array, offset in zip(self.arrays, self.offsets):
                f.seek(offset)
                f.write(array.tobytes())
            f.truncate(self.size)


def _around_axis(shape, axis: int) -> tuple[int, int, int]:
    """A shape seen as [outer, shape[axis], inner] around one axis."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return outer, int(shape[axis]), inner


def _merge_dims(shape: list[int], ops: list[Operand]) -> tuple[list[int], list[Operand]]:
    """Drop size-1 dims and merge neighbours that are contiguous in every operand."""
    keep = [d for d, n in enumerate(shape) if n != 1]
    shape = [shape[d] for d in keep]
    for op in ops:
        op.strides = [op.strides[d] for d in keep]
    d = len(shape) - 1
    while d > 0:
        if all(op.strides[d - 1] == op.strides[d] * shape[d] for op in ops):
            shape[d - 1] *= shape[d]
            del shape[d]
            for op in ops:
                op.strides[d - 1] = op.strides[d]
                del op.strides[d]
        d -= 1
    return shape, ops
