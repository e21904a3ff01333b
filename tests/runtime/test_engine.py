"""The Engine's contract: inputs checked with clear errors, any batch up to the maximum, bucket
routing by exact length, refusal of an artifact this CPU cannot run."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from sqc.runtime.engine import ArtifactError, Engine, EngineInputError, generate_random_inputs
from tests.conftest import FIXTURES

MODEL = FIXTURES / "bert_qa_opset17.onnx"


@pytest.fixture(scope="module")
def engine(compile_onnx):
    return compile_onnx(MODEL, buckets=(16, 32), max_batch_size=4)


def test_interface(engine):
    assert engine.buckets == [16, 32] and engine.max_batch_size == 4
    assert engine.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert engine.output_names == ["start_logits", "end_logits"]


def test_inputs_by_position_and_by_name_agree(engine):
    x = generate_random_inputs(engine, 2, 16, seed=5)
    a = engine(x)
    b = engine.run(dict(zip(engine.input_names, x)))
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)
        assert p.shape == (2, 16) and p.dtype == np.float32


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_every_batch_up_to_max_equals_rows_run_alone(engine, batch):
    """An example's outputs are the same bits whatever else is in its batch and wherever it sits
    (every kernel computes a row the same way in any tile, chunk or thread)."""
    x = generate_random_inputs(engine, batch, 32, seed=batch)
    _assert_rows_as_alone(engine, x, range(batch))


def _assert_rows_as_alone(engine, x, rows, threads=None):
    """Each of ``rows`` of the batch ``x`` run whole gives the same bits as that row run alone."""
    together = engine.run(x, threads=threads)
    for row in rows:
        alone = engine.run([a[row : row + 1] for a in x], threads=threads)
        for t, a in zip(together, alone):
            np.testing.assert_array_equal(t[row], a[0])


@pytest.mark.parametrize("quantize", ["none", "dynamic"])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_of_several_chunks_equals_rows_run_alone(compile_onnx, threads, quantize):
    # The generated run splits a batch into chunks of about 256 tokens per thread
    # (model.c.j2, sqc_batch_chunk): at bucket 16, 16 examples a chunk on 1 thread, 32 on 2.
    # 37 examples: three chunks (16, 16, 5) or two (32, 5), the last one partial. Same bits as
    # alone, with int8 layers too (their activation range is per example).
    engine = compile_onnx(MODEL, buckets=(16,), max_batch_size=40, quantize=quantize)
    x = generate_random_inputs(engine, 37, 16, seed=11)
    _assert_rows_as_alone(engine, x, (0, 15, 16, 31, 32, 36), threads)
    # The workspace holds the largest chunk (16 threads: 4096 rows, 256 examples of 16), not
    # the whole batch.
    ws = engine._ws_size[16]
    assert ws(37) > ws(36) and ws(255) < ws(256) == ws(257) == ws(10_000)


@pytest.mark.parametrize("threads", [1, 2])
def test_chunks_round_up_to_whole_examples(compile_onnx, threads):
    # At a bucket that does not divide 256, a chunk is the examples of 256 tokens per thread
    # rounded up (model.c.j2, sqc_batch_chunk): at 48, 6 examples on 1 thread (288 tokens) and
    # 11 on 2, where rounding down gave 5 and 10 (and, at bucket 384 on 2 threads, 1 example).
    # 13 examples: chunks (6, 6, 1) or (11, 2); the same bits as alone.
    engine = compile_onnx(MODEL, buckets=(48,), max_batch_size=16)
    x = generate_random_inputs(engine, 13, 48, seed=5)
    _assert_rows_as_alone(engine, x, (0, 5, 6, 10, 11, 12), threads)
    # The largest chunk (16 threads, 4096 tokens): 86 examples of 48 (4128 tokens), not 85.
    ws = engine._ws_size[48]
    assert ws(85) < ws(86) == ws(87) == ws(10_000)


def test_random_inputs_are_realistic(engine):
    ids, mask, types = generate_random_inputs(engine, 3, 32, seed=0)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 1024
    assert np.all(mask.sum(1) >= 16) and np.all(np.diff(mask, axis=1) <= 0)
    assert np.any(types == 1) and not np.array_equal(ids, np.zeros_like(ids))
    again = generate_random_inputs(engine, 3, 32, seed=0)
    assert all(np.array_equal(p, q) for p, q in zip((ids, mask, types), again))


@pytest.mark.parametrize(
    "bad,message",
    [
        (lambda x: x[:2], "expected 3 inputs"),
        (lambda x: {"input_ids": x[0]}, "missing"),
        (lambda x: dict(zip(["input_ids", "attention_mask", "typo"], x)), "unknown"),
        (lambda x: [x[0].astype(np.float32), x[1], x[2]], "dtype float32"),
        (lambda x: [x[0][0], x[1], x[2]], "shape"),
        (lambda x: [x[0], x[1][:, :8], x[2]], "shape"),
        (lambda x: [a[:, :10] for a in x], "not a compiled bucket"),
        (lambda x: [np.concatenate([a] * 2) for a in x], "batch size 6"),
        (lambda x: [x[0] + 5000, x[1], x[2]], "outside [0, 1023]"),
        (lambda x: [x[0] * -1 - 1, x[1], x[2]], "input_ids"),
        (lambda x: "text", "list or a dict"),
    ],
)
def test_bad_inputs_get_clear_errors(engine, bad, message):
    x = generate_random_inputs(engine, 3, 16)
    with pytest.raises(EngineInputError, match=message.replace("[", r"\[")):
        engine.run(bad(x))


@pytest.mark.parametrize("threads", [0, -2, 1.5])
def test_bad_thread_counts_are_refused(engine, threads):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        engine.run(generate_random_inputs(engine, 1, 16), threads=threads)


def test_int32_inputs_are_accepted(engine):
    x = generate_random_inputs(engine, 1, 16)
    a = engine.run(x)[0]
    b = engine.run([v.astype(np.int32) for v in x])[0]
    np.testing.assert_array_equal(a, b)


def test_artifact_loads_fast_and_refuses_missing_cpu_features(engine, monkeypatch):
    began = time.perf_counter()
    Engine(engine.path)
    assert time.perf_counter() - began < 2.0
    isa = json.loads((engine.path / "manifest.json").read_text())["target"]["isa"]
    feature = {"avx512amx": "amx_int8", "avx512vbmi": "avx512vbmi", "avx512": "avx512f"}
    feature = feature.get(isa, "avx2")
    monkeypatch.setenv("SQC_CPU_FEATURES_MASK", feature)
    with pytest.raises(ArtifactError, match=f"lacks {feature}.*recompile"):
        Engine(engine.path)


def test_weights_in_own_huge_page_memory_or_shared_from_the_file(engine, monkeypatch):
    """By default weights.bin is read into an anonymous mapping advised for 2 MiB pages; with
    SQC_SHARE_WEIGHTS=1 it is the read-only file mapping (shared between processes). The same
    outputs either way, and neither copy can be written through."""
    x = generate_random_inputs(engine, 2, 16)
    monkeypatch.setenv("SQC_SHARE_WEIGHTS", "0")
    own = Engine(engine.path)
    monkeypatch.setenv("SQC_SHARE_WEIGHTS", "1")
    shared = Engine(engine.path)
    assert not isinstance(own._weights, np.memmap) and isinstance(shared._weights, np.memmap)
    assert own._weights.ctypes.data % 4096 == 0
    assert not own._weights.flags.writeable and not shared._weights.flags.writeable
    np.testing.assert_array_equal(own._weights, np.fromfile(engine.path / "weights.bin", np.uint8))
    for a, b in zip(own.run(x), shared.run(x)):
        np.testing.assert_array_equal(a, b)


def test_damaged_artifacts_are_refused(engine, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(engine.path, copy)
    with open(copy / "weights.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ArtifactError, match="damaged"):
        Engine(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json is damaged"):
        Engine(copy)
    with pytest.raises(ArtifactError, match="not an artifact"):
        Engine(tmp_path / "nothing")


def test_profile_times_every_op_the_manifest_names(engine):
    """Engine.profile: one time per op the C runs, in the manifest's order, with the op's
    FLOPs for the batch; profiled calls give the same outputs as plain ones."""
    inputs = generate_random_inputs(engine, 2, engine.buckets[0], seed=4)
    before = engine.run(inputs)
    # 9 repeats: the ops' times are means over them, the call's a median, and one call of this
    # tiny model takes ~40 us, so a single preemption in 3 repeats could double the ops' sum
    report = engine.profile(inputs, repeats=9)
    ops = engine.manifest["profile"][str(engine.buckets[0])]
    assert [(o["node"], o["op"]) for o in report["ops"]] == [(o["node"], o["op"]) for o in ops]
    assert report["batch"] == 2 and report["sequence"] == engine.buckets[0]
    assert all(o["seconds"] > 0 for o in report["ops"])
    linear = [o for o in report["ops"] if o["op"] == "sqc.Linear"]
    assert linear and all(o["flops"] > 0 for o in linear)
    assert {o["op"] for o in report["ops"] if o["flops"]} <= {"sqc.Linear", "sqc.Attention"}
    # the timed ops are inside the call: their sum cannot exceed it by much (noise aside)
    assert sum(o["seconds"] for o in report["ops"]) <= 2 * report["end_to_end_seconds"]
    for a, b in zip(before, engine.run(inputs)):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        engine.profile(inputs, repeats=0)


def test_engine_works_in_a_forked_child_and_from_concurrent_threads(engine):
    """The kernels' thread pool restarts its helper threads in a child of fork() (gunicorn
    --preload, multiprocessing), and concurrent callers (the server's threads) share it: one
    caller at a time uses its helpers, the others run alone; every result is the same."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    inputs = generate_random_inputs(engine, 4, 32, seed=8)
    want = engine.run(inputs, threads=2)
    pid = os.fork()
    if pid == 0:  # the child: run, compare, exit without pytest's teardown
        got = engine.run(inputs, threads=2)
        os._exit(0 if all(np.array_equal(a, b) for a, b in zip(got, want)) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: engine.run(inputs, threads=2), range(16)))
    for got in results:
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
