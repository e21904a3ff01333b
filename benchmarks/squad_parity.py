"""sqc vs onnxruntime on SQuAD v1.1 dev: EM/F1, per-question agreement, and where time goes.

    python benchmarks/squad_parity.py [--model minilm-l6-qa] [--quantize dynamic]
        [--limit N] [--threads 2] [--write BENCHMARKS.md]

Both engines run the same ONNX file (by default ../shared/models/minilm-l6-qa/model.onnx;
--model minilm-l6-qa-int8-dynamic / -int8-qdq: onnxruntime.quantization's int8 files, see
benchmarks/make_models.py) through the same QuestionAnsweringPipeline (windows of 384, stride
128, max_answer_length 30, 32 questions a call). With --quantize dynamic sqc compiles the file
with `sqc compile --quantize dynamic` while onnxruntime runs it as it is: the table then shows
what sqc's compile-time int8 costs in accuracy. Engine time is measured inside the pipeline by
a wrapper around ``engine.run``; the rest of the pipeline's time is tokenization, batching and
span decoding.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "minilm-l6-qa" / "model.onnx"
SQUAD = SHARED / "data" / "squad" / "dev-v1.1.reconstructed.json"
MARK_BEGIN = "<!-- squad_parity:begin -->"
MARK_END = "<!-- squad_parity:end -->"


class Timed:
    """An engine wrapper that adds up the time spent in ``run``."""

    def __init__(self, engine):
        self.engine = engine
        self.seconds = 0.0
        self.windows = 0
        for name in ("buckets", "max_batch_size", "input_names", "output_names"):
            setattr(self, name, getattr(engine, name))

    def run(self, inputs):
        began = time.perf_counter()
        out = self.engine.run(inputs)
        self.seconds += time.perf_counter() - began
        self.windows += len(next(iter(inputs.values())))
        return out


def evaluate(engine, limit):
    from sqc.runtime.qa import QuestionAnsweringPipeline
    from sqc.runtime.squad import evaluate_pipeline

    timed = Timed(engine)
    qa = QuestionAnsweringPipeline(timed, MODEL.parent / "tokenizer.json", max_answer_length=30)
    metrics, preds = evaluate_pipeline(
        qa,
        SQUAD,
        limit=limit,
        batch_size=32,
        progress=lambda d, t: print(f"\r  {d}/{t}", end="", flush=True),
    )
    print()
    metrics["engine_seconds"] = timed.seconds
    metrics["windows"] = timed.windows
    return metrics, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6-qa")
    parser.add_argument("--quantize", default="none", choices=["none", "dynamic"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="write the table of the last run's JSON (same options) without running again",
    )
    args = parser.parse_args()

    from make_models import model_path

    from sqc.compiler.driver import compile_model
    from sqc.runtime.engine import Engine
    from sqc.runtime.reference import OnnxRuntimeEngine

    tag = args.model + ("-quantize-dynamic" if args.quantize != "none" else "")
    json_path = args.json or ROOT / "artifacts" / f"squad_parity-{tag}.json"
    if args.render_only:
        table = render(json.loads(json_path.read_text()), args)
        print(table)
        if args.write:
            from compare_onnxruntime import write_section

            write_section(args.write, table, *markers(args))
        return
    model = model_path(args.model)
    # onnxruntime's DynamicQuantizeLinear takes one range over the whole batch tensor, sqc's
    # one per example (answers that do not depend on the batch): for a like-for-like answer
    # comparison onnxruntime runs such files one window at a time.
    dynamic = _has_dynamic_quantization(model)
    artifact = compile_model(
        model,
        [384],
        ROOT / "artifacts" / f"{tag}-384",
        max_batch_size=32,
        quantize=args.quantize,
    )
    results = {}
    for name, engine in (
        ("sqc", Engine(artifact, threads=args.threads)),
        (
            "onnxruntime",
            OnnxRuntimeEngine(
                model, [384], max_batch_size=32, threads=args.threads, per_example=dynamic
            ),
        ),
    ):
        print(name)
        results[name] = evaluate(engine, args.limit)
    (sm, sp), (om, op) = results["sqc"], results["onnxruntime"]
    same = sum(sp[k] == op[k] for k in sp)
    summary = {
        "onnxruntime_per_example": dynamic,
        "sqc": sm,
        "onnxruntime": om,
        "questions": len(sp),
        "identical_answers": same,
        "differing_ids": [k for k in sp if sp[k] != op[k]][:50],
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=1))
    table = render(summary, args)
    print(table)
    if args.write:
        from compare_onnxruntime import write_section

        write_section(args.write, table, *markers(args))


def _has_dynamic_quantization(model) -> bool:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return any(n.op_type == "DynamicQuantizeLinear" for n in graph.node)


def markers(args) -> tuple[str, str]:
    if args.model == "minilm-l6-qa" and args.quantize == "none":
        return MARK_BEGIN, MARK_END
    tag = args.model + (f":quantize-{args.quantize}" if args.quantize != "none" else "")
    return f"<!-- squad_parity:{tag}:begin -->", f"<!-- squad_parity:{tag}:end -->"


def render(s, args) -> str:
    begin, end = markers(args)
    options = "".join(
        f" --{k} {v}"
        for k, v in (("model", args.model), ("quantize", args.quantize))
        if v not in ("minilm-l6-qa", "none")
    )
    rows = []
    for name in ("sqc", "onnxruntime"):
        m = s[name]
        other = m["seconds"] - m["engine_seconds"]
        rows.append(
            f"| {name} | {m['exact_match']:.2f} | {m['f1']:.2f} | "
            f"{m['questions_per_second']:.1f} | {m['windows'] / m['engine_seconds']:.1f} | "
            f"{100 * other / m['seconds']:.1f}% |"
        )
    return "\n".join(
        [
            begin,
            f"Measured {datetime.date.today().isoformat()}, {args.threads} threads, Python "
            f"{platform.python_version()}; command: `python benchmarks/squad_parity.py{options} "
            f"--threads {args.threads}{f' --limit {args.limit}' if args.limit else ''} "
            "--write BENCHMARKS.md`.",
            "",
            f"Questions: {s['questions']}; identical answers: {s['identical_answers']} "
            f"({100 * s['identical_answers'] / s['questions']:.2f}%)."
            + (
                " onnxruntime ran one window per call (its DynamicQuantizeLinear ranges over "
                "the whole batch; sqc's over each example), so its speed here is not its "
                "batched speed."
                if s.get("onnxruntime_per_example")
                else ""
            ),
            "",
            "| engine | EM | F1 | pipeline questions/s (tokenization included) | engine-only "
            "windows/s | share of pipeline time outside the engine (tokenize, batch, decode) |",
            "|---|---|---|---|---|---|",
            *rows,
            end,
        ]
    )


if __name__ == "__main__":
    main()
