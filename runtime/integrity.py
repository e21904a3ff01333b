"""Artifact integrity: what loading checks before any generated code runs.

The manifest records the format version, the sha256 of the library and of ``weights.bin`` and
the size of ``weights.bin``. Before the library is imported (importing it runs its code) the
Engine checks, in this order:

1. the format version (``load_manifest``) and the CPU features the code needs (``cpu.py``);
2. that every file the manifest names is there and ``weights.bin`` has its recorded size
   (a stat: free);
3. the sha256 of the library (a few MB: about 1 ms) -- always, since it is about to run;
4. the sha256 of ``weights.bin``. This one reads the whole file: 0.05 s for the 86 MiB of
   MiniLM-L6 (1.7 GB/s, page cache warm, SHA-NI, a quiet 2-vCPU EPYC) and 0.45-0.57 s for a
   440 MB file (bert-base's size) measured on the same machine while it was busy with other
   jobs (0.8-1 GB/s); a cold disk adds the read, which mapping the file would pay later anyway.
   It is on by default. A verified file is remembered in this process by (path, device, inode,
   size, mtime), so a server that loads the same artifact for several endpoints, or reloads it,
   pays once. ``Engine(..., verify=False)`` or ``SQC_VERIFY=0`` skips this one (the sizes,
   the library's sha256 and the CPU features are still checked), e.g. on a read-only image
   whose files were verified when it was built.

A file changed after it was verified is not seen (it is mapped, not copied); the check is
against damage and mix-ups (a truncated copy, a library from another build, a hand edit), not
against someone who can write the artifact directory while it is being served.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

VERIFY_ENV = "SQC_VERIFY"

_verified: dict[tuple, str] = {}
_verified_lock = threading.Lock()


class ArtifactError(Exception):
    """An artifact that cannot be loaded (missing, damaged, or built for another CPU)."""


def verify_by_default() -> bool:
    """Whether sha256 checks run when the caller does not say: ``SQC_VERIFY`` (default on)."""
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def recompile_hint(path: Path, manifest: dict, extra: str = "") -> str:
    """The command that rebuilds this artifact, as far as the manifest says how it was made."""
    model = (manifest.get("source_model") or {}).get("file") or "MODEL.onnx"
    parts = [f"sqc compile {model}"]
    if manifest.get("buckets"):
        parts.append("--buckets " + ",".join(str(b) for b in manifest["buckets"]))
    if manifest.get("max_batch_size"):
        parts.append(f"--batch-size {manifest['max_batch_size']}")
    if manifest.get("quantize") not in (None, "none"):
        parts.append(f"--quantize {manifest['quantize']}")
    parts += [f"-o {path}", "--force"]
    return "recompile it: `" + " ".join(parts) + extra + "`"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify_sha256(path: Path, expected: str, what: str, hint: str) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if _verified.get(key) == expected:
            return
    actual = file_sha256(path)
    if actual != expected:
        raise ArtifactError(
            f"{path}: {what} does not match the manifest (sha256 {actual[:12]}..., expected "
            f"{expected[:12]}...): the artifact is damaged or mixed with another build; {hint}"
        )
    with _verified_lock:
        _verified[key] = expected


def _check_sanitizer_runtime(lib_path: Path, hint: str) -> None:
    """A library built with AddressSanitizer (SQC_EXTRA_CFLAGS, for the sanitizer test) aborts
    the process when imported unless libasan was loaded first: refuse it instead."""
    if b"libasan.so" not in lib_path.read_bytes():
        return
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    if "libasan" not in maps:
        raise ArtifactError(
            f"{lib_path} was built with AddressSanitizer (SQC_EXTRA_CFLAGS); run it in a process "
            "started with LD_PRELOAD=$(gcc -print-file-name=libasan.so), or, without "
            f"SQC_EXTRA_CFLAGS set, {hint}"
        )


def forget_verified() -> None:
    """Drop the in-process record of verified files (tests; a deliberate re-check)."""
    with _verified_lock:
        _verified.clear()


def verify_artifact(path: Path, manifest: dict, verify: bool | None = None) -> None:
    """Refuse a damaged artifact before any of its code runs (see the module docstring)."""
    hint = recompile_hint(path, manifest)
    try:
        library = manifest["library"]
        weights = manifest["weights"]
        library_file, library_sha = library["file"], library["sha256"]
        weights_file, weights_sha = weights["file"], weights["sha256"]
        weights_bytes = int(weights["bytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(
            f"{path}/manifest.json lacks the library or weights record ({e}); {hint}"
        ) from None
    lib_path = path / library_file
    weights_path = path / weights_file
    for p in (lib_path, weights_path):
        if not p.is_file():
            raise ArtifactError(f"{p}: missing; {hint}")
    size = weights_path.stat().st_size
    if size != weights_bytes:
        state = "truncated" if size < weights_bytes else "longer than it should be"
        raise ArtifactError(
            f"{weights_path}: {size} bytes, the manifest says {weights_bytes}: the weights "
            f"file is {state}, the artifact is damaged; {hint}"
        )
    _verify_sha256(lib_path, library_sha, "the library", hint)
    _check_sanitizer_runtime(lib_path, hint)
    if verify is None:
        verify = verify_by_default()
    if verify:
        _verify_sha256(weights_path, weights_sha, "weights.bin", hint)
