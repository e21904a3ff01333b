"""Batch question answering over a corpus too big for one machine, on a Dask cluster.

    pip install -e '.[dask]'
    python examples/dask_batch_qa.py ARTIFACT --squad dev-v1.1.json --workers 2 \
        [--scheduler tcp://HOST:8786] [--partitions 16] [--limit N] [--predictions out.json]

The records (SQuAD's data / paragraphs / qas, or JSON lines of {"id", "question", "context"})
become a Dask bag of `--partitions` partitions; each partition is answered by one batched
Pipeline call per 64 questions on whichever worker runs it. Each worker process loads the
artifact once, the first time one of its tasks needs it, and keeps it on the worker (so does a
worker of a long-lived cluster across runs). The artifact directory must be at the same path on
every worker (a shared filesystem or the same image); the workers' CPUs must have the features it
was built for (it is refused otherwise).

Without --scheduler a local cluster of --workers processes is started (one engine thread each).
The predictions (id -> answer) can be scored with `sqc eval --score out.json --squad FILE`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CHUNK = 64  # questions per Pipeline call: one batched pass through the engine


def load_records(path: Path, limit: int | None = None) -> list[dict]:
    """{"id", "question", "context"} records from a SQuAD json file or a JSON-lines file."""
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        for i, r in enumerate(records):
            r.setdefault("id", str(i))
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        records = [
            {"id": qa["id"], "question": qa["question"], "context": paragraph["context"]}
            for article in data["data"]
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    return records[:limit] if limit else records


def worker_pipeline(artifact: str, threads: int | None):
    """The Pipeline of ``artifact`` on this Dask worker, loaded on first use and kept on the
    worker object (module globals would not do: a task's function may be pickled by value)."""
    from distributed import get_worker

    worker = get_worker()
    cache = worker.__dict__.setdefault("_sqc_pipelines", {})
    key = (artifact, threads)
    if key not in cache:
        from sqc import Pipeline

        cache[key] = Pipeline.create(model_path=artifact, threads=threads)
        worker.__dict__["_sqc_loads"] = worker.__dict__.get("_sqc_loads", 0) + 1
    return cache[key]


def answer_partition(records, artifact: str, threads: int | None = None) -> list[dict]:
    """Answer one partition's records; an invalid record gets its error, not a failed task."""
    from distributed import get_worker

    qa = worker_pipeline(artifact, threads)
    where = get_worker().address
    out = []
    records = list(records)
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        try:
            answers = qa(
                question=[r["question"] for r in chunk], context=[r["context"] for r in chunk]
            )
        except (ValueError, TypeError):  # one bad record: answer the chunk one by one
            answers = []
            for r in chunk:
                try:
                    answers.append(qa(question=r["question"], context=r["context"]))
                except (ValueError, TypeError) as e:
                    answers.append(e)
        for r, a in zip(chunk, answers):
            if isinstance(a, Exception):
                out.append({"id": r["id"], "error": str(a), "worker": where})
            else:
                out.append({"id": r["id"], **a.to_dict(), "worker": where})
    return out


def answer_records(
    client, records: list[dict], artifact: Path, partitions: int, threads=None, timeout=None
):
    """All records answered on the cluster of ``client``, in input order (``timeout`` seconds
    at most, then a TimeoutError)."""
    import dask.bag as db

    bag = db.from_sequence(records, npartitions=max(1, min(partitions, len(records))))
    results = bag.map_partitions(answer_partition, str(Path(artifact).resolve()), threads)
    return client.compute(results).result(timeout=timeout)


def worker_loads(client) -> dict[str, int]:
    """How many times each worker has loaded an artifact."""
    return client.run(lambda dask_worker: dask_worker.__dict__.get("_sqc_loads", 0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--squad", type=Path, required=True, help="SQuAD json or .jsonl records")
    parser.add_argument("--scheduler", help="address of a running cluster (default: start one)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster worker processes")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--predictions", type=Path)
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    records = load_records(args.squad, args.limit)
    if args.scheduler:
        client, cluster = Client(args.scheduler), None
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)
        client = Client(cluster)
    try:
        began = time.perf_counter()
        results = answer_records(
            client, records, args.artifact, args.partitions, None if args.scheduler else 1
        )
        seconds = time.perf_counter() - began
        loads = worker_loads(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    errors = [r for r in results if "error" in r]
    print(
        f"{len(results)} questions in {seconds:.1f} s ({len(results) / seconds:.1f} q/s) on "
        f"{len(loads)} workers (artifact loads per worker: {sorted(loads.values())}); "
        f"{len(errors)} errors"
    )
    if args.predictions:
        predictions = {r["id"]: r.get("answer", "") for r in results}
        args.predictions.write_text(json.dumps(predictions, ensure_ascii=False, indent=1))
        print(f"predictions: {args.predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
