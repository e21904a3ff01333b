"""Memory safety of the generated code: test models compiled with AddressSanitizer and
UndefinedBehaviorSanitizer (SQC_EXTRA_CFLAGS, read by compiler/codegen/build.py) run every bucket
at batch 1 and at the maximum batch, on 1 and 2 threads, in a subprocess with libasan preloaded;
no sanitizer report may appear.

What ASan sees: the inputs, outputs and workspace (allocated by the run script with exactly the
bytes the library asks for, so one byte past the end is a report) and the C stack. It cannot see
overruns inside the mapped weights.bin (not malloc'ed); UBSan sees signed overflow, misaligned
and out-of-range shifts and the like everywhere.

One row of MODELS per kernel family (dense, fused, int8, sparse; AVX-512 and AVX2).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import sqc
from sqc.runtime.cpu import cpu_features
from tests.conftest import FIXTURES

# -O0 keeps the sanitized builds to 2-12 s each on Zen 5 (-O1 took 12-34 s, 181 s of the suite
# for this test's ten models; -O3, as shipped, 3-4 times -O1); the kernels are explicit
# intrinsics, so the loads and stores checked are the same, and -O0 checks every spill besides.
# SQC_SANITIZE_O3=1 checks the -O3 builds (all ten clean when this was written).
#
# Chunks (model.c.j2, sqc_batch_chunk): 32 tokens a chunk whatever the threads, so at bucket 16
# a batch of 3 runs as chunks of 2 and 1 in a workspace of 2 examples, and at bucket 32 as 3
# chunks of 1 in a workspace of 1: an op that strays past its chunk's examples is a report.
SANITIZE = (
    "-fsanitize=address,undefined -fno-omit-frame-pointer -g"
    " -DSQC_CHUNK_ROWS_PER_THREAD=32 -DSQC_CHUNK_THREADS_MAX=1"
    + ("" if os.environ.get("SQC_SANITIZE_O3") == "1" else " -O0")
)


def _ort_dynamic_int8(out: Path) -> Path:
    """onnxruntime's dynamic quantization of the fixture (DynamicQuantizeLinear + MatMulInteger)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    path = out / "bert_qa_ort_int8.onnx"
    quantization.quantize_dynamic(str(FIXTURES / "bert_qa_opset17.onnx"), str(path))
    return path


def _pruned(block: str):
    """The fixture with 90% of its linear weights zeroed (`sqc prune`), in ``block`` pattern."""

    def make(out: Path) -> Path:
        from sqc.compiler.prune import prune_model

        path = out / f"bert_qa_pruned90_{block}.onnx"
        if not path.exists():
            prune_model(FIXTURES / "bert_qa_opset17.onnx", path, 0.9, block, min_side=1)
        return path

    return make


# id -> (model: a fixture's file name or a function making one, compile options). Buckets are 16
# and 32; max batch 3 (an odd tail).
MODELS = {
    # dense fp32: linear (+bias, +GELU), attention with its mask, residual + LayerNorm
    "f32-dense": ("bert_qa_opset17.onnx", {}),
    # ONNX Runtime's fused contrib ops (Attention, SkipLayerNormalization, FastGelu)
    "f32-ort-fused": ("bert_qa_ort_optimized.onnx", {}),
    # int8 GEMMs with fused dequantize / bias / GELU epilogues, made at compile time
    "int8-dynamic": ("bert_qa_opset17.onnx", {"quantize": "dynamic"}),
    # an int8 file as onnxruntime's tools write it, folded into the same GEMMs
    "int8-ort": (_ort_dynamic_int8, {}),
    # the AVX2 kernels (f32 and int8 without VNNI), which native skips on an AVX-512 CPU
    "f32-avx2": ("bert_qa_opset17.onnx", {"target": "avx2"}),
    "int8-avx2": ("bert_qa_opset17.onnx", {"quantize": "dynamic", "target": "avx2"}),
    # sparse kernels (every layer, whatever the cost model would pick): f32 unstructured,
    # int8 in 4-blocks along the reduction axis, and the AVX2 ones
    "f32-sparse": (_pruned("unstructured"), {"sparse": "always"}),
    "int8-sparse-1o4i": (_pruned("1o4i"), {"quantize": "dynamic", "sparse": "always"}),
    "f32-sparse-avx2": (_pruned("unstructured"), {"sparse": "always", "target": "avx2"}),
    "int8-sparse-avx2": (
        _pruned("1o4i"),
        {"quantize": "dynamic", "sparse": "always", "target": "avx2"},
    ),
}

