"""C lowering of the quantization ops and sqc's int8 layers (a mixin of emit_c.Emitter).

Kernels: ``templates/kernels/int8_gemm.h.j2`` (the int8 GEMM and the activation quantizers)
and ``templates/kernels/quant.h`` (the glue below calls: elementwise rounding, the per-example
parameters of an int8 layer, a plain integer matmul).
"""

from __future__ import annotations

import numpy as np

from sqc.compiler.ir import CompileError, Node, UnsupportedOpError
from sqc.compiler.ops.quant_ops import QRANGE
from sqc.compiler.passes.plan_memory import aligned

# a linear layer's act attr as the kernels' `act` argument (0 none, 1 GELU erf, 2 GELU tanh)
ACT_CODES = {"none": 0, "gelu_erf": 1, "gelu_tanh": 2}


def c_float(x: float) -> str:
    """A float32 as a C literal that reads back to the same float32."""
    text = f"{float(np.float32(x)):.9g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text + "f"


class QuantEmitter:
    """Lowerings for QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
    sqc.FakeQuant and sqc.QLinear. Needs Emitter's g, weights, pointer, operand, _map."""

    def _scratch(self, per_example: int) -> str:
        """A C pointer to ``per_example`` bytes x B of scratch, after every planned buffer.

        Scratch is only live inside one op, so every op shares the same bytes."""
        self.scratch_bytes = max(self.scratch_bytes, per_example)
        return f"(ws + (size_t)B * {self.scratch_offset})"

    @property
    def scratch_offset(self) -> int:
        return aligned(self.planned_workspace)

    @property
    def workspace_per_example(self) -> int:
        """Bytes per example: the planned buffers, then the scratch (after lowering every op)."""
        if not self.scratch_bytes:
            return self.planned_workspace
        return self.scratch_offset + self.scratch_bytes

    def _param_operand(self, node: Node, pos: int, rank: int, out_shape, default_dtype):
        """Scale / zero point input ``pos`` as an operand broadcast along the op's axis."""
        name = node.input(pos)
        if not name:
            arr = np.zeros((), default_dtype)
        else:
            arr = self.g.const(name)
            if arr is None:
                raise UnsupportedOpError(
                    node, self.g.opset_of(node), f"needs a constant input {pos} (scale/zero point)"
                )
        if arr.size > 1:
            axis = int(node.attrs.get("axis", 1)) % rank
            shape = [1] * rank
            shape[axis] = arr.size
            arr = arr.reshape(shape)
        else:
            arr = arr.reshape(())
        if name:
            op = self.operand(name)
        else:
            from sqc.compiler.codegen.emit_c import C_TYPES, Operand

            op = Operand(self.weights.ref(arr, C_TYPES[arr.dtype]), C_TYPES[arr.dtype], 0)
        shape = [1] * (len(out_shape) - arr.ndim) + list(arr.shape)
        strides = [int(np.prod(shape[d + 1 :])) for d in range(len(shape))]
        op.strides = [0 if n == 1 else s for n, s in zip(shape, strides)]
        return op

    def _op_QuantizeLinear(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        dt = np.dtype(v.dtype)
        if dt not in QRANGE:
            raise UnsupportedOpError(node, self.g.opset_of(node), f"to {dt} is not supported")
        rank = len(v.shape)
        ins = [
            self._broadcast(node.inputs[0], v.shape),
            self._param_operand(node, 1, rank, v.shape, np.float32),
            self._param_operand(node, 2, rank, v.shape, np.uint8),
        ]
        lo, hi = QRANGE[dt]
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            _contiguous(v.shape),
            ins,
            f"sqc_quantize_f32({{a}}, {{b}}, {{c}}, {lo}, {hi})",
        )

    def _op_DequantizeLinear(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        rank = len(self.g.values[node.inputs[0]].shape)
        ins = [
            self._broadcast(node.inputs[0], v.shape),
            self._param_operand(node, 1, rank, v.shape, np.float32),
            self._param_operand(node, 2, rank, v.shape, np.int32),
        ]
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            _contiguous(v.shape),
            ins,
            # "+ 0.0f": a rounded product even where gcc contracts it into a following add
            # (see sqc_fake_quant_f32 in templates/kernels/ops.h)
            "((float)((int32_t){a} - (int32_t){c}) * {b} + 0.0f)",
        )

    def _sqc_FakeQuant(self, node: Node) -> dict:
        v = self.g.values[node.outputs[0]]
        return self._map(
            node.outputs[0],
            v.shape,
            0,
            _contiguous(v.shape),
            [self._broadcast(node.inputs[0], v.shape)],
            fake_quant_expr(node.attrs),
        )

    def _op_DynamicQuantizeLinear(self, node: Node) -> dict:
        x = self.g.values[node.inputs[0]]
        outs = [self.pointer(o) if o else "NULL" for o in node.outputs]
        outs += ["NULL"] * (3 - len(outs))
        return {
            "kind": "call",
            "code": (
                f"for (int b = 0; b < B; ++b)\n"
                f"    sqc_dynamic_quantize_u8({x.numel}, {self.pointer(node.inputs[0])} + "
                f"(size_t)b * {x.numel}, {outs[0]} + (size_t)b * {x.numel}, "
                f"{outs[1]} ? {outs[1]} + b : NULL, {outs[2]} ? {outs[2]} + b : NULL);"
            ),
        }

    def _op_MatMulInteger(self, node: Node) -> dict:
        a, b = (self.g.values[i] for i in node.inputs[:2])
        if len(a.shape) < 2 or len(b.shape) < 2:
            raise UnsupportedOpError(node, self.g.opset_of(node), "needs operands of rank >= 2")
        a_zp = self.g.const(node.input(2)) if node.input(2) else np.zeros((), np.int32)
        b_zp = self.g.const(node.input(3)) if node.input(3) else np.zeros((), np.int32)
        if a_zp is None or b_zp is None or a_zp.size != 1:
            raise UnsupportedOpError(
                node,
                self.g.opset_of(node),
                "is supported with a constant per-tensor a_zero_point and constant b_zero_point",
            )
        n = b.shape[-1]
        bz = np.ascontiguousarray(np.broadcast_to(b_zp.reshape(-1).astype(np.int32), (n,)))
        rec = self._op_MatMul(node, dtype_check=False)
        rec["fn"] = "sqc_matmul_i8_plain"
        rec["extra"] = (
            f", {int(np.dtype(a.dtype) == np.int8)}, {int(a_zp.reshape(()))}, "
            f"{int(np.dtype(b.dtype) == np.int8)}, {self.weights.ref(bz, 'int32_t')}"
        )
        return rec

    def _named(self, name: str) -> Node:
        """The node called ``name`` (pair attributes name the other node of a pair)."""
        return next(n for n in self.g.nodes if n.name == name)

    def _sqc_QLinear(self, node: Node) -> dict:
        if "ffn_with" in node.attrs:  # run by its pair's sqc_qlinear_ffn call (pair_sparse_ffn)
            return {"kind": "none"}
        if "ffn_next" in node.attrs:
            return self._qlinear_ffn(node, self._named(node.attrs["ffn_next"]))
        args, scratch, table = self._qlinear_args(node)
        args[15] = self._scratch(scratch)
        call = f"sqc_qlinear({', '.join(str(s) for s in args)});"
        if table:
            return {"kind": "call", "code": "{\n" + table + "    " + call + "\n}"}
        return {"kind": "call", "code": call}

    def _qlinear_args(self, node: Node) -> tuple[list, int, str]:
        """sqc_qlinear's arguments for ``node`` (the scratch pointer, [15], left to the caller),
        the scratch bytes per example it needs, and the C of its lut_next table ("" without)."""
        from sqc.compiler.codegen.build import TARGETS
        from sqc.compiler.codegen.packing import int8_gemm_lda, pack_s8_gemm_weights

        a = node.attrs
        x = self.g.values[node.inputs[0]]
        w = self.g.const(node.inputs[1])
        k, n = w.shape
        rows = x.numel // k
        isa = TARGETS[self.isa]["int8_isa"]
        ldq = int8_gemm_lda(k, isa)
        w_zp = self.g.const(node.inputs[5]).astype(np.int64)
        col_comp = (k * w_zp - w.astype(np.int64).sum(axis=0)).astype(np.int32)
        mode = {"dynamic": 0, "static": 1, "u8": 2, "s8": 3}[a["x_quant"]]
        ref = self.weights.ref
        scratch = rows * ldq + 3 * 4 * rows
        if a.get("format") == "sparse":
            from sqc.compiler.codegen.sparse_packing import pack_s8_sparse, spmm_scratch_bytes

            packed = "NULL"
            sparse = ref(
                lambda: pack_s8_sparse(w, isa),
                "uint8_t",
                key=("s8_spmm", isa, node.inputs[1]),
            )
            sp_offset = aligned(scratch)
            scratch = sp_offset + spmm_scratch_bytes(rows, k, n, "int8", isa)
        else:
            sparse, sp_offset = "NULL", 0
            packed = ref(
                lambda: pack_s8_gemm_weights(w, isa),
                "int8_t",
                key=("s8_gemm", isa, node.inputs[1]),
            )
        args = [
            "B",
            rows,
            n,
            k,
            self.pointer(node.inputs[0]),
            mode,
            c_float(a["x_scale"]),
            int(a["x_zero_point"]),
            packed,
            ref(col_comp, "int32_t"),
            ref(w_zp.astype(np.int32), "int32_t") if w_zp.any() else "NULL",
            self.pointer(node.inputs[4]),
            self.pointer(node.input(2)) if node.input(2) else "NULL",  # [12]
            self.pointer(node.input(3)) if node.input(3) else "NULL",
            self.pointer(node.outputs[0]),
            None,  # scratch
            ldq,
            sparse,
            f"B * (size_t){sp_offset}",
            ACT_CODES[a.get("act", "none")],
            "NULL",  # [20] the QDQ stages, below
            "NULL",
            "NULL",
            "nt",
        ]
        post = a.get("post")
        if post:
            bias = self.g.const(node.input(2)) if node.input(2) else np.zeros(n, np.float32)
            fold = fold_stage_b(post, bias) if bias is not None else None
            if fold is not None:  # the kernels read k2 where the bias was (sqc_qpost's fold)
                args[12] = ref(fold[1], "float")
            a["stage_b_folded"] = fold is not None  # for the manifest (driver._layers)
            args[20] = self._qpost(post, None if fold is None else fold[0])
        table = ""
        if "out8" in a:  # the levels' bytes for the integer attention (fuse_lut_epilogue):
            # bytes without a table (lut8 NULL: the identity), no floats
            args[14] = "NULL"
            args[-3] = self.pointer(node.outputs[0])
        if "lut_next" in a:  # the next node's table bytes from the epilogue (fuse_lut_epilogue)
            lut_node = self._named(a["lut_next"])
            args[-3:-1] = [self.pointer(lut_node.outputs[0]), "lut8"]
            # + 3 bytes: a gather reads 4 from each index (sqc_lut8_storen)
            table = self._lut_table(lut_node, self._chain_exprs(lut_node), "uint8_t", "lut8", 3)
        return args, scratch, table

    def _qlinear_ffn(self, l1: Node, l2: Node) -> dict:
        """Both int8 layers of a pair_sparse_ffn pair as one sqc_qlinear_ffn call (which runs
        them as one kernel, or as the two sqc_qlinear calls)."""
        args1, scratch1, table = self._qlinear_args(l1)
        args2, scratch2, table2 = self._qlinear_args(l2)
        if table2:
            raise CompileError(f"node '{l2.name}': an FFN pair's second layer writes no table")
        rows = args1[1]
        q2 = aligned(scratch1)
        args1[15] = args2[15] = self._scratch(max(q2 + 8 * rows, scratch2))
        lits = [f"&(sqc_qlinear_args){{ {', '.join(str(s) for s in a)} }}" for a in (args1, args2)]
        indent = "\n" + " " * 20
        call = f"    sqc_qlinear_ffn({lits[0]},{indent}{lits[1]}, B * (size_t){q2});\n"
        return {"kind": "call", "code": "{\n" + table + call + "}"}

    def _qpost(self, post: dict, fold_k: float | None) -> str:
        """The QDQ stages of an sqc.QLinear as a C sqc_qpost (20 floats in the weights)."""
        table = qpost_table(post, fold_k)
        return f"(const sqc_qpost *)({self.weights.ref(table, 'float')})"

    def _lut_map(self, node: Node, exprs: list[str]) -> dict:
        """An sqc.Elementwise whose one varying input lies on a quantization grid
        (passes/fuse_quant_epilogue.py): its chain evaluated once per grid level, in the same C,
        then one table lookup per element (sqc_lut_map)."""
        lut = node.attrs["lut"]
        scale, zp, lo, levels = _lut_grid(lut)
        v = self.g.values[node.outputs[0]]
        x = node.inputs[lut["input"]]
        out = self.pointer(node.outputs[0])
        outs = f"NULL, {out}" if lut.get("quantize") else f"{out}, NULL"
        return {
            "kind": "call",
            "code": (
                "{\n"
                + self._lut_table(node, exprs, "float", "lut")
                + f"    sqc_lut_map((int64_t)B * {v.numel}, {self.pointer(x)}, {outs}, lut, "
                f"{c_float(np.float32(1.0) / scale)}, {zp - lo}, {levels}, nt);\n"
                "}"
            ),
        }

    def _lut_table(self, node: Node, exprs: list[str], ctype: str, name: str, pad: int = 0) -> str:
        """C declaring ``ctype name[levels + pad]`` and filling it with the lut node's chain at
        each level of its input's grid (the bytes its uint8 output takes, with lut["quantize"]);
        the pad entries 0."""
        from sqc.compiler.codegen.emit_c import OPERAND_NAMES

        lut = node.attrs["lut"]
        scale, zp, lo, levels = _lut_grid(lut)
        subs = {}
        for i, name_in in enumerate(node.inputs):
            if i == lut["input"]:
                subs[OPERAND_NAMES[i]] = "x"
            else:
                ctype_in = self.operand(name_in).ctype
                subs[OPERAND_NAMES[i]] = f"(({ctype_in})({self.pointer(name_in)})[0])"
        value = exprs[-1].format(**subs)
        if lut.get("quantize"):  # the next layer's uint8 input (passes/fuse_quant_epilogue.py)
            qs, qz = c_float(lut["quantize"]["scale"]), int(lut["quantize"]["zero_point"])
            value = f"sqc_quantize_f32({value}, {qs}, {qz}, 0, 255)"
        return (
            f"    {ctype} {name}[{levels + pad}]{' = { 0 }' if pad else ''};\n"
            f"    for (int q = 0; q < {levels}; ++q) {{\n"
            f"        const float x = ((float)(q + {lo}) - {zp}.0f) * {c_float(scale)};\n"
            f"        {name}[q] = ({ctype})({value});\n"
            "    }\n"
        )


