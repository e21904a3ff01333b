"""Make the benchmark models: bert-base and distilbert-base sized QA models (random, seeded
weights; speed does not depend on their values), exported by torch as users export theirs, and
their int8 forms made by onnxruntime.quantization as users make theirs.

    python benchmarks/make_models.py [KIND...]   # -> artifacts/bench/*.onnx (not committed)

KIND: bert-base, distilbert-base, or either (or minilm-l6-qa, the real model in ../shared)
with a suffix -int8-dynamic (quantize_dynamic: int8 weights per tensor, uint8 activations
quantized at run time), -int8-qdq (quantize_static's defaults, QDQ format: int8 weights and
activations of every op it knows, attention's softmax and mask add included) or
-int8-qdq-matmul (the same, MatMul only: the common choice for transformers, since an int8 grid
over an additive attention mask of -10000 wipes out the scores). A model kind may carry a
pruning before the int8 suffix: -pruned90 (`sqc prune --sparsity 0.9`, unstructured, each
linear layer of the encoder) or -pruned90-1o4i / -pruned90-4o1i (blocks), e.g.
bert-base-pruned90-1o4i-int8-dynamic: pruned, then quantized. Calibration: MinMax over 32
windows: SQuADShifts new_wiki questions (384 tokens) for the real model, which does not overlap
SQuAD dev; random token windows (128) for the random-weight models.
Needs torch==2.13.0 and transformers 4.x (the test extra installs both).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "artifacts" / "bench"


def export(kind: str, path: Path) -> None:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "bert-base":
        model = tf.BertForQuestionAnswering(tf.BertConfig(attn_implementation="eager"))
        names = ["input_ids", "attention_mask", "token_type_ids"]
    elif kind == "distilbert-base":
        model = tf.DistilBertForQuestionAnswering(tf.DistilBertConfig(attn_implementation="eager"))
        names = ["input_ids", "attention_mask"]
    else:
        raise SystemExit(f"unknown model kind {kind}")
    model.eval()
    ids = torch.randint(1000, 30000, (2, 128))
    mask = torch.ones(2, 128, dtype=torch.int64)
    args = (ids, mask, torch.zeros(2, 128, dtype=torch.int64))[: len(names)]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["start_logits", "end_logits"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["start_logits", "end_logits"],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB)")


SHARED_MODELS = {"minilm-l6-qa": ROOT.parent / "shared" / "models" / "minilm-l6-qa" / "model.onnx"}
INT8_FORMS = ("int8-dynamic", "int8-qdq-matmul", "int8-qdq")


def model_path(kind: str) -> Path:
    for form in INT8_FORMS:
        if kind.endswith("-" + form):
            return quantized_path(kind[: -len(form) - 1], form)
    pruned = _PRUNED.fullmatch(kind)
    if pruned:
        return pruned_path(pruned["base"], int(pruned["percent"]), pruned["block"] or "")
    if kind in SHARED_MODELS:
        return SHARED_MODELS[kind]
    path = OUT / f"{kind}-qa.onnx"
    if not path.exists():
        export(kind, path)
    return path


def base_kind(kind: str) -> str:
    """bert-base-pruned90-int8-qdq -> bert-base."""
    for form in INT8_FORMS:
        kind = kind.removesuffix("-" + form)
    pruned = _PRUNED.fullmatch(kind)
    return pruned["base"] if pruned else kind


_PRUNED = re.compile(r"(?P<base>.+)-pruned(?P<percent>\d\d)(?:-(?P<block>1o4i|4o1i))?")


def pruned_path(kind: str, percent: int, block: str) -> Path:
    from sqc.compiler.prune import prune_model

    suffix = f"-pruned{percent}" + (f"-{block}" if block else "")
    src = model_path(kind)
    path = OUT / f"{kind}{suffix}.onnx"
    if not path.exists():
        layers = prune_model(src, path, percent / 100, block or "unstructured")
        print(f"wrote {path} ({len(layers)} linear layers pruned to {percent}%)")
    return path


def quantized_path(kind: str, form: str) -> Path:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    src = model_path(kind)
    path = OUT / f"{kind}-{form}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "int8-dynamic":
        quantize_dynamic(src, path)
    else:
        quantize_static(
            src,
            path,
            _Calibration(src, kind),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"] if form == "int8-qdq-matmul" else None,
        )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return path


class _Calibration:
    """32 windows of 128 tokens: real questions for the real model, random ids otherwise."""

    def __init__(self, src: Path, kind: str):
        import json

        import numpy as np
        import onnx

        names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
        if kind in SHARED_MODELS:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(src.parent / "tokenizer.json"))
            tok.enable_truncation(384, strategy="only_second")
            tok.enable_padding(length=384)
            data = json.loads(
                (ROOT.parent / "shared/data/squadshifts/new_wiki_v1.0.json").read_text()
            )["data"]
            pairs = [
                (qa["question"], p["context"])
                for a in data
                for p in a["paragraphs"]
                for qa in p["qas"]
            ][:32]
            encs = [tok.encode(q, c) for q, c in pairs]
            arrays = {
                "input_ids": [e.ids for e in encs],
                "attention_mask": [e.attention_mask for e in encs],
                "token_type_ids": [e.type_ids for e in encs],
            }
        else:
            rng = np.random.default_rng(0)
            arrays = {
                "input_ids": rng.integers(1000, 30000, (32, 128)),
                "attention_mask": np.ones((32, 128)),
                "token_type_ids": np.zeros((32, 128)),
            }
        self._feeds = iter(
            [{n: np.asarray(arrays[n][i : i + 1], np.int64) for n in names} for i in range(32)]
        )

    def get_next(self):
        return next(self._feeds, None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=["bert-base", "distilbert-base"])
    for kind in parser.parse_args().kinds:
        model_path(kind)
