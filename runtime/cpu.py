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


# arch_prctl(2) and seccomp(2) on x86-64 Linux
_SYS_ARCH_PRCTL, _SYS_SECCOMP = 158, 317
_ARCH_GET_XCOMP_PERM, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 0x1022, 0x1023, 18


def _libc():
    """The C library, for syscall(2) (returning long) and prctl(2), with errno kept."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def amx_granted() -> bool:
    """Whether this process holds the AMX permission (Linux grants it on a thread's request:
    sqc's AMX kernels and onnxruntime's ask before their first tile instruction)."""
    import ctypes
    import sys

    if sys.platform != "linux":
        return False
    libc = _libc()
    granted = ctypes.c_ulong(0)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_XCOMP_PERM, ctypes.byref(granted)) != 0:
        return False
    return bool(granted.value >> _XFEATURE_XTILEDATA & 1)


def withhold_amx() -> None:
    """Make this process run as on a CPU without AMX: from now on Linux refuses every thread of
    it the AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM fails with EPERM, by a seccomp filter
    that cannot be lifted), so sqc's avx512amx artifacts run their VNNI code and onnxruntime's
    MLAS its VNNI GEMMs. For benchmarks and tests: an Intel Xeon with AMX then times the code a
    Cascade Lake, Ice Lake or Zen 4 runs. Call it before any engine or onnxruntime session has
    run (a permission already granted stays); raises OSError where it cannot be done."""
    import ctypes
    import platform
    import struct
    import sys

    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise OSError("withholding AMX needs Linux on x86-64")
    if amx_granted():
        raise OSError("this process already has the AMX permission; withhold it first")
    libc = _libc()

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:  # struct sock_filter
        return struct.pack("HBBI", code, jt, jf, k)

    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    program = b"".join(
        [
            op(ld_w_abs, 4),  # seccomp_data.arch
            op(jeq_k, 0xC000003E, 0, 5),  # AUDIT_ARCH_X86_64, else allow
            op(ld_w_abs, 0),  # seccomp_data.nr
            op(jeq_k, _SYS_ARCH_PRCTL, 0, 3),
            op(ld_w_abs, 16),  # the low half of args[0]
            op(jeq_k, _ARCH_REQ_XCOMP_PERM, 0, 1),
            op(ret_k, 0x00050000 | 1),  # SECCOMP_RET_ERRNO | EPERM
            op(ret_k, 0x7FFF0000),  # SECCOMP_RET_ALLOW
        ]
    )

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program)
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    pr_set_no_new_privs, seccomp_set_mode_filter, seccomp_filter_flag_tsync = 38, 1, 1
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    # TSYNC: every thread of the process, not only this one
    if (
        libc.syscall(
            _SYS_SECCOMP, seccomp_set_mode_filter, seccomp_filter_flag_tsync, ctypes.byref(fprog)
        )
        != 0
    ):
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0:
        raise OSError("the AMX permission is still granted after the seccomp filter")
