"""Make the benchmark models: bert-base and distilbert-base sized QA models (random, seeded
weights; speed does not depend on their values), exported by torch as users export theirs.

    python benchmarks/make_models.py            # -> artifacts/bench/*.onnx (not committed)

Needs torch==2.13.0 and transformers 4.x (the test extra installs both).
"""

from __future__ import annotations

import argparse
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


def model_path(kind: str) -> Path:
    path = OUT / f"{kind}-qa.onnx"
    if not path.exists():
        export(kind, path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=["bert-base", "distilbert-base"])
    for kind in parser.parse_args().kinds:
        model_path(kind)
