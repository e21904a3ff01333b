"""A soak of the Engine in CI: 10,000 calls from 4 threads on the tiny model (about a second),
every output bit-identical to its input's first answer, RSS within 5% of its value after warm-up.
benchmarks/soak.py is the same run as a script (and takes any artifact)."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def _soak_module():
    spec = importlib.util.spec_from_file_location("sqc_soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ten_thousand_calls_from_four_threads(tiny_artifact):
    result = _soak_module().soak(tiny_artifact, calls=10_000, threads=4)
    print(f"\nsoak: {result}")
    assert result["errors"] == 0, result["first_errors"]
    assert result["calls"] == 10_000 and result["mismatches"] == 0
    assert result["rss_samples"] >= 90
    assert result["rss_growth_after_warmup"] <= 0.05, result
