"""Throughput and latency of an engine, as `deepsparse.benchmark` reports them.

sync: one stream calls the engine back to back. async: ``streams`` threads call it at once,
each call with ``threads // streams`` threads, which is how a server keeps cores busy. Inputs are
seeded realistic token ids with a padded attention mask (``generate_random_inputs``).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import threading
import time

import numpy as np

PERCENTILES = (25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)


def parse_input_shapes(text: str) -> list[list[int]]:
    """DeepSparse's -i syntax: "[64,384]" or "[1,128],[1,128]" -> [[64, 384], ...]."""
    shapes = re.findall(r"\[([^\[\]]*)\]", text or "")
    if not shapes:
        raise ValueError(f"input shapes '{text}' are not in the form [batch,sequence]")
    out = []
    for s in shapes:
        try:
            dims = [int(d) for d in s.split(",") if d.strip()]
        except ValueError:
            raise ValueError(f"input shape [{s}] has a dimension that is not an integer") from None
        if len(dims) != 2 or min(dims) < 1:
            raise ValueError(f"input shape [{s}] must be [batch,sequence] with positive sizes")
        out.append(dims)
    if any(d != out[0] for d in out):
        raise ValueError(f"input shapes {out} differ; sqc inputs share [batch, sequence]")
    return out


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx", "sse4")))
    return {"model": model, "flags": simd, "cores_available": len(os.sched_getaffinity(0))}


def run_benchmark(
    run,
    items_per_call: int,
    *,
    seconds: float,
    warmup: float,
    scenario: str = "sync",
    streams: int = 1,
) -> dict:
    """Call ``run()`` for ``warmup`` then ``seconds``; return throughput and latency figures."""
    if scenario not in ("sync", "async"):
        raise ValueError(f"scenario '{scenario}' is not sync or async")
    if seconds <= 0 or warmup < 0:
        raise ValueError("time must be positive and warm-up time not negative")
    streams = streams if scenario == "async" else 1
    end_warmup = time.perf_counter() + warmup
    while time.perf_counter() < end_warmup:
        run()
    latencies: list[list[float]] = [[] for _ in range(streams)]
    began = time.perf_counter()
    deadline = began + seconds

    def stream(k: int) -> None:
        mine = latencies[k]
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline and mine:
                break
            run()
            mine.append(time.perf_counter() - t0)

    if streams == 1:
        stream(0)
    else:
        workers = [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    elapsed = time.perf_counter() - began
    flat = np.array([t for lat in latencies for t in lat]) * 1e3
    return {
        "scenario": scenario,
        "streams": streams,
        "iterations": int(flat.size),
        "seconds": elapsed,
        "items_per_second": flat.size * items_per_call / elapsed,
        "latency_ms": {
            "mean": float(flat.mean()),
            "median": float(np.median(flat)),
            "std": float(flat.std()),
            **{f"p{p:g}": float(np.percentile(flat, p)) for p in PERCENTILES},
        },
    }


def describe(result: dict) -> str:
    lat = result["latency_ms"]
    return (
        f"{result['engine']}: {result['items_per_second']:.2f} items/s, latency mean "
        f"{lat['mean']:.2f} ms, median {lat['median']:.2f} ms, p90 {lat['p90']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms ({result['iterations']} iterations, "
        f"{result['scenario']}, {result['streams']} stream(s))"
    )


def report_header(batch: int, seq: int, threads: int) -> dict:
    import sqc

    return {
        "sqc_version": sqc.__version__,
        "batch_size": batch,
        "sequence_length": seq,
        "threads": threads,
        "cpu": cpu_info(),
        "command": " ".join(sys.argv),
    }


def speedup(a: dict, b: dict) -> float:
    """How many times a's throughput is b's."""
    return a["items_per_second"] / b["items_per_second"] if b["items_per_second"] else float("nan")
