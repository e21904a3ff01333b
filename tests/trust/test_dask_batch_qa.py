"""examples/dask_batch_qa.py on a local Dask cluster of 2 worker processes: every record answered
as a local Pipeline answers it, each worker loading the artifact once, a bad record reported
without failing its partition. Skipped when dask is not installed (pip install -e '.[dask]')."""

from __future__ import annotations

import importlib.util

import pytest

from sqc import Pipeline
from tests.conftest import ROOT

pytest.importorskip("dask.bag", reason="dask is not installed: pip install -e '.[dask]'")
distributed = pytest.importorskip("distributed", reason="pip install -e '.[dask]'")


EXAMPLE = ROOT / "examples" / "dask_batch_qa.py"


def _example():
    import sys

    if "dask_batch_qa" in sys.modules:
        return sys.modules["dask_batch_qa"]
    spec = importlib.util.spec_from_file_location("dask_batch_qa", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dask_batch_qa"] = module
    spec.loader.exec_module(module)
    return module


WORDS = "the cat sat on a mat while Mark read about batman in Paris during 1999".split()


def _records(n: int) -> list[dict]:
    records = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(8 + i % 30)]
        records.append(
            {"id": f"q{i}", "question": f"who {WORDS[i % len(WORDS)]}?", "context": " ".join(words)}
        )
    return records


def test_partitions_answered_on_two_workers(tiny_artifact):
    example = _example()
    records = _records(60)
    records[17]["question"] = "   "  # invalid: reported, its partition still answered
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.upload_file(str(EXAMPLE))  # the workers import the module's functions by name
        results = example.answer_records(
            client, records, tiny_artifact, partitions=8, threads=1, timeout=120
        )
        loads = example.worker_loads(client)
    print(f"\ndask: {len(results)} records, 8 partitions, loads per worker {loads}")
    assert [r["id"] for r in results] == [r["id"] for r in records]
    assert sorted(loads.values()) == [1, 1]  # both workers used, each loaded once
    assert len({r["worker"] for r in results}) == 2
    assert "question is empty" in results[17]["error"]
    qa = Pipeline.create(model_path=tiny_artifact, threads=1)
    for record, result in zip(records, results):
        if "error" in result:
            continue
        local = qa(question=record["question"], context=record["context"])
        assert (result["answer"], result["start"], result["end"]) == (
            local.answer,
            local.start,
            local.end,
        )
        assert result["score"] == pytest.approx(local.score, abs=1e-4)


def test_load_records_reads_squad_and_jsonl(tmp_path):
    import json

    example = _example()
    squad = {"data": [{"paragraphs": [{"context": "c1", "qas": [{"id": "a", "question": "q"}]}]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad))
    (tmp_path / "r.jsonl").write_text('{"question": "q", "context": "c"}\n\n')
    assert example.load_records(tmp_path / "s.json") == [
        {"id": "a", "question": "q", "context": "c1"}
    ]
    assert example.load_records(tmp_path / "r.jsonl") == [
        {"question": "q", "context": "c", "id": "0"}
    ]