def _lut_grid(lut: dict) -> tuple[np.float32, int, int, int]:
    """(scale, zero point, lowest level, number of levels) of a lut node's input grid."""
    grid = lut["grid"]
    lo, hi = QRANGE[np.dtype(grid["dtype"])]
    return np.float32(grid["scale"]), int(grid["zero_point"]), lo, hi - lo + 1


def fake_quant_expr(attrs: dict) -> str:
    """C of DequantizeLinear(QuantizeLinear({a})) with one scale and zero point."""
    lo, hi = QRANGE[np.dtype(attrs["dtype"])]
    s, z = c_float(attrs["scale"]), int(attrs["zero_point"])
    return f"sqc_fake_quant_f32({{a}}, {s}, {z}.0f, {lo}.0f, {hi}.0f)"


def fake_quant_grid(attrs: dict | None) -> list[float]:
    """{scale, zero point, lo, hi} of a FakeQuant stage as the C kernels read it (attention's
    stages, an int8 layer's sqc_qpost, the integer attention's grids); 0s: no stage."""
    if not attrs:
        return [0.0, 0.0, 0.0, 0.0]
    lo, hi = QRANGE[np.dtype(attrs["dtype"])]
    return [float(np.float32(attrs["scale"])), float(attrs["zero_point"]), float(lo), float(hi)]


