"""Measure the memory each extra gunicorn worker adds when serving one artifact (docs/deploy.md).

    python examples/deploy/worker_memory.py ARTIFACT [--workers 1,2,4] [--requests 64]

For each worker count, starts `gunicorn -k gthread` on the app factory of `sqc serve`
(`sqc.server:create_app(CONFIG)`) on a free loopback port, waits for /v2/health/ready, sends
`--requests` question-answering requests from 8 client threads (so every worker loads its model
and runs), then reads Rss and Pss of the master and every worker from /proc/PID/smaps_rollup
and stops the server. Pss counts a page shared by n processes as 1/n in each: the sum over the
processes is what the server really costs, and the difference between worker counts is what one
more worker adds. The weights are mapped read-only from weights.bin, so all workers share one
copy in the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

QUESTION = {
    "question": "What is DeepSparse?",
    "context": "DeepSparse is sparsity-aware inference runtime offering GPU-class performance on "
    "CPUs and APIs to integrate ML into your application",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rollup(pid: int) -> dict[str, int]:
    """Rss and Pss in KiB from /proc/PID/smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Pss_File", "Pss_Anon", "Shared_Clean"):
                out[key] = int(rest.split()[0])
    return out


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not ready in {timeout} s")


def load(url: str, n: int, clients: int = 8) -> None:
    body = json.dumps(QUESTION).encode()

    def client(k: int) -> None:
        for _ in range(k):
            req = urllib.request.Request(
                f"{url}/predict", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                assert r.status == 200

    threads = [threading.Thread(target=client, args=(n // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(artifact: Path, workers: int, requests: int, tmp: Path) -> dict:
    config = tmp / "server.yaml"
    config.write_text(f"threads: 1\nendpoints:\n  - model: {artifact}\n")
    port = free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    cmd = [
        str(gunicorn), "-k", "gthread", "--threads", "8", "-w", str(workers),
        "-b", f"127.0.0.1:{port}", f"sqc.server:create_app({str(config)!r})",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        load(url, requests)
        time.sleep(1)
        pids = children(proc.pid)
        master = rollup(proc.pid)
        per_worker = [rollup(p) for p in pids]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {
        "workers": workers,
        "worker_pids": len(pids),
        "master_pss_mib": master["Pss"] / 1024,
        "worker_rss_mib": [w["Rss"] / 1024 for w in per_worker],
        "worker_pss_mib": [w["Pss"] / 1024 for w in per_worker],
        "total_pss_mib": (master["Pss"] + sum(w["Pss"] for w in per_worker)) / 1024,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args(argv)
    weights = (args.artifact / "weights.bin").stat().st_size / 2**20
    print(f"artifact {args.artifact}: weights.bin {weights:.1f} MiB")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(w) for w in args.workers.split(",")]:
            r = measure(args.artifact.resolve(), n, args.requests, Path(tmp))
            results.append(r)
            rss = ", ".join(f"{v:.0f}" for v in r["worker_rss_mib"])
            pss = ", ".join(f"{v:.0f}" for v in r["worker_pss_mib"])
            print(
                f"{n} worker(s): total PSS {r['total_pss_mib']:.0f} MiB "
                f"(master {r['master_pss_mib']:.0f}; workers RSS {rss}; PSS {pss})"
            )
    for a, b in zip(results, results[1:]):
        extra = (b["total_pss_mib"] - a["total_pss_mib"]) / (b["workers"] - a["workers"])
        print(f"{a['workers']} -> {b['workers']} workers: {extra:.0f} MiB PSS per extra worker")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SQC_VERIFY", "1")
    sys.exit(main())
