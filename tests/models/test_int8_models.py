"""Whole int8 models: onnxruntime.quantization's files, compiled by sqc, against onnxruntime.

The tiny BERT fixture is quantized here four ways (quantize_dynamic per tensor and per
channel; quantize_static in QDQ format with int8 and with uint8 activations/weights), so the
test covers exactly the files users make with onnxruntime's tools. `--quantize dynamic`
(sqc's own compile-time quantization of a float model) is checked against the float model.
The real model (../shared/models) quantized dynamically answers like onnxruntime on SQuAD
windows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sqc.compiler.codegen.build import TARGETS
from sqc.runtime.engine import generate_random_inputs
from tests.conftest import FIXTURES, REAL_MODEL
from tests.tolerances import TOLERANCE, relative_error

SOURCE = FIXTURES / "bert_qa_opset17.onnx"
BUCKETS = (16, 24)
FORMS = ("dynamic", "dynamic_per_channel", "qdq_s8", "qdq_u8_per_channel")


class _Reader:
    """Calibration inputs for quantize_static: seeded random token windows."""

    def __init__(self, names, count=8):
        rng = np.random.default_rng(0)
        self._it = iter(
            [
                {
                    names[0]: rng.integers(1, 100, (1, 16)).astype(np.int64),
                    names[1]: np.ones((1, 16), np.int64),
                    names[2]: np.zeros((1, 16), np.int64),
                }
                for _ in range(count)
            ]
        )

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """form -> path of the fixture quantized by onnxruntime.quantization in that form."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    out = tmp_path_factory.mktemp("int8")
    names = [i.name for i in onnx.load(str(SOURCE)).graph.input]
    reader = type("Reader", (_Reader, CalibrationDataReader), {})
    paths = {form: out / f"{form}.onnx" for form in FORMS}
    quantize_dynamic(SOURCE, paths["dynamic"])
    quantize_dynamic(SOURCE, paths["dynamic_per_channel"], per_channel=True)
    quantize_static(SOURCE, paths["qdq_s8"], reader(names), quant_format=QuantFormat.QDQ)
    quantize_static(
        SOURCE,
        paths["qdq_u8_per_channel"],
        reader(names),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QUInt8,
        per_channel=True,
    )
    return paths


