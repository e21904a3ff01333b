"""Loading refuses a damaged, mismatched or foreign artifact before any of its code runs, with a
message that names the problem and says how to rebuild (`sqc compile ... --force`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sqc
from sqc.runtime import integrity
from sqc.runtime.engine import FORMAT_VERSION, ArtifactError, Engine, generate_random_inputs
from tests.trust.conftest import TINY_MODEL

RECOMPILE = r"recompile it: `sqc compile bert_qa_opset17\.onnx --buckets 16,32 --batch-size 4 -o "


def _library(path: Path) -> Path:
    return path / json.loads((path / "manifest.json").read_text())["library"]["file"]


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_an_intact_copy_loads_and_runs(artifact_copy):
    engine = Engine(artifact_copy())
    assert engine.run(generate_random_inputs(engine, 1, 16))[0].shape == (1, 16)


def test_one_flipped_byte_of_weights_is_refused(artifact_copy):
    path = artifact_copy()
    with open(path / "weights.bin", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ArtifactError, match="weights.bin does not match the manifest") as e:
        Engine(path)
    assert "damaged or mixed with another build" in str(e.value)
    assert f"-o {path} --force`" in str(e.value)
    # The opt-out skips exactly this check (and says so in integrity.py).
    Engine(path, verify=False)


def test_flipped_weights_load_with_sqc_verify_0(artifact_copy, monkeypatch):
    path = artifact_copy()
    data = bytearray((path / "weights.bin").read_bytes())
    data[-1] ^= 0xFF
    (path / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weights.bin does not match"):
        Engine(path)
    monkeypatch.setenv("SQC_VERIFY", "0")
    Engine(path)


@pytest.mark.parametrize("keep", [0, 100, -1])
def test_truncated_weights_are_refused_even_without_verify(artifact_copy, keep):
    path = artifact_copy()
    size = (path / "weights.bin").stat().st_size
    with open(path / "weights.bin", "r+b") as f:
        f.truncate(keep % size if keep >= 0 else size - 1)
    for verify in (True, False):
        with pytest.raises(ArtifactError, match=f"bytes, the manifest says {size}") as e:
            Engine(path, verify=verify)
        assert "truncated" in str(e.value) and "--force`" in str(e.value)


def test_longer_weights_are_refused(artifact_copy):
    path = artifact_copy()
    with open(path / "weights.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="longer than it should be"):
        Engine(path)


def test_a_replaced_library_is_refused_before_it_is_imported(artifact_copy, tmp_path):
    other = sqc.compile_model(TINY_MODEL, [16], tmp_path / "other", max_batch_size=2)
    path = artifact_copy()
    library = _library(path)
    library.write_bytes(_library(other).read_bytes())
    module = json.loads((path / "manifest.json").read_text())["library"]["module"]
    # A fresh process, so that the module cannot already be imported from the intact copy.
    code = (
        "import sys\n"
        "from sqc.runtime.engine import Engine, ArtifactError\n"
        "try:\n"
        f"    Engine({str(path)!r})\n"
        "except ArtifactError as e:\n"
        "    print('refused:', e)\n"
        f"print('imported' if {module!r} in sys.modules else 'not imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused:" in out.stdout and "the library does not match the manifest" in out.stdout
    assert "not imported" in out.stdout, out.stdout + out.stderr


def test_a_missing_library_is_refused(artifact_copy):
    path = artifact_copy()
    _library(path).unlink()
    with pytest.raises(ArtifactError, match=r"\.so: missing; " + RECOMPILE):
        Engine(path)


@pytest.mark.parametrize(
    "version", [FORMAT_VERSION - 1, FORMAT_VERSION + 1, None, str(FORMAT_VERSION)]
)
def test_another_format_version_is_refused(artifact_copy, version):
    path = artifact_copy()
    _edit_manifest(path, lambda m: m.update(format_version=version))
    expected = f"artifact format {version}, this sqc reads format {FORMAT_VERSION}"
    with pytest.raises(ArtifactError, match=expected):
        Engine(path)


def test_a_manifest_without_hashes_is_refused(artifact_copy):
    path = artifact_copy()
    _edit_manifest(path, lambda m: m["weights"].pop("sha256"))
    with pytest.raises(ArtifactError, match="lacks the library or weights record"):
        Engine(path)


def test_avx512_artifact_on_a_cpu_without_avx512_is_refused_before_any_code_runs(
    artifact_copy, tmp_path, monkeypatch
):
    # Built for AVX-512 whatever this CPU has (gcc cross-compiles); never run here unless it can.
    built = sqc.compile_model(
        TINY_MODEL, [16], tmp_path / "avx512", max_batch_size=2, target="avx512"
    )
    path = artifact_copy(built)
    _library(path).write_bytes(b"\x7fELF not a library")  # were it imported, it would fail
    monkeypatch.setenv("SQC_CPU_FEATURES_MASK", "avx512f,avx512_vnni")
    with pytest.raises(ArtifactError) as e:
        Engine(path)
    message = str(e.value)
    assert "was built for avx512 but this CPU lacks avx512f, avx512_vnni" in message
    assert "on this machine recompile it: `sqc compile bert_qa_opset17.onnx" in message
    assert "--target native`" in message


@pytest.mark.parametrize(
    "cpu, target",
    [
        ("sapphire rapids", "avx512amx"),
        ("zen 4", "avx512vbmi"),
        ("cascade lake", "avx512"),
        ("alder lake", "avxvnni"),
        ("zen 3", "avx2"),
    ],
)
def test_native_takes_the_best_target_the_cpu_has(monkeypatch, cpu, target):
    from sqc.compiler import driver

    avx2 = {"avx2", "fma", "f16c"}
    avx512 = avx2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}
    flags = {
        "sapphire rapids": avx512 | {"avx512vbmi", "amx_tile", "amx_int8"},
        "zen 4": avx512 | {"avx512vbmi", "avx512_bf16"},
        "cascade lake": avx512,
        "alder lake": avx2 | {"avx_vnni"},
        "zen 3": avx2,
    }[cpu]
    monkeypatch.setattr(driver, "host_cpu_features", lambda: flags)
    assert driver.resolve_target("native") == target
    # every target's features are the CPU's: the artifact loads there
    assert set(driver.TARGETS[target]["cpu_features"]) <= flags


def test_verified_weights_are_hashed_once_per_process(artifact_copy, monkeypatch):
    path = artifact_copy()
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    Engine(path)
    Engine(path)
    assert hashed.count("weights.bin") == 1
    # A changed file (new size or mtime) is hashed again.
    with open(path / "weights.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="longer"):
        Engine(path)


def test_the_cli_shows_one_line_with_the_fix(artifact_copy):
    path = artifact_copy()
    with open(path / "weights.bin", "r+b") as f:
        f.truncate(10)
    out = subprocess.run(
        [sys.executable, "-m", "sqc.cli", "run", str(path), "--question", "q?", "--context", "c"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated" in errors[0], out.stderr
    assert "sqc compile bert_qa_opset17.onnx" in out.stderr


def test_a_damaged_cached_build_of_an_onnx_is_rebuilt(tmp_path, monkeypatch):
    from sqc.api import ensure_artifact

    monkeypatch.setenv("SQC_CACHE_DIR", str(tmp_path / "cache"))
    first = ensure_artifact(TINY_MODEL, [16], 2)
    with open(first / "weights.bin", "r+b") as f:
        f.write(b"\xff\xff\xff\xff")
    integrity.forget_verified()
    again = ensure_artifact(TINY_MODEL, [16], 2)
    assert again == first
    Engine(again)  # verified again: intact
