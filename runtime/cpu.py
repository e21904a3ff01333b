"""What this CPU can run: feature flags and physical cores (Linux /proc and /sys).

``SQC_CPU_FEATURES_MASK`` (comma-separated flag names, e.g. ``avx512f``) hides features, to
check what an artifact does on a lesser CPU without one.
"""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def _proc_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_features() -> set[str]:
    masked = {f.strip() for f in os.environ.get("SQC_CPU_FEATURES_MASK", "").split(",") if f}
    return set(_proc_flags()) - masked


def missing_features(required) -> list[str]:
    have = cpu_features()
    return [f for f in required if f not in have]


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id") as f:
                package = f.read().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("cpu", cpu))
    return max(1, len(cores))
