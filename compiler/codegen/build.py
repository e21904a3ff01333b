"""Build generated C into a shared library with cffi (gcc, -O3, the target's ISA flags).

``SQC_EXTRA_CFLAGS`` (read at build time, split like a shell word list) adds flags to the compile
and the link, e.g. ``-fsanitize=address,undefined -fno-omit-frame-pointer`` for the sanitizer
test (tests/trust/test_sanitizers.py). The driver's build key does not include them: a build with
extra flags belongs in its own output directory, or is made with ``force=True``.
"""

from __future__ import annotations

import importlib.machinery
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqc.compiler.ir import CompileError

# Target ISA -> compiler flags, the CPU features (as /proc/cpuinfo names them) the code needs,
# the ISAs of its f32 and int8 kernels (templates/kernels/*.h.j2; int8_isa: sparse, attention
# and packing; int8_gemm: the dense int8 GEMM variant, kernels.int8_gemm_variant). In order of
# preference: `--target native` takes the first one this CPU has.
_AVX512_CFLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"]
_AVX512_CFLAGS += ["-mfma", "-mavx2", "-mf16c"]
_AVX512_FEATURES = ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "fma", "avx2"]
_AVX512_FEATURES += ["f16c"]
TARGETS = {
    # AVX-512 with VNNI and AMX (Intel Sapphire Rapids and later): the avx512 target whose dense
    # int8 GEMMs run on AMX tiles (int8_gemm "avx512_amx"; same packing and bits as avx512_vnni).
    "avx512amx": {
        "cflags": _AVX512_CFLAGS
        + ["-mamx-tile", "-mamx-int8", "-mavx512vbmi", "-mprefer-vector-width=512"],
        # VBMI (every AMX CPU has it): byte permutes for an epilogue's table (int8_gemm.h.j2)
        "cpu_features": _AVX512_FEATURES + ["amx_tile", "amx_int8", "avx512vbmi"],
        "f32_isa": "avx512",
        "int8_isa": "avx512_vnni",
        "int8_gemm": "avx512_amx",
    },
    # AVX-512 with VNNI and VBMI (Intel Ice Lake and later, AMD Zen 4 and later): the avx512
    # target whose int8 epilogues look their tables up by byte permutes (a QDQ file's GELU table:
    # vpermi2b where avx512 gathers; int8_gemm.h.j2 sqc_lut8_bytes16). Same results bit for bit.
    "avx512vbmi": {
        "cflags": _AVX512_CFLAGS + ["-mavx512vbmi", "-mprefer-vector-width=512"],
        "cpu_features": _AVX512_FEATURES + ["avx512vbmi"],
        "f32_isa": "avx512",
        "int8_isa": "avx512_vnni",
        "int8_gemm": "avx512_vnni",
    },
    # AVX-512 with VNNI (Intel Cascade Lake and later, AMD Zen 4 and later).
    "avx512": {
        "cflags": _AVX512_CFLAGS + ["-mprefer-vector-width=512"],
        "cpu_features": list(_AVX512_FEATURES),
        "f32_isa": "avx512",
        "int8_isa": "avx512_vnni",
        "int8_gemm": "avx512_vnni",
    },
    # AVX2 with AVX-VNNI (Intel Alder Lake and later without AVX-512).
    "avxvnni": {
        "cflags": ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"],
        "cpu_features": ["avx2", "fma", "f16c", "avx_vnni"],
        "f32_isa": "avx2",  # AVX-VNNI adds int8 instructions only
        "int8_isa": "avx_vnni",
        "int8_gemm": "avx_vnni",
    },
    # AVX2 + FMA (Haswell and later, AMD Zen 1-3).
    "avx2": {
        "cflags": ["-mavx2", "-mfma", "-mf16c"],
        "cpu_features": ["avx2", "fma", "f16c"],
        "f32_isa": "avx2",
        "int8_isa": "avx2",
        "int8_gemm": "avx2",
    },
}
# -g0: Python's own CFLAGS (which cffi passes first) include -g; debug information for the
# generated kernels made a third of every build's gcc time (a tiny QDQ model: 8.1 s -> 5.2 s)
# and is of no use to a user. SQC_EXTRA_CFLAGS=-g (added after) brings it back.
BASE_CFLAGS = [
    "-O3",
    "-g0",
    "-std=gnu11",
    "-fopenmp",
    "-fno-math-errno",
    "-Wno-unused-variable",
    "-Wno-unused-function",
    "-Wno-unused-but-set-variable",
]


def extra_cflags() -> list[str]:
    """Flags from ``SQC_EXTRA_CFLAGS``, added after the others (see the module docstring)."""
    return shlex.split(os.environ.get("SQC_EXTRA_CFLAGS", ""))


def cdef_for(buckets: list[int]) -> str:
    lines = []
    for s in buckets:
        lines.append(f"size_t sqc_workspace_s{s}(int B);")
        lines.append(
            f"int sqc_run_s{s}(const uint8_t *W, uint8_t *ws, int B, int nt, "
            "const void **in, void **out, double *prof);"
        )
    return "\n".join(lines)


def build_library(
    c_source: str, buckets: list[int], isa: str, out_dir: Path, module_name: str
) -> Path:
    """Compile ``c_source`` into ``out_dir/<module_name>.<ext>``; return the library's path."""
    import cffi

    if shutil.which(os.environ.get("CC", "gcc")) is None:
        raise CompileError("no C compiler found: install gcc (sqc builds the model with it)")
    ffi = cffi.FFI()
    ffi.cdef(cdef_for(buckets))
    ffi.set_source(
        module_name,
        c_source,
        extra_compile_args=BASE_CFLAGS + TARGETS[isa]["cflags"] + extra_cflags(),
        extra_link_args=["-fopenmp"] + extra_cflags(),
        libraries=["m"],
    )
    with tempfile.TemporaryDirectory(prefix="sqc-build-") as tmp:
        try:
            built = ffi.compile(tmpdir=tmp, verbose=False)
        except Exception as e:  # a compiler error is a bug in sqc: show gcc's own words
            raise CompileError(f"building the generated C failed: {_first_error(e)}") from None
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        target = out_dir / f"{module_name}{suffix}"
        shutil.copyfile(built, target)
    return target


def _first_error(e: Exception) -> str:
    text = str(e)
    for line in text.splitlines():
        if "error" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(e).__name__


def gcc_version() -> str:
    try:
        out = subprocess.run(
            [os.environ.get("CC", "gcc"), "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.splitlines()[0]
    except Exception:
        return "unknown"
