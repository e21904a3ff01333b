"""Make the bundled default model, examples/models/minilm-l6-qa/, from the shared MiniLM QA model.

Run from anywhere (paths are relative to the repository root):

    python examples/make_bundled_model.py

It reads ../shared/models/minilm-l6-qa/ beside the repository (or $SQC_SHARED/models/minilm-l6-qa)
and writes examples/models/minilm-l6-qa/:

* model.onnx: the same graph, but every float32 initializer with more than 1024 elements
  (embeddings, weight matrices, FFN biases) is stored as float16, named `<name>.fp16`, and a
  `Cast(to=FLOAT)` node at the top of the graph turns it back into the float32 tensor `<name>`
  that the rest of the graph reads. It is a valid ONNX model that onnxruntime runs as it is (its
  constant folding removes the Casts); sqc's compiler folds them at compile time. The weights
  the model computes with are the original ones rounded to float16 (all of them are far inside
  the float16 range); the small tensors (biases of 384, LayerNorm gains and shifts, the token
  type table, the QA head) stay float32. About half the size of the float32 file.
* tokenizer.json, config.json: copied unchanged.

Deterministic: the same input gives the same bytes. It checks the result with onnx's checker
and against the float32 model in onnxruntime on one input, then prints the sizes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQC_SHARED", ROOT.parent / "shared"))
SOURCE = SHARED / "models" / "minilm-l6-qa"
DEST = ROOT / "examples" / "models" / "minilm-l6-qa"
MIN_ELEMENTS = 1024  # initializers with more elements than this are stored as float16
MAX_BYTES = 50 * 1000 * 1000
FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16_storage(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` whose large float32 initializers are float16 + Cast(to=FLOAT).
    Returns (model, number of initializers converted)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # deep copy
    graph = model.graph
    taken = {i.name for i in graph.initializer} | {n for node in graph.node for n in node.output}
    casts = []
    converted = 0
    for index, init in enumerate(graph.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) <= MIN_ELEMENTS:
            continue
        name = init.name  # `init` is overwritten below
        array = numpy_helper.to_array(init)
        peak = float(np.abs(array).max())
        if not np.isfinite(peak) or peak > FP16_MAX:
            raise SystemExit(f"{name}: |value| up to {peak} does not fit float16")
        stored = f"{name}.fp16"
        if stored in taken:
            raise SystemExit(f"name clash: {stored}")
        half = numpy_helper.from_array(array.astype(np.float16), stored)
        graph.initializer[index].CopyFrom(half)
        casts.append(
            helper.make_node(
                "Cast",
                [stored],
                [name],
                name=f"Cast_fp16_storage/{name}",
                to=TensorProto.FLOAT,
            )
        )
        converted += 1
    # The Casts read initializers only, so they may all go first: the order stays topological.
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    model.doc_string = (
        f"float32 initializers with more than {MIN_ELEMENTS} elements stored as float16, each "
        "followed by Cast(to=FLOAT); made by sqc examples/make_bundled_model.py"
    )
    return model, converted


def compare_in_onnxruntime(fp32_path: Path, fp16_path: Path) -> float:
    """Largest |difference| of the start/end logits of the two models on one QA-like input."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(2, 64), dtype=np.int64)
    ids[:, 0], ids[:, 12], ids[:, -1] = 101, 102, 102  # [CLS] question [SEP] context [SEP]
    types = np.zeros_like(ids)
    types[:, 13:] = 1
    mask = np.ones_like(ids)
    mask[1, 40:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    outputs = []
    for path in (fp32_path, fp16_path):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, feeds))
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*outputs))


def main() -> int:
    source_model = SOURCE / "model.onnx"
    if not source_model.exists():
        raise SystemExit(f"{source_model}: not found (set SQC_SHARED to the shared folder)")
    DEST.mkdir(parents=True, exist_ok=True)

    model = onnx.load(str(source_model))
    converted_model, converted = to_fp16_storage(model)
    onnx.checker.check_model(converted_model)
    target = DEST / "model.onnx"
    onnx.save(converted_model, str(target))
    for name in ("tokenizer.json", "config.json"):
        shutil.copyfile(SOURCE / name, DEST / name)

    size = target.stat().st_size
    diff = compare_in_onnxruntime(source_model, target)
    print(f"{source_model}: {source_model.stat().st_size:,} bytes")
    print(
        f"{target}: {size:,} bytes ({converted} of {len(model.graph.initializer)} initializers "
        f"stored as float16); max |logit diff| vs float32 in onnxruntime: {diff:.3g}"
    )
    for name in ("tokenizer.json", "config.json"):
        print(f"{DEST / name}: {(DEST / name).stat().st_size:,} bytes")
    if size > MAX_BYTES:
        raise SystemExit(f"{target} is {size:,} bytes, over {MAX_BYTES:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