def qpost_table(post: dict, fold_k: float | None = None) -> np.ndarray:
    """The C sqc_qpost of QDQ stages {"a", "b", "r", "c"} (each FakeQuant attrs or None): 20
    float32, the 4 grids {scale, zero point, lo, hi}, then fold: {k, 0, 0, 0} where stage b is
    folded (fold_stage_b's k; the layer's bias array then holds its k2), zeros where not."""
    grids = [fake_quant_grid(post.get(k)) for k in ("a", "b", "r", "c")]
    grids.append([float(fold_k or 0.0), 0.0, 0.0, 0.0])
    return np.asarray(grids, np.float32).reshape(-1)


def fold_stage_b(post: dict, bias: np.ndarray) -> tuple[np.float32, np.ndarray] | None:
    """Stage b of an int8 layer's QDQ epilogue folded into one multiply-add, where that is exact.

    The epilogue computes FQ_b(FQ_a(product) + bias[n]): stage a's level q_a (less its zero
    point), its value q_a * s_a, plus the column's bias, divided by s_b and rounded to stage b's
    level. That level depends only on q_a (one of at most 256) and the column. The kernels take
    it as nearbyint(fma(q_a, k, k2[n])) clamped to stage b's bounds (sqc_qpost_level_b_xv),
    k = s_a / s_b and k2[n] = bias[n] / s_b in float32, three operations where the stage's steps
    take ten: this checks, for every column and every level q_a, that the two give the same
    level, computing both as the kernels do (float32 products, sums and quotients rounded to
    nearest even; the fma in float64, exact for q_a * k, where a sum that float64 rounds (TwoSum
    tells) is rounded again to float32 the same way unless it lies exactly halfway between two
    float32 values, which counts as a failure). A column that fails (about 1 in 2500 of random
    ones: a level within a few ulps of a half-integer of stage b) takes k2[n] moved by a few
    half-steps of u's spacing. Returns (k, k2), or None where stage a or b is missing, a value
    is not finite, or a column has no k2 that passes (the layer keeps the stages' steps)."""
    ga, gb = post.get("a"), post.get("b")
    if not ga or not gb:
        return None
    (sa, za, la, ha), (sb, zb, lb, hb) = fake_quant_grid(ga), fake_quant_grid(gb)
    f32 = np.float32
    bias = np.asarray(bias, np.float32).reshape(-1)
    if not (sa > 0 and sb > 0 and np.all(np.isfinite(bias))):
        return None
    qa = np.arange(la - za, ha - za + 1, dtype=np.float32)[:, None]  # every level of stage a
    lo, hi = f32(lb - zb), f32(hb - zb)
    # the kernels' stage b of stage a's value plus the bias: division, nearest even, clamp
    want = np.clip(np.rint((qa * f32(sa) + bias[None, :]) / f32(sb)), lo, hi)
    k = f32(np.float64(sa) / np.float64(sb))
    k2 = (bias.astype(np.float64) / np.float64(sb)).astype(np.float32)
    if not (np.isfinite(k) and k != 0 and np.all(np.isfinite(k2))):
        return None

    def mismatched(k2v: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """For the columns ``cols`` with k2 values k2v: whether the fast form misses a level
        (or meets a float64 sum exactly halfway between two float32 values)"""
        prod, add = qa.astype(np.float64) * np.float64(k), k2v.astype(np.float64)[None, :]
        u64 = prod + add
        bb = u64 - prod  # TwoSum: the float64 sum's rounding error, 0 where it is exact
        inexact = ((prod - (u64 - bb)) + (add - bb)) != 0
        u = u64.astype(np.float32)
        toward = np.where(u64 > u, np.inf, -np.inf).astype(np.float32)
        mid = (u.astype(np.float64) + np.nextafter(u, toward).astype(np.float64)) / 2
        halfway = inexact & (u64 == mid)
        return np.any((np.rint(np.clip(u, lo, hi)) != want[:, cols]) | halfway, axis=0)

    bad = np.flatnonzero(mismatched(k2, np.arange(k2.size)))
    # a failing column's k2 moved by half-steps of the float32 spacing at its largest |u| (a
    # step of k2's own spacing can be far smaller than one of u's)
    base = k2[bad]
    unit = np.spacing(np.abs(qa * k + base[None, :]).max(axis=0)).astype(np.float64) / 2
    for step in (1, -1, 2, -2, 3, -3, 4, -4, 6, -6, 8, -8):
        if not bad.size:
            break
        trial = (base.astype(np.float64) + step * unit).astype(np.float32)
        fixed = ~mismatched(trial, bad)
        k2[bad[fixed]] = trial[fixed]
        bad, base, unit = bad[~fixed], base[~fixed], unit[~fixed]
    return (k, k2) if not bad.size else None


def _contiguous(shape) -> list[int]:
    from sqc.compiler.passes.fuse_attention import contiguous_strides

    return contiguous_strides(shape)
