"""A bounded HTTP load test of `sqc serve` on loopback: 1, 8 and 32 concurrent clients.

    python benchmarks/load_test.py [--clients 1,8,32] [--seconds 10] [--buckets 32,128]
        [--batch-size 32] [--model MODEL] [--write BENCHMARKS.md]

Starts `sqc serve` (the bundled model unless --model names another) as a subprocess on a free
127.0.0.1 port, waits until it is ready, then for each client count runs that many client
threads, each on its own keep-alive connection, posting DeepSparse-style question-answering
requests back to back: `--seconds` measured seconds in all per level, in `--rounds` slices
that take turns between the levels (1, 8, 32, 1, 8, 32, ...), each after a warm-up second.
It reports requests per second, p50 and p99 latency, errors (any status but 200, any failed
connection, any answer that differs from the one the server gave a lone client) and the mean
number of questions per batch (one pipeline call; from the server's /metrics), and the server
process's CPU time per request (all its threads: what batching saves shows here even when other
work on the machine blurs requests/s). Then it stops the server with SIGTERM, and with --write
replaces its section of BENCHMARKS.md.

Clients and server share this machine's cores, so the figures are of the whole loop: what one
machine serves to clients on itself.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

MARK_BEGIN = "<!-- load_test:begin -->"
MARK_END = "<!-- load_test:end -->"

# Short questions about short contexts, as in DeepSparse Server's examples.
REQUESTS = [
    {"question": "Who is Mark?", "context": "Mark is batman."},
    {
        "question": "What is DeepSparse?",
        "context": "DeepSparse is sparsity-aware inference runtime offering GPU-class "
        "performance on CPUs and APIs to integrate ML into your application",
    },
    {"question": "Where does Anna live?", "context": "Anna lives in Vienna and works in Graz."},
    {
        "question": "When was the bridge opened?",
        "context": "The bridge was opened in 1932 after six years of construction.",
    },
    {"question": "What colour is the car?", "context": "The car parked outside is bright red."},
    {
        "question": "Who wrote the letter?",
        "context": "The letter was written by Clara to her brother in Lisbon.",
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def batch_totals(port: int) -> tuple[float, float]:
    """(questions, batches) so far, from the server's sqc_batch_size histogram."""
    _, text = get(port, "/metrics")
    total = count = 0.0
    for line in text.decode().splitlines():
        if line.startswith("sqc_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("sqc_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_level(
    port: int, pid: int, clients: int, seconds: float, warmup: float, expected: list
) -> dict:
    bodies = [json.dumps(item).encode() for item in REQUESTS]
    start_at = time.monotonic() + 0.2
    measure_from = start_at + warmup
    stop_at = measure_from + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        turn = index
        while time.monotonic() < start_at:
            time.sleep(0.001)
        while True:
            began = time.monotonic()
            if began >= stop_at:
                break
            which = turn % len(bodies)
            turn += 1
            try:
                status, data = post(connection, bodies[which])
                ok = status == 200 and json.loads(data)["answer"] == expected[which]
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            ended = time.monotonic()
            if began >= measure_from and ended <= stop_at:
                latencies[index].append(ended - began)
                errors[index] += not ok
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    before = None
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    before = batch_totals(port)
    cpu_before = cpu_seconds(pid)
    for thread in threads:
        thread.join()
    cpu_after = cpu_seconds(pid)
    after = batch_totals(port)
    return {
        "clients": clients,
        "latencies": [x for per_client in latencies for x in per_client],
        "errors": sum(errors),
        "questions": after[0] - before[0],
        "engine_calls": after[1] - before[1],
        "server_cpu_seconds": cpu_after - cpu_before,
    }


def merge(slices: list[dict], seconds: float) -> dict:
    """One level's figures from its slices."""
    latencies = sorted(x for s in slices for x in s["latencies"])
    questions = sum(s["questions"] for s in slices)
    calls = sum(s["engine_calls"] for s in slices)
    return {
        "clients": slices[0]["clients"],
        "requests": len(latencies),
        "requests_per_second": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": sum(s["errors"] for s in slices),
        "questions_per_engine_call": questions / calls if calls else float("nan"),
        "server_cpu_ms_per_request": 1000
        * sum(s["server_cpu_seconds"] for s in slices)
        / max(1, sum(s["questions"] for s in slices)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="per slice")
    parser.add_argument("--rounds", type=int, default=3, help="slices per level, taking turns")
    parser.add_argument("--model", default=None, help="artifact or .onnx (default: bundled)")
    parser.add_argument("--buckets", default="16,32,64")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="threads per engine call")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    load_before = os.getloadavg()
    port = free_port()
    command = [
        sys.executable, "-m", "sqc.cli", "serve",
        *([args.model] if args.model else []),
        "--port", str(port), "--buckets", args.buckets,
        "--batch-size", str(args.batch_size), "--workers", str(max(64, 2 * max(levels))),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]  # fmt: skip
    log = tempfile.NamedTemporaryFile("w+", prefix="sqc-load-test-", suffix=".log", delete=False)
    server = subprocess.Popen(command, stdout=log, stderr=log, env=dict(os.environ))
    results = []
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                sys.exit(f"the server exited; see {log.name}")
            try:
                if get(port, "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"the server did not become ready; see {log.name}")
            time.sleep(0.2)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        expected = [
            json.loads(post(connection, json.dumps(r).encode())[1])["answer"] for r in REQUESTS
        ]
        connection.close()
        # Levels take turns (1, 8, 32, 1, 8, 32, ...) so that other load on the machine hits
        # every level alike; each level gets `seconds` in all.
        slices: dict[int, list[dict]] = {clients: [] for clients in levels}
        for _ in range(args.rounds):
            for clients in levels:
                slices[clients].append(
                    run_level(
                        port, server.pid, clients, args.seconds / args.rounds, args.warmup, expected
                    )
                )
        for clients in levels:
            result = merge(slices[clients], args.seconds)
            results.append(result)
            print(
                f"{clients:3d} clients: {result['requests_per_second']:7.1f} req/s  "
                f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
                f"errors {result['errors']}  "
                f"questions/batch {result['questions_per_engine_call']:.1f}  "
                f"server CPU {result['server_cpu_ms_per_request']:.2f} ms/request",
                flush=True,
            )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    if server.returncode != 0:
        print(f"warning: the server exited with {server.returncode}; see {log.name}")
    load = (load_before[0], os.getloadavg()[0])
    print(f"load average (1 min) before and after: {load[0]:.2f}, {load[1]:.2f}")
    ratio = results[-1]["requests_per_second"] / results[0]["requests_per_second"]
    print(f"throughput at {levels[-1]} clients / at {levels[0]}: {ratio:.2f}x")
    if args.write:
        from compare_onnxruntime import write_section

        from sqc.runtime.benchmark import cpu_info

        write_section(
            args.write, table(results, levels, ratio, load, args, cpu_info()), MARK_BEGIN, MARK_END
        )


def table(results: list[dict], levels: list[int], ratio: float, load, args, cpu: dict) -> str:
    shown = " ".join(sys.argv[1:])
    lines = [
        MARK_BEGIN,
        f"Measured {datetime.date.today().isoformat()} on {cpu['model']} "
        f"({cpu['cores_available']} cores available, shared by clients and server), "
        f"Python {platform.python_version()}, bundled minilm-l6-qa unless noted, "
        f"buckets {args.buckets}, batch size {args.batch_size}, engine threads "
        f"{args.threads or 'default (the physical cores)'}. Load average (1 min) just before "
        f"the run: {load[0]:.2f} (other work on the machine: anything above 0 competed with it).",
        "",
        f"Command: `python benchmarks/load_test.py {shown}`",
        "",
        "| clients | requests | requests/s | p50 ms | p99 ms | errors | questions per batch "
        "| server CPU ms per request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['requests_per_second']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{r['questions_per_engine_call']:.1f} | {r['server_cpu_ms_per_request']:.2f} |"
        )
    lines += [
        "",
        f"Throughput at {levels[-1]} clients / at {levels[0]} client: {ratio:.2f}x.",
        MARK_END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
