"""compile_model: ONNX file in, artifact directory out (DESIGN.md, "The artifact").

load -> per bucket: passes (compiler/pipeline.py) -> emit C -> one library for all buckets
(cffi) + weights.bin shared by every bucket + manifest.json + tokenizer files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import sqc
from sqc.compiler.codegen.build import TARGETS, build_library, gcc_version
from sqc.compiler.codegen.emit_c import WeightsTable, attention_kernel, emit_model_source
from sqc.compiler.codegen.kernels import (
    f32_gemm_variant,
    int8_gemm_variant,
    sparse_gemm_variant,
)
from sqc.compiler.frontend.load_onnx import load_onnx
from sqc.compiler.ir import CompileError, Graph
from sqc.compiler.passes.extract_sparsity import SPARSE_MODES
from sqc.compiler.passes.quantize_dynamic import QUANTIZE_MODES
from sqc.compiler.passes.specialize_shapes import input_dims
from sqc.compiler.pipeline import check_pass_names, graph_text, run_passes

FORMAT_VERSION = 3  # 3: sqc_run_s* take a profile buffer; manifest has "profile"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
)
DEFAULT_MAX_BATCH = 64


def host_cpu_features() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_target(target: str) -> str:
    if target == "native":
        features = host_cpu_features()
        for name, spec in TARGETS.items():
            if set(spec["cpu_features"]) <= features:
                return name
        raise CompileError("this CPU has neither AVX-512 nor AVX2 with FMA; sqc needs one of them")
    if target not in TARGETS:
        raise CompileError(f"unknown target '{target}'; use native, {', '.join(TARGETS)}")
    return target


def parse_buckets(buckets) -> list[int]:
    """[16, 128] from "16,128", [16, 128] or 128; every bucket a positive integer."""
    if isinstance(buckets, (int, np.integer)):
        buckets = [buckets]
    if isinstance(buckets, str):
        buckets = [b.strip() for b in buckets.split(",")]
    out = []
    for b in buckets:
        try:
            value = int(b)
            if str(b).strip().lstrip("+") != str(value) and not isinstance(b, (int, np.integer)):
                raise ValueError
        except (TypeError, ValueError):
            raise CompileError(f"bucket '{b}' is not a positive integer") from None
        if value <= 0:
            raise CompileError(f"bucket '{b}' is not a positive integer")
        out.append(value)
    if not out:
        raise CompileError("no buckets given; pass --buckets, e.g. --buckets 128,384")
    return sorted(set(out))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _code_digest() -> str:
    """A digest of everything that makes an artifact: the templates and the compiler's own
    sources (passes, packers, knob tables, cost model), so a changed compiler never reuses a
    build of the old one, even at the same version number."""
    import importlib.resources

    h = hashlib.sha256()
    for package, suffixes in (("sqc.templates", (".j2", ".h")), ("sqc.compiler", (".py",))):
        root = Path(str(importlib.resources.files(package)))
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def compile_model(
    model: str | os.PathLike,
    buckets=(128,),
    output: str | os.PathLike | None = None,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    threads: int | None = None,
    target: str = "native",
    dump_after: str | None = None,
    disable=(),
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    quantize: str = "none",
    sparse: str = "auto",
) -> Path:
    """Compile an ONNX model into an artifact directory and return its path.

    Compiling the same model with the same options again reuses the build: the manifest
    records a key hashing the model, the options, sqc's version, its templates and compiler.
    ``quantize="dynamic"`` makes a float model's linear layers int8 (per-column int8 weights
    made now, activations quantized per example at run time); quantized models need nothing.
    ``sparse`` ("auto", "always", "never"): which linear layers run sparse kernels (see the
    extract_sparsity pass); "auto" decides per layer by a cost model.
    """
    say = progress or (lambda msg: None)
    model = Path(model)
    buckets = parse_buckets(buckets)
    disable = list(disable or [])
    check_pass_names(disable + ([dump_after] if dump_after else []))
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise CompileError(f"batch size {max_batch_size!r} is not a positive integer")
    if threads is not None and threads < 1:
        raise CompileError(f"threads {threads!r} is not a positive integer")
    isa = resolve_target(target)
    if quantize not in QUANTIZE_MODES:
        raise CompileError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, not {quantize!r}")
    if sparse not in SPARSE_MODES:
        raise CompileError(f"sparse must be one of {', '.join(SPARSE_MODES)}, not {sparse!r}")
    if not model.exists():
        raise CompileError(f"{model}: no such file")
    out_dir = Path(output) if output else Path("artifacts") / model.stem
    model_hash = _sha256(model) if model.is_file() else ""
    key = hashlib.sha256(
        json.dumps(
            {
                "model": model_hash,
                "buckets": buckets,
                "batch": max_batch_size,
                "isa": isa,
                "disable": sorted(disable),
                "quantize": quantize,
                "sparse": sparse,
                # sanitizer or debug builds (SQC_EXTRA_CFLAGS, build.py) never reuse normal ones
                "extra_cflags": os.environ.get("SQC_EXTRA_CFLAGS", ""),
                "sqc": sqc.__version__,
                "code": _code_digest(),
                "format": FORMAT_VERSION,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()

    if not force and not dump_after and _reusable(out_dir, key):
        say(f"reusing the build in {out_dir} (same model and options)")
        _copy_tokenizer(model, out_dir, tokenizer)
        return out_dir

    start = time.perf_counter()
    say(f"import {model.name}")
    graph = load_onnx(model)
    graph.meta["quantize"] = quantize
    graph.meta["sparse"] = sparse
    graph.meta["isa"] = isa  # kernel choices (extract_sparsity) depend on the target
    dump_dir = out_dir / "dumps"

    weights = WeightsTable()
    planned: dict[int, Graph] = {}
    for seq in buckets:

        def dump(name: str, g: Graph, seq=seq) -> None:
            if name == dump_after:
                dump_dir.mkdir(parents=True, exist_ok=True)
                path = dump_dir / f"s{seq}_after_{name}.txt"
                path.write_text(graph_text(g))
                say(f"dumped the graph after {name} to {path}")

        g = run_passes(
            graph,
            seq,
            disable=disable,
            dump=dump,
            on_pass=lambda name, seq=seq: say(f"bucket {seq}: {name}"),
        )
        planned[seq] = g
    say("emit C")
    try:
        c_source = emit_model_source(planned, weights, isa, model.name, model_hash)
    except CompileError:
        raise
    except Exception as e:  # as run_passes: a construct the emitter did not expect
        raise CompileError(
            f"emit C: cannot handle this model ({type(e).__name__}: {e}); if "
            "onnx.checker.check_model accepts the model, please report it"
        ) from e
    layer_records = _layers(planned, isa)

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in list(out_dir.glob("_sqc_*")):
        old.unlink()
    (out_dir / "model.c").write_text(c_source)
    say(f"build C ({len(c_source) // 1024} KiB) with gcc -O3 for {isa}")
    module_name = f"_sqc_{key[:16]}"
    library = build_library(c_source, buckets, isa, out_dir, module_name)
    say("write weights.bin")
    weights.write(out_dir / "weights.bin")
    _copy_tokenizer(model, out_dir, tokenizer)

    g0 = planned[buckets[0]]
    manifest = {
        "format_version": FORMAT_VERSION,
        "sqc_version": sqc.__version__,
        "build_key": key,
        "quantize": quantize,
        "sparse": sparse,
        "source_model": {"file": model.name, "sha256": model_hash},
        "buckets": buckets,
        "max_batch_size": max_batch_size,
        "threads": threads,
        "target": {
            "isa": isa,
            "cpu_features": TARGETS[isa]["cpu_features"],
            "cflags": TARGETS[isa]["cflags"],
            "compiler": gcc_version(),
        },
        "library": {"file": library.name, "module": module_name, "sha256": _sha256(library)},
        "weights": {
            "file": "weights.bin",
            "bytes": weights.size,
            "sha256": _sha256(out_dir / "weights.bin"),
        },
        "inputs": [
            {
                "name": n,
                "dtype": str(np.dtype(g0.values[n].dtype)),
                "shape": input_dims(n, g0.declared_shapes.get(n, [])),
            }
            for n in g0.inputs
        ],
        "outputs": [
            {
                "name": n,
                "dtype": str(np.dtype(g0.values[n].dtype)),
                "shape": _output_layout(planned, n),
                "shape_per_bucket": {str(s): _output_shape(planned[s], n) for s in buckets},
            }
            for n in g0.outputs
        ],
        "index_bounds": _index_bounds(g0),
        "workspace_per_example": {
            str(s): planned[s].meta["workspace_per_example"] for s in buckets
        },
        "layers": layer_records,
        "profile": {str(s): planned[s].meta["profile"] for s in buckets},
        "tokenizer": "tokenizer.json" if (out_dir / "tokenizer.json").exists() else None,
        "compile_seconds": round(time.perf_counter() - start, 2),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    say(f"done in {manifest['compile_seconds']:.1f} s: {out_dir}")
    return out_dir


def _reusable(out_dir: Path, key: str) -> bool:
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        manifest.get("build_key") == key
        and (out_dir / manifest["library"]["file"]).exists()
        and (out_dir / "weights.bin").exists()
    )


def _copy_tokenizer(model: Path, out_dir: Path, tokenizer) -> None:
    if tokenizer is not None:
        src = Path(tokenizer)
        if not src.exists():
            raise CompileError(f"tokenizer {src}: no such file or directory")
        files = [src / f for f in TOKENIZER_FILES] if src.is_dir() else [src]
        found = [f for f in files if f.exists()]
        if not any(f.name == "tokenizer.json" or f.suffix == ".json" for f in found):
            raise CompileError(f"tokenizer {src}: no tokenizer.json found")
        for f in found:
            name = "tokenizer.json" if not src.is_dir() else f.name
            shutil.copyfile(f, out_dir / name)
        return
    for name in TOKENIZER_FILES:
        f = model.parent / name
        if f.exists():
            shutil.copyfile(f, out_dir / name)


def _output_shape(g: Graph, name: str) -> list:
    """Run-time output shape in one bucket: the example's shape with its leading 1 (the
    exported batch axis) replaced by "batch"."""
    shape = list(g.values[name].shape)
    rest = shape[1:] if shape and shape[0] == 1 else shape
    return ["batch"] + [int(d) for d in rest]


def _output_layout(planned: dict[int, Graph], name: str) -> list:
    """For readers: "sequence" where the dim follows the bucket length, else the dim. With one
    bucket, a dim equal to the bucket length is taken to follow it."""
    shapes = [_output_shape(g, name) for g in planned.values()]
    buckets = list(planned)
    out = []
    for i, d in enumerate(shapes[0]):
        dims = [s[i] for s in shapes]
        if i == 0:
            out.append("batch")
        elif dims == buckets:
            out.append("sequence")
        else:
            out.append(d)
    return out


def _index_bounds(g: Graph) -> dict[str, int]:
    """For inputs used as Gather indices into a constant table: the table's size."""
    bounds: dict[str, int] = {}
    producer = g.producers()
    for node in g.nodes:
        if node.op != "Gather" or node.domain:
            continue
        src = node.inputs[1]
        while src in producer and producer[src].op == "Cast":
            src = producer[src].inputs[0]
        table = g.const(node.inputs[0])
        if src in g.inputs and table is not None:
            axis = node.attrs.get("axis", 0)
            bounds[src] = min(bounds.get(src, 1 << 62), int(table.shape[axis]))
    return bounds


