"""com.microsoft ops from ONNX Runtime's transformer optimizer.

They are accepted by the frontend, given shapes by ``specialize_shapes`` through the rules
below, and rewritten into ai.onnx and sqc ops by the ``lower_contrib_ops`` pass; they have no
evaluator and no C emitter of their own.
"""

import numpy as np

from sqc.compiler.ops import register

MS = "com.microsoft"


def _attention_infer(node, x, opset):
    hidden = x[1][1][1] // 3
    if node.attrs.get("qkv_hidden_sizes"):
        hidden = node.attrs["qkv_hidden_sizes"][2]
    return [(x[0][0], tuple(x[0][1][:-1]) + (hidden,))]


def _skip_ln_infer(node, x, opset):
    shape = x[0][1]
    stats = (np.dtype(np.float32), tuple(shape[:-1]) + (1,))
    return [x[0], stats, stats, x[0]][: len(node.outputs)]


def _embed_ln_infer(node, x, opset):
    ids_shape = x[0][1]
    hidden = x[2][1][1]
    out = (x[2][0], tuple(ids_shape) + (hidden,))
    mask_index = (np.dtype(np.int32), (ids_shape[0],))
    return [out, mask_index, out][: len(node.outputs)]


def _same_infer(node, x, opset):
    return [x[0]]


register(
    "Attention",
    MS,
    infer=_attention_infer,
    attrs=(
        "num_heads",
        "unidirectional",
        "qkv_hidden_sizes",
        "mask_filter_value",
        "scale",
        "do_rotary",
        "past_present_share_buffer",
    ),
)(None)
register("SkipLayerNormalization", MS, attrs=("epsilon",), infer=_skip_ln_infer)(None)
register(
    "EmbedLayerNormalization", MS, attrs=("epsilon", "mask_index_type"), infer=_embed_ln_infer
)(None)
register("BiasGelu", MS, infer=_same_infer)(None)
register("FastGelu", MS, infer=_same_infer)(None)
register("Gelu", MS, infer=_same_infer)(None)
