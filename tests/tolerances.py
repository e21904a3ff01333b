"""Every numerical tolerance of the test suite, one row per op family and dtype, with its reason.

Errors are measured as max |sqc - onnxruntime| / max(|onnxruntime|, 1e-6) over an output.
"""

TOLERANCE = {
    # Integer and boolean results, data movement, comparisons: bit-exact by construction.
    "exact": 0.0,
    # One float op per element (add, mul, div, cast...): both round once; the order of a
    # broadcast is the same.
    "f32_elementwise": 1e-6,
    # libm's expf/erff/tanhf/logf vs MLAS's vectorised approximations: a few ulps.
    "f32_transcendental": 1e-5,
    # Dot products: sqc and MLAS sum in different orders (K up to 3072 in BERT-base):
    # error grows like sqrt(K) * eps; 1e-5 covers K = 3072 with margin.
    "f32_matmul": 1e-5,
    # Row statistics (LayerNorm, Softmax): different summation order and rsqrt.
    "f32_normalization": 1e-5,
    # An int8 linear layer with a float bias: the integer part is exact, then one float
    # multiply by the same float32 scale product; sqc fuses the bias add into an FMA
    # (onnxruntime rounds the product first), so at most one rounding apart.
    "int8_linear": 1e-6,
    # Whole int8 models (onnxruntime.quantization files), per example: integer GEMMs are exact
    # and float steps round as onnxruntime's do, but one ulp of difference elsewhere (LayerNorm,
    # softmax, onnxruntime's fused requantization) can move an activation across a rounding
    # boundary of the next quantization: the logits then move by a fraction of a step.
    # Against onnxruntime running the graph as written (optimizations off).
    "int8_model": 3e-2,
    # Against onnxruntime's optimized run, whose fused QLinear ops requantize with one float
    # multiplier (acc * sa * sb / sy) where the QDQ graph divides by sy: its optimized and
    # unoptimized runs of one QDQ fixture differ by 2.4e-2 on their own.
    "int8_model_ort_fused": 1e-1,
    # Whole fp32 models: logits, the acceptance bar (max abs error at most 1e-4 relative
    # to the largest logit), from dozens of layers of the above.
    "f32_model": 1e-4,
}


def relative_error(got, want) -> float:
    import numpy as np

    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"shape {got.shape} != reference {want.shape}")
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-6))
