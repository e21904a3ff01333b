"""The configuration's checks and the micro-batcher's gathering, without HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from sqc.server.batching import MicroBatcher
from sqc.server.config import ConfigError, config_from_dict, load_config


def test_deepsparse_shaped_config(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / "server.yaml"
    path.write_text(
        """
num_cores: 2
num_workers: 8
host: 0.0.0.0
endpoints:
  - task: question_answering
    route: /unpruned/predict
    model: m.onnx
    batch_size: 4
    bucketing: {sequence_lengths: [384, 128]}
    kwargs: {doc_stride: 32, max_answer_length: 10}
  - task: qa
    model: /models/other
"""
    )
    config = load_config(path)
    assert (config.threads, config.workers, config.host, config.port) == (2, 8, "0.0.0.0", 5543)
    first, second = config.endpoints
    assert first.model == str(tmp_path / "m.onnx")  # relative to the config file
    assert first.sequence_length == [128, 384] and first.batch_size == 4
    assert first.kwargs == {"doc_stride": 32, "max_answer_length": 10}
    assert first.route == "/unpruned/predict"
    # several unnamed endpoints are named after their models
    assert (first.name, second.name) == ("m", "other")


def test_defaults():
    config = config_from_dict({})
    assert config.host == "127.0.0.1" and config.port == 5543 and config.api_key is None
    assert [e.name for e in config.endpoints] == ["question_answering"]
    assert config.endpoints[0].model is None  # the bundled model


@pytest.mark.parametrize(
    "data,words",
    [
        ({"hots": "x"}, ["hots: unknown key"]),
        ({"endpoints": [{"modle": "x"}]}, ["endpoints[0].modle: unknown key"]),
        ({"endpoints": [{"bucketing": {"lengths": [1]}}]}, ["bucketing", "'lengths'"]),
        ({"endpoints": [{"kwargs": {"top_k": 2}}]}, ["kwargs", "'top_k'"]),
        ({"endpoints": [{"batch_size": "8"}]}, ["batch_size", "expected int", "str"]),
        ({"endpoints": [{"sequence_length": [0]}]}, ["sequence_length"]),
        ({"endpoints": [{"name": "a"}, {"name": "a"}]}, ["'a'", "more than once"]),
        ({"endpoints": [{"name": "a/b"}]}, ["name"]),
        ({"endpoints": [{"route": "predict"}]}, ["route", "'/'"]),
        ({"endpoints": {}}, ["endpoints", "list"]),
        ({"port": 70000}, ["port"]),
        ({"threads": 2, "num_cores": 2}, ["given twice"]),
        ({"workers": True}, ["workers", "expected int"]),
        ([], ["mapping"]),
    ],
)
def test_config_errors(data, words):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_batcher_gathers_concurrent_requests_and_isolates_a_bad_one():
    calls = []
    gate = threading.Event()

    def run(pairs, threads):
        calls.append(list(pairs))
        gate.wait(5)
        if any(q == "bad" for q, _ in pairs):
            raise ValueError("bad question")
        return [q.upper() for q, _ in pairs]

    batcher = MicroBatcher(run, max_batch_size=8, max_wait=0.05)
    try:
        first = batcher.submit([("a", "x")])
        time.sleep(0.05)  # the first batch is running, the rest queue up behind it
        futures = [batcher.submit([(q, "x")]) for q in ("b", "bad", "c")]
        futures.append(batcher.submit([("d", "x"), ("e", "x")]))
        gate.set()
        assert first.result(5) == ["A"]
        assert futures[0].result(5) == ["B"]
        with pytest.raises(ValueError, match="bad question"):
            futures[1].result(5)
        assert futures[2].result(5) == ["C"]
        assert futures[3].result(5) == ["D", "E"]
        # one call for "a", one for the four queued requests (rejected as a whole), then each
        # of them alone
        assert calls[0] == [("a", "x")]
        assert calls[1] == [("b", "x"), ("bad", "x"), ("c", "x"), ("d", "x"), ("e", "x")]
        assert len(calls) == 6
    finally:
        batcher.close()


def test_batcher_respects_max_batch_size_and_does_not_wait_alone():
    sizes = []
    batcher = MicroBatcher(
        lambda p, threads: sizes.append(len(p)) or list(p), max_batch_size=2, max_wait=1
    )
    try:
        started = time.perf_counter()
        assert batcher.submit([("q", "c")]).result(5) == [("q", "c")]
        assert time.perf_counter() - started < 0.5  # nobody else arriving: no wait
        with batcher.arriving() as arrival:
            future = batcher.submit([("a", "c")])
            arrival.submitted()
        future.result(5)
    finally:
        batcher.close()
    assert all(size <= 2 for size in sizes)
    closed = batcher.submit([("late", "c")])
    with pytest.raises(RuntimeError, match="shutting down"):
        closed.result(1)


def test_batcher_workers_share_the_threads():
    """Alone, a batch gets every thread; under load, workers run side by side with a share each,
    and the threads in use never exceed the total."""
    in_use = []
    lock = threading.Lock()
    running = [0]

    def run(pairs, threads):
        with lock:
            running[0] += threads
            in_use.append((threads, running[0]))
        time.sleep(0.02)
        with lock:
            running[0] -= threads
        return list(pairs)

    batcher = MicroBatcher(run, max_batch_size=1, max_wait=0, threads=4, workers=2)
    try:
        assert batcher.submit([("alone", "c")]).result(5) == [("alone", "c")]
        assert in_use == [(4, 4)]
        futures = [batcher.submit([(str(i), "c")]) for i in range(12)]
        assert [f.result(5) for f in futures] == [[(str(i), "c")] for i in range(12)]
    finally:
        batcher.close()
    assert max(total for _, total in in_use) <= 4
    assert any(threads == 2 for threads, _ in in_use[1:])  # shares under load