def _session(path, optimize: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("form", FORMS)
def test_int8_fixture_matches_onnxruntime(compile_onnx, quantized, form):
    """Against onnxruntime as users run it (optimized) and as the graph says (unoptimized).

    Per example: sqc quantizes each example on its own range (dynamic forms), so the reference
    runs one example at a time. A float difference of an ulp can move one activation across a
    rounding boundary and change the logits by a quantization step (onnxruntime's optimized and
    unoptimized runs of one file differ so too): against the unoptimized graph every example is
    within ``int8_model`` and most are exact to ``f32_model``; a real error (a wrong zero point
    or scale) moves every example."""
    engine = compile_onnx(quantized[form], buckets=BUCKETS, max_batch_size=4)
    sessions = {opt: _session(quantized[form], opt) for opt in (True, False)}
    strict = []
    for seq in BUCKETS:
        inputs = generate_random_inputs(engine, 4, seq, seed=seq)
        got = engine.run(inputs)
        for b in range(4):
            feeds = {n: x[b : b + 1] for n, x in zip(engine.input_names, inputs)}
            for optimize, session in sessions.items():
                want = session.run(None, feeds)
                err = max(relative_error(g[b : b + 1], w) for g, w in zip(got, want))
                row = "int8_model_ort_fused" if optimize else "int8_model"
                assert err <= TOLERANCE[row], f"{form} s{seq} example {b} ({row}): {err}"
                if not optimize:
                    strict.append(err <= TOLERANCE["f32_model"])
    assert np.mean(strict) >= 0.75, f"{form}: only {sum(strict)} of {len(strict)} exact"


@pytest.mark.parametrize("form", FORMS)
def test_every_linear_layer_runs_int8(compile_onnx, quantized, form):
    engine = compile_onnx(quantized[form], buckets=BUCKETS, max_batch_size=4)
    layers = json.loads((engine.path / "manifest.json").read_text())["layers"]
    ops = [layer["op"] for layer in layers]
    # 2 layers x 6 linear layers + the QA head; the dynamic forms' Q, K and V projections
    # (bias fused, read only by attention) merge into one. In QDQ files rounding steps
    # between each projection and attention keep them apart.
    expected_count = 13 if form.startswith("qdq") else 9
    assert ops.count("QLinear") == expected_count and "Linear" not in ops, ops
    expected = "qdq" if form.startswith("qdq") else "dynamic"
    assert {layer["quantization"]["form"] for layer in layers if layer["op"] == "QLinear"} == {
        expected
    }
    source = (engine.path / "model.c").read_text()
    body = source[source.index("int sqc_run_chunk_s16(") : source.index("int sqc_run_s16(")]
    assert "(MatMulInteger)" not in body
    # QDQ: each encoder layer's Q, K and V projections read the bytes the LayerNorm before
    # them writes (passes/quantize_layernorm.py), as do the FFN's first layers: no
    # QuantizeLinear is left, and every LayerNorm (embeddings, 2 per layer) writes bytes
    quantize = [line for line in body.splitlines() if "(QuantizeLinear)" in line]
    assert not quantize, quantize
    assert body.count("sqc_layernorm_q(") == (5 if form.startswith("qdq") else 0)
    # Attention is one kernel in every form; in QDQ files with its four rounding stages, and
    # (Q, K, V and the probabilities on grids) integer products on this VNNI machine.
    assert body.count("(sqc.Attention)") == 2
    kernels = {layer["kernel"] for layer in layers if layer["op"] == "Attention"}
    vnni = TARGETS[engine.manifest["target"]["isa"]]["int8_isa"] != "avx2"
    if form.startswith("qdq") and vnni:
        assert kernels == {"sqc_attention_q8"} and body.count("sqc_attention_q8(B") == 2
    else:
        assert kernels == {"sqc_attention_f32"}
    assert "(MatMul)" not in body and "(Softmax)" not in body and "(Erf)" not in body


def test_compile_time_dynamic_quantization_stays_close_to_float(compile_onnx):
    """`--quantize dynamic`: int8 per-column weights, per-example activations; every linear
    layer int8, logits within 3% of the float model's largest logit (measured: under 1%)."""
    engine = compile_onnx(SOURCE, buckets=(16,), max_batch_size=4, quantize="dynamic")
    float_engine = compile_onnx(SOURCE, buckets=(16,), max_batch_size=4)
    layers = json.loads((engine.path / "manifest.json").read_text())["layers"]
    assert [layer["op"] for layer in layers].count("QLinear") == 9
    inputs = generate_random_inputs(engine, 4, 16, seed=5)
    for g, w in zip(engine.run(inputs), float_engine.run(inputs)):
        err = relative_error(g, w)
        assert 0 < err <= 0.03, err


def test_quantize_option_is_checked(tmp_path):
    from sqc.compiler.driver import compile_model
    from sqc.compiler.ir import CompileError

    with pytest.raises(CompileError, match="quantize must be one of none, dynamic"):
        compile_model(SOURCE, [16], tmp_path / "a", quantize="int4")


@pytest.mark.skipif(not REAL_MODEL.exists(), reason="../shared/models is not beside the checkout")
def test_real_model_dynamic_int8_answers_like_onnxruntime(compile_onnx, tmp_path):
    """The real model through quantize_dynamic, on 100 SQuAD windows: the best start and end
    tokens agree with onnxruntime (optimized) on the same int8 file as often as onnxruntime's
    optimized and unoptimized runs of that file agree with each other (less 2 points), and on
    at least 90% of windows. Int8 rounding flips make the two onnxruntime runs differ too."""
    from onnxruntime.quantization import quantize_dynamic

    from tests.models.test_models_vs_onnxruntime import squad_windows

    path = tmp_path / "minilm-dynamic-int8.onnx"
    quantize_dynamic(REAL_MODEL, path)
    engine = compile_onnx(path, buckets=(384,), max_batch_size=8)
    optimized, plain = _session(path, True), _session(path, False)
    ids, mask, types = squad_windows(100, 384)
    sqc_agree = ort_agree = total = 0
    for start in range(0, len(ids), 8):
        chunk = [a[start : start + 8] for a in (ids, mask, types)]
        got = engine.run(chunk)
        for b in range(len(chunk[0])):
            feeds = {n: x[b : b + 1] for n, x in zip(engine.input_names, chunk)}
            want, other = optimized.run(None, feeds), plain.run(None, feeds)
            best = [int(w[0].argmax()) for w in want]
            sqc_agree += [int(g[b].argmax()) for g in got] == best
            ort_agree += [int(o[0].argmax()) for o in other] == best
            total += 1
    assert total >= 100
    assert sqc_agree >= min(ort_agree - 0.02 * total, 0.99 * total), (sqc_agree, ort_agree, total)
    assert sqc_agree >= 0.9 * total, (sqc_agree, total)


@pytest.mark.parametrize("target", ["avx2", "avxvnni"])
def test_int8_model_on_every_target(compile_onnx, quantized, target):
    """The same int8 file built for the lesser targets (AVX2's 16-bit multiplies, AVX-VNNI's
    ymm vpdpbusd) gives the native build's logits: the integer GEMMs are exact everywhere."""
    from sqc.runtime.cpu import cpu_features

    needs = {"avx2": {"avx2", "fma"}, "avxvnni": {"avx2", "fma", "avx_vnni"}}[target]
    if not needs <= cpu_features():
        pytest.skip(f"this CPU lacks {sorted(needs - cpu_features())}")
    native = compile_onnx(quantized["qdq_s8"], buckets=(16,), max_batch_size=4)
    other = compile_onnx(quantized["qdq_s8"], buckets=(16,), max_batch_size=4, target=target)
    inputs = generate_random_inputs(native, 3, 16, seed=11)
    for g, w in zip(other.run(inputs), native.run(inputs)):
        assert relative_error(g, w) <= TOLERANCE["f32_model"]


def test_amx_build_where_the_os_withholds_amx_gives_the_same_bits(
    compile_onnx, quantized, tmp_path
):
    """An avx512amx build in a process that Linux refuses the AMX permission (as a kernel
    without AMX support would; sqc.runtime.cpu.withhold_amx) runs its VNNI code, integer
    attention and the GEMMs whose K allows tiles alike, and gives the AMX run's logits bit
    for bit."""
    import subprocess
    import sys

    from sqc.runtime.cpu import amx_granted

    built = compile_onnx(quantized["qdq_s8"], buckets=(16,), max_batch_size=4)
    if built.manifest["target"]["isa"] != "avx512amx":
        pytest.skip("not an AMX CPU")
    inputs = generate_random_inputs(built, batch_size=4, sequence_length=16, seed=2)
    want = built.run(inputs)
    assert amx_granted(), "the AMX build ran without asking for its tiles"
    np.savez(tmp_path / "inputs.npz", *inputs)
    script = (
        "import sys, numpy as np\n"
        "from sqc.runtime.cpu import amx_granted, withhold_amx\n"
        "from sqc.runtime.engine import Engine\n"
        "withhold_amx()\n"
        "saved = np.load(sys.argv[2])\n"
        "inputs = [saved[f'arr_{i}'] for i in range(len(saved.files))]\n"
        "out = Engine(sys.argv[1]).run(inputs)\n"
        "assert not amx_granted()\n"
        "np.savez(sys.argv[3], *out)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, built.path, tmp_path / "inputs.npz", tmp_path / "o.npz"],
        check=True,
        timeout=120,
    )
    got = np.load(tmp_path / "o.npz")
    assert len(got.files) == len(want)
    for i, w in enumerate(want):
        g = got[f"arr_{i}"]
        assert np.array_equal(g, w), f"output {i}: max |diff| {np.abs(g - w).max()}"


def test_layers_hand_the_integer_attention_its_levels(compile_onnx, quantized):
    """fuse_lut_epilogue, patterns 2 and 3: where attention runs on integers (sqc_attention_q8),
    the Q, K and V layers write their levels as bytes (no floats) and attention reads them as
    they are, and writes its own output's levels for the next layer: the levels recovered
    from the floats before, so the logits are bit for bit those of the build without it."""
    built = compile_onnx(quantized["qdq_s8"], buckets=(16,), max_batch_size=4)
    if TARGETS[built.manifest["target"]["isa"]]["int8_isa"] == "avx2":
        pytest.skip("no integer attention on this target")
    plain = compile_onnx(
        quantized["qdq_s8"], buckets=(16,), max_batch_size=4, disable=("fuse_lut_epilogue",)
    )
    levels = [
        x["name"]
        for x in built.manifest["layers"]
        if "read by the integer attention" in x.get("quantization", {}).get("epilogue", "")
    ]
    assert len(levels) == 6 and all(k in " ".join(levels) for k in ("query", "key", "value"))
    source = (built.path / "model.c").read_text()
    assert source.count("sqc_attention_q8(B") == 2
    attention = [x for x in built.manifest["layers"] if x["op"] == "Attention"]
    assert [x.get("uint8_levels") for x in attention] == ["q, k, v, output"] * 2
    amx = built.manifest["target"]["isa"] == "avx512amx"  # the products' tiles, said
    assert all(("integer products" in x["why"]) and ("AMX" in x["why"]) == amx for x in attention)
    dense = [x for x in built.manifest["layers"] if "attention/output/dense" in x["name"]]
    assert {x["quantization"]["activations"] for x in dense} == {"uint8 input"}
    for seed in range(3):
        inputs = generate_random_inputs(built, batch_size=4, sequence_length=16, seed=seed)
        for a, b in zip(built.run(inputs), plain.run(inputs)):
            assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()}"