def _sparse_kernel(kind: str, isa: str) -> str:
    """The name of the sparse kernel function a layer of ``kind`` runs on target ``isa``."""
    t = TARGETS[isa]
    knobs = sparse_gemm_variant(t["f32_isa"], t["int8_isa"]).knobs
    if kind == "f32":
        return f"sqc_f32_spmm_{knobs['f32_tt']}t__{t['f32_isa']}"
    return f"sqc_u8s8_spmm_{knobs['i8_tt']}t__{t['int8_isa']}"


def _layers(planned: dict[int, Graph], isa: str) -> list[dict]:
    """Per-layer records for the manifest: what each linear layer is and which kernel runs it.

    Read from the largest bucket; a linear layer's kernel choice (dense or sparse) can change
    with the bucket, so ``format_by_bucket`` lists it for each."""
    g = planned[max(planned)]
    choices: dict[str, dict[str, str]] = {}
    for seq, gb in sorted(planned.items()):
        for node in gb.nodes:
            if node.domain == "sqc" and node.op in ("Linear", "QLinear"):
                choices.setdefault(node.name, {})[str(seq)] = node.attrs.get("format", "dense")
    records = []
    for node in g.nodes:
        if node.op in ("Linear", "QLinear") and node.domain == "sqc":
            a = node.attrs
            w = g.const(node.inputs[1])
            sparse = a.get("format") == "sparse"
            record = {
                "name": node.name,
                "op": node.op,
                "k": int(w.shape[0]),
                "n": int(w.shape[1]),
                "act": a.get("act", "none"),
                "format": a.get("format", "dense"),
                "format_by_bucket": choices.get(node.name, {}),
                "pattern": a.get("pattern", "dense"),
                "sparsity": a.get("sparsity", round(float(np.mean(w == 0)), 4)),
                "sparse_gain_estimate": a.get("gain", 1.0),
            }
            if node.op == "Linear":
                record["quantization"] = "none"
                f32_isa = TARGETS[isa]["f32_isa"]
                record["kernel"] = (
                    _sparse_kernel("f32", isa) if sparse else f32_gemm_variant(f32_isa).name
                )
                record["why"] = a.get("why", "dense fp32 weights")
                pair = a.get("ffn_next") or a.get("ffn_with")
                if pair:  # pair_sparse_ffn: one sqc_f32_spmm_ffn call runs both layers
                    record["ffn_pair"] = pair
                    record["why"] += f"; one call with {pair} (sqc_f32_spmm_ffn)"
            else:
                per_column = bool(np.unique(g.const(node.inputs[4])).size > 1)
                record["quantization"] = {
                    "form": a["form"],
                    "weights": "int8 per column" if per_column else "int8 per tensor",
                    "activations": {
                        "dynamic": "uint8, range per example at run time",
                        "static": "static scale and zero point (int8 shifted by 128)",
                        "u8": "uint8 input",
                        "s8": "int8 input (shifted by 128)",
                    }[a["x_quant"]],
                }
                if a.get("post"):
                    stages = [k for k in "abrc" if a["post"][k]]
                    record["quantization"]["epilogue"] = (
                        "QDQ rounding fused (stages " + ", ".join(stages) + ")"
                    )
                    if a.get("stage_b_folded"):  # emit_quant.fold_stage_b
                        record["quantization"]["epilogue"] += (
                            ", stage b folded into one multiply-add (checked exact)"
                        )
                    if "lut_next" in a:  # passes/fuse_lut_epilogue.py
                        record["quantization"]["epilogue"] += (
                            f", then {a['lut_next']}'s table: uint8 output"
                        )
                    if "out8" in a:
                        record["quantization"]["epilogue"] += (
                            ": uint8 levels, read by the integer attention"
                        )
                gemm = int8_gemm_variant(TARGETS[isa]["int8_gemm"])
                record["kernel"] = _sparse_kernel("int8", isa) if sparse else gemm.name
                record["why"] = f"int8 weights ({a['form']} form); " + a.get("why", "dense")
                pair = a.get("ffn_next") or a.get("ffn_with")
                if pair:  # pair_sparse_ffn: one sqc_qlinear_ffn call runs both layers
                    record["ffn_pair"] = pair
                    record["why"] += f"; one call with {pair} (sqc_qlinear_ffn)"
            records.append(record)
        elif node.domain == "sqc" and node.op in ("Attention", "SkipLayerNorm"):
            record = {
                "name": node.name,
                "op": node.op,
                "kernel": attention_kernel(node, isa)
                if node.op == "Attention"
                else _layernorm_kernel(node),
            }
            if record["kernel"] == "sqc_attention_q8":
                amx = TARGETS[isa]["int8_gemm"] == "avx512_amx"
                where = " on AMX tiles (VNNI where the OS withholds AMX)" if amx else " (VNNI)"
                record["why"] = (
                    "Q, K, V and the probabilities on QDQ grids: integer products" + where
                )
            if node.op == "Attention":  # operands and output as levels (fuse_lut_epilogue)
                names = list(zip(("q", "k", "v"), node.inputs[:3])) + [("output", node.outputs[0])]
                levels = [k for k, v in names if np.dtype(g.values[v].dtype) == np.uint8]
                if levels:
                    record["uint8_levels"] = ", ".join(levels)
            records.append(record)
    return records


def _layernorm_kernel(node) -> str:
    """An sqc.SkipLayerNorm's kernel, and its roundings in a QDQ graph (quantize_layernorm)."""
    a = node.attrs
    parts = [
        ("uint8 skip", a.get("skip_grid")),
        ("sum rounded", a.get("sum_grid")),
        ("uint8 output", a.get("out_grid")),
    ]
    done = [text for text, on in parts if on]
    return f"sqc_layernorm_q ({', '.join(done)})" if done else "sqc_layernorm_f32"