RUN = textwrap.dedent(
    """
    import ctypes, json, sys
    import numpy as np
    from sqc.runtime import engine as engine_module
    from sqc.runtime.engine import Engine, generate_random_inputs

    libc = ctypes.CDLL(None)
    libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                                    ctypes.c_size_t]

    def exact_workspace(self, seq, batch):
        # Exactly the bytes the library asks for, 64-byte aligned, so ASan's redzone starts at
        # the first byte past the end (never freed: this process is short).
        need = max(1, int(self._ws_size[seq](batch)))
        p = ctypes.c_void_p()
        assert libc.posix_memalign(ctypes.byref(p), 64, need) == 0
        return np.ctypeslib.as_array((ctypes.c_uint8 * need).from_address(p.value))

    Engine._workspace = exact_workspace
    calls = 0
    for path in sys.argv[1:]:
        engine = Engine(path)
        for seq in engine.buckets:
            for batch in sorted({1, engine.max_batch_size}):
                for threads in (1, 2):
                    x = generate_random_inputs(engine, batch, seq, seed=seq + batch)
                    outs = engine.run(x, threads=threads)
                    assert all(np.isfinite(o).all() for o in outs), path
                    calls += 1
    print(json.dumps({"calls": calls}))
    """
)


def _sanitizer_runtime() -> str:
    try:
        path = subprocess.run(
            ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        path = ""
    if not os.path.isabs(path):
        pytest.skip("gcc's libasan.so is not installed")
    return path


def _build_sanitized(path: Path, out: Path, options: dict) -> Path:
    """One sanitized build (in a worker process: SQC_EXTRA_CFLAGS comes with its environment)."""
    return sqc.compile_model(path, [16, 32], out, max_batch_size=3, force=True, **options)


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory, request):
    """id -> artifact built with the sanitizers (those this CPU can run). The builds are gcc
    bound and one-threaded (2-12 s each), so they run two at a time in worker processes (not
    threads: cffi's build changes the working directory)."""
    libasan = _sanitizer_runtime()
    out = tmp_path_factory.mktemp("sanitized")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQC_EXTRA_CFLAGS", SANITIZE)
        jobs = {
            name: (model(out) if callable(model) else FIXTURES / model, out / name, options)
            for name, (model, options) in MODELS.items()
        }
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked threads
        with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
            futures = {name: pool.submit(_build_sanitized, *job) for name, job in jobs.items()}
            artifacts = {name: future.result() for name, future in futures.items()}
    for path in artifacts.values():
        manifest = json.loads((path / "manifest.json").read_text())
        missing = set(manifest["target"]["cpu_features"]) - cpu_features()
        if missing:
            pytest.skip(f"this CPU lacks {sorted(missing)}")
    return libasan, artifacts


def _run(libasan: str, script: str, artifacts) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        LD_PRELOAD=libasan,
        # Python's own allocations are not ours to judge; any report fails the run.
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, artifacts)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_every_kernel_family_runs_clean_under_asan_and_ubsan(sanitized):
    libasan, artifacts = sanitized
    out = _run(libasan, RUN, artifacts.values())
    report = out.stderr
    assert "AddressSanitizer" not in report and "runtime error:" not in report, report[-4000:]
    assert out.returncode == 0, report[-4000:]
    calls = json.loads(out.stdout.strip().splitlines()[-1])["calls"]
    # every model x 2 buckets x batch {1, 3} x threads {1, 2}
    assert calls == len(artifacts) * 2 * 2 * 2
    print(f"\nsanitizers: {len(artifacts)} models ({', '.join(artifacts)}), {calls} calls, clean")


def test_the_harness_reports_a_short_workspace(sanitized):
    """The clean run above would prove nothing if an overrun went unseen: hand the library half
    the workspace it asks for and ASan must stop the run."""
    libasan, artifacts = sanitized
    exact = "need = max(1, int(self._ws_size[seq](batch)))"
    assert exact in RUN
    short = RUN.replace(exact, "need = max(1, int(self._ws_size[seq](batch)) // 2)")
    out = _run(libasan, short, [artifacts["f32-dense"]])
    assert out.returncode != 0
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in out.stderr, out.stderr[-2000:]


def test_the_sanitized_library_is_instrumented(sanitized):
    """The run above would prove nothing if the flags had not reached gcc."""
    _, artifacts = sanitized
    for path in artifacts.values():
        library = json.loads((path / "manifest.json").read_text())["library"]["file"]
        data = (path / library).read_bytes()
        assert b"__asan_report" in data and b"__ubsan_handle" in data


def test_the_sparse_rows_run_sparse_kernels(sanitized):
    _, artifacts = sanitized
    for name, path in artifacts.items():
        kernels = [layer.get("kernel", "") for layer in _manifest(path)["layers"]]
        sparse = [k for k in kernels if "spmm" in k]
        assert bool(sparse) == ("sparse" in name), (name, kernels)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_loading_it_without_libasan_is_refused_not_aborted(sanitized):
    from sqc.runtime.engine import ArtifactError, Engine

    _, artifacts = sanitized
    with pytest.raises(ArtifactError, match="built with AddressSanitizer.*LD_PRELOAD"):
        Engine(next(iter(artifacts.values())))


def test_a_normal_build_is_not_instrumented(tiny_artifact):
    library = json.loads((Path(tiny_artifact) / "manifest.json").read_text())["library"]["file"]
    assert b"__asan_report" not in (Path(tiny_artifact) / library).read_bytes()