@pytest.mark.parametrize("form", ["qdq_s8", "qdq_u8_per_channel"])
def test_qdq_epilogue_fusion_changes_no_bit(compile_onnx, quantized, form):
    """passes/fuse_quant_epilogue.py moves the QDQ rounding after each int8 layer into the GEMM
    epilogue and tabulates the QDQ GELU, fuse_lut_epilogue has the layer before the table
    look its bytes up, and quantize_layernorm has the LayerNorms write bytes and take the
    residual stages: the same float operations in the same order (or, for stage b folded,
    operations checked at compile time to give the same levels), so the logits are
    bit-identical to the unfused build's."""
    # int8_attention (integer products, not bit-identical by design) is off in both builds
    fused = compile_onnx(
        quantized[form], buckets=(16,), max_batch_size=3, disable=("int8_attention",)
    )
    plain = compile_onnx(
        quantized[form],
        buckets=(16,),
        max_batch_size=3,
        disable=("fuse_quant_epilogue", "int8_attention"),
    )
    layers = [x for x in fused.manifest["layers"] if x["op"] == "QLinear"]
    assert any("epilogue" in x["quantization"] for x in layers), "no epilogue was fused"
    assert not any(
        "epilogue" in x["quantization"] for x in plain.manifest["layers"] if x["op"] == "QLinear"
    )
    ops = [p["op"] for p in fused.manifest["profile"]["16"]]
    assert ops.count("sqc.Elementwise") < [p["op"] for p in plain.manifest["profile"]["16"]].count(
        "sqc.Elementwise"
    ), "no elementwise loop was removed"
    # the GELU table runs in the first FFN layer's epilogue (passes/fuse_lut_epilogue.py)
    assert "sqc.QLinear+Elementwise" in ops
    assert any("table: uint8" in str(x["quantization"]) for x in layers)
    # stage b folded into one multiply-add (emit_quant.fold_stage_b) where stages a and b meet:
    # still the same bits
    assert any("stage b folded" in x["quantization"].get("epilogue", "") for x in layers)
    # the LayerNorms write the bytes the next layers read, and add the residual from them
    # (passes/quantize_layernorm.py): no QuantizeLinear pass is left
    kernels = [x["kernel"] for x in fused.manifest["layers"] if x["op"] == "SkipLayerNorm"]
    assert "sqc_layernorm_q (uint8 skip, sum rounded, uint8 output)" in kernels, kernels
    assert "QuantizeLinear" not in ops
    for seed in range(3):
        inputs = generate_random_inputs(fused, batch_size=3, sequence_length=16, seed=seed)
        for a, b in zip(fused.run(inputs), plain.run(inputs)):
            assert np.array_equal(a, b), f"max |diff| {np.abs(a - b).max()}"
