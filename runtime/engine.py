"""Engine: load a compiled artifact and run raw tensors through it.

Familiar to DeepSparse users: ``Engine(artifact)`` then ``engine([input_ids, mask, types])``
or ``engine.run({"input_ids": ...})``; outputs are a list of numpy arrays.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np

from sqc.runtime.cpu import missing_features, physical_cores
from sqc.runtime.integrity import ArtifactError, recompile_hint, verify_artifact

FORMAT_VERSION = 3  # 3: sqc_run_s* take a profile buffer; manifest has "profile"

__all__ = ["ArtifactError", "Engine", "EngineInputError", "generate_random_inputs"]


class EngineInputError(ValueError):
    """Inputs that do not match what the artifact was compiled for."""


HUGE_PAGE = 2 << 20


def huge_page_buffer(nbytes: int) -> np.ndarray:
    """A zeroed, page-aligned uint8 array of ``nbytes`` in an anonymous mapping that Linux backs
    with transparent 2 MiB pages where it can (madvise MADV_HUGEPAGE; the mapping rounded up to
    whole 2 MiB pages). A bert-base's 85 MB of int8 weights on 4 KiB pages are 21,000 TLB
    entries, far more than a core holds, so each call after other work paid a page walk per
    page: with onnxruntime interleaved, 1 x 128 on a Xeon took 26.5 ms from a mapped file and
    20.4 ms from huge pages (2 threads: 19.8 and 13.6 ms)."""
    import mmap

    size = max(HUGE_PAGE, -(-nbytes // HUGE_PAGE) * HUGE_PAGE)
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            region.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages: 4 KiB pages, still correct
            pass
    return np.frombuffer(region, np.uint8, nbytes)


def load_manifest(artifact: str | os.PathLike) -> dict:
    path = Path(artifact)
    if not path.is_dir():
        raise ArtifactError(
            f"{path}: not an artifact directory (compile one with `sqc compile model.onnx`)"
        )
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no manifest.json; not an sqc artifact") from None
    except ValueError as e:
        raise ArtifactError(
            f"{path}/manifest.json is damaged ({e}); recompile the model with "
            f"`sqc compile MODEL.onnx -o {path} --force`"
        ) from None
    if not isinstance(manifest, dict):
        raise ArtifactError(
            f"{path}/manifest.json is not a manifest; recompile the model with "
            f"`sqc compile MODEL.onnx -o {path} --force`"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {version}, this sqc reads format "
            f"{FORMAT_VERSION}; {recompile_hint(path, manifest)} with this sqc"
        )
    return manifest


class Engine:
    """A compiled model: raw numpy tensors in, raw outputs out. Safe to call from many threads.

    ``threads`` is the number of threads one call uses (default: the artifact's setting, else
    this machine's physical cores). Each calling thread gets its own workspace, so concurrent
    calls never share intermediate buffers; the weights are mapped once, read-only.

    Loading refuses, before any generated code runs, an artifact of another format version, one
    built for CPU features this machine lacks, and a damaged one (a missing or truncated file, a
    library or ``weights.bin`` whose sha256 is not the manifest's): see ``integrity.py``.
    ``verify=False`` (or ``SQC_VERIFY=0``) skips hashing ``weights.bin``, the one slow check.
    """

    def __init__(
        self, artifact: str | os.PathLike, threads: int | None = None, verify: bool | None = None
    ):
        self.path = Path(artifact)
        self.manifest = m = load_manifest(self.path)
        target = m.get("target") or {}
        missing = missing_features(target.get("cpu_features", []))
        if missing:
            raise ArtifactError(
                f"{self.path} was built for {target.get('isa')} but this CPU lacks "
                f"{', '.join(missing)}; on this machine "
                f"{recompile_hint(self.path, m, ' --target native')}"
            )
        verify_artifact(self.path, m, verify)
        self.buckets: list[int] = list(m["buckets"])
        self.max_batch_size: int = int(m["max_batch_size"])
        self.input_names = [i["name"] for i in m["inputs"]]
        self.output_names = [o["name"] for o in m["outputs"]]
        self._input_dtypes = {i["name"]: np.dtype(i["dtype"]) for i in m["inputs"]}
        self._layouts = [i["shape"] for i in m["inputs"]]
        self._outputs = m["outputs"]
        self._bounds = m.get("index_bounds", {})
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads or m.get("threads") or physical_cores()
        self._lib, self._ffi = self._load_library(m)
        self._weights = self._map_weights(m)
        self._weights_ptr = self._ffi.from_buffer("uint8_t[]", self._weights)
        self._local = threading.local()
        self._run = {s: getattr(self._lib, f"sqc_run_s{s}") for s in self.buckets}
        self._ws_size = {s: getattr(self._lib, f"sqc_workspace_s{s}") for s in self.buckets}

    def _load_library(self, m: dict):
        lib_path = self.path / m["library"]["file"]  # present and verified (verify_artifact)
        spec = importlib.util.spec_from_file_location(m["library"]["module"], lib_path)
        try:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except ImportError as e:
            raise ArtifactError(
                f"{lib_path}: cannot be loaded ({e}); with this Python and sqc, "
                f"{recompile_hint(self.path, m)}"
            ) from None
        return module.lib, module.ffi

    def _map_weights(self, m: dict) -> np.ndarray:
        """weights.bin read into this process's memory on 2 MiB pages (see huge_page_buffer),
        or with ``SQC_SHARE_WEIGHTS=1`` mapped read-only, so that processes share one copy in
        the page cache at the cost of a TLB miss per 4 KiB page of weights touched."""
        path = self.path / m["weights"]["file"]  # of the recorded size (verify_artifact)
        size = path.stat().st_size
        if size == 0:
            return np.zeros(64, np.uint8)
        if os.environ.get("SQC_SHARE_WEIGHTS", "0") not in ("", "0"):
            return np.memmap(path, dtype=np.uint8, mode="r")
        weights = huge_page_buffer(size)
        view = memoryview(weights)
        with open(path, "rb", buffering=0) as f:
            done = 0
            while done < size:
                n = f.readinto(view[done:])
                if not n:
                    raise ArtifactError(f"{path}: shorter than its recorded size; recompile it")
                done += n
        weights.flags.writeable = False
        return weights

    # ------------------------------------------------------------------ running

    def __call__(self, inputs, **kwargs) -> list[np.ndarray]:
        return self.run(inputs, **kwargs)

    def run(self, inputs, threads: int | None = None) -> list[np.ndarray]:
        """Run one batch. ``inputs``: a list in ``input_names`` order or a dict by name, each
        shaped as the manifest says ([batch, sequence] for QA models) with sequence one of
        ``buckets`` and 1 <= batch <= ``max_batch_size``."""
        return self._execute(inputs, threads, None)

    def profile(self, inputs, threads: int | None = None, repeats: int = 10) -> dict:
        """Where a call's time goes: each op's seconds as the generated code measures them
        (the mean of ``repeats`` profiled calls), and the median end-to-end seconds of as many
        unprofiled calls, interleaved with them.

        Returns {"batch", "sequence", "threads", "end_to_end_seconds", "ops": [{"node", "op",
        "flops", "seconds"}]}, ops in execution order; "flops" counts a dense layer's
        multiply-adds x 2 for this batch (0 for ops that are not matmuls)."""
        import time

        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
        arrays, batch, seq = self._check_inputs(inputs)
        ops = self.manifest.get("profile", {}).get(str(seq))
        if ops is None:
            raise ArtifactError(f"{self.path}: no profile table in the manifest; recompile it")
        prof = np.zeros(len(ops), np.float64)
        self._execute(arrays, threads, None)  # warm-up: workspace, pages, thread pool
        totals = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self._execute(arrays, threads, None)
            totals.append(time.perf_counter() - t0)
            self._execute(arrays, threads, prof)
        return {
            "batch": batch,
            "sequence": seq,
            "threads": threads or self.threads,
            "end_to_end_seconds": float(np.median(totals)),
            "ops": [
                {**op, "flops": op["flops"] * batch, "seconds": float(t / repeats)}
                for op, t in zip(ops, prof)
            ],
        }

    def _execute(self, inputs, threads, prof: np.ndarray | None) -> list[np.ndarray]:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        arrays, batch, seq = self._check_inputs(inputs)
        outputs = [
            np.empty(self._output_shape(o, batch, seq), np.dtype(o["dtype"])) for o in self._outputs
        ]
        ws = self._workspace(seq, batch)
        ffi = self._ffi
        in_ptrs = ffi.new("void *[]", [ffi.from_buffer(a) for a in arrays])
        out_ptrs = ffi.new("void *[]", [ffi.from_buffer(o) for o in outputs])
        err = self._run[seq](
            self._weights_ptr,
            ffi.from_buffer(ws),
            batch,
            threads or self.threads,
            in_ptrs,
            out_ptrs,
            ffi.NULL if prof is None else ffi.from_buffer("double[]", prof),
        )
        if err:
            raise EngineInputError(
                "an index input is out of range for the model's tables "
                "(token ids beyond the vocabulary?)"
            )
        return outputs

    @staticmethod
    def _output_shape(o: dict, batch: int, seq: int) -> list[int]:
        return [batch] + [int(d) for d in o["shape_per_bucket"][str(seq)][1:]]

    def _workspace(self, seq: int, batch: int) -> np.ndarray:
        need = int(self._ws_size[seq](batch))
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.nbytes < need:
            # Grown to the largest call this thread has made; page aligned.
            ws = huge_page_buffer(need)
            self._local.ws = ws
        return ws

    def _check_inputs(self, inputs) -> list[np.ndarray]:
        names = self.input_names
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(names))
            missing = [n for n in names if n not in inputs]
            if unknown or missing:
                raise EngineInputError(
                    f"inputs must be named {names}"
                    + (f"; unknown: {unknown}" if unknown else "")
                    + (f"; missing: {missing}" if missing else "")
                )
            inputs = [inputs[n] for n in names]
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(names):
                raise EngineInputError(f"expected {len(names)} inputs {names}, got {len(inputs)}")
        else:
            raise EngineInputError(
                f"inputs must be a list or a dict of arrays, got {type(inputs).__name__}"
            )
        arrays, batch, seq = [], None, None
        for name, a, layout in zip(names, inputs, self._layouts):
            a = np.asarray(a)
            want = self._input_dtypes[name]
            if a.dtype != want:
                if not (
                    np.issubdtype(a.dtype, np.integer)
                    and np.issubdtype(want, np.integer)
                    or np.issubdtype(a.dtype, np.floating)
                    and np.issubdtype(want, np.floating)
                ):
                    raise EngineInputError(f"input '{name}' has dtype {a.dtype}, expected {want}")
                a = a.astype(want)
            expected = "[" + ", ".join(str(d) for d in layout) + "]"
            if a.ndim != len(layout):
                raise EngineInputError(
                    f"input '{name}' has shape {list(a.shape)}, expected {expected}"
                )
            for dim, want_dim in zip(a.shape, layout):
                if want_dim == "batch":
                    batch = dim if batch is None else batch
                    ok = dim == batch
                elif want_dim == "sequence":
                    seq = dim if seq is None else seq
                    ok = dim == seq
                else:
                    ok = dim == want_dim
                if not ok:
                    raise EngineInputError(
                        f"input '{name}' has shape {list(a.shape)}, expected "
                        f"{expected} consistent with the other inputs"
                    )
            if name in self._bounds and a.size:
                lo, hi = int(a.min()), int(a.max())
                if lo < 0 or hi >= self._bounds[name]:
                    raise EngineInputError(
                        f"input '{name}' has values in [{lo}, {hi}], outside "
                        f"[0, {self._bounds[name] - 1}] (the model's table)"
                    )
            arrays.append(np.ascontiguousarray(a))
        if seq is None:  # no sequence axis: a fixed-shape model has a single bucket
            seq = self.buckets[0]
        if seq not in self.buckets:
            raise EngineInputError(
                f"sequence length {seq} is not a compiled bucket {self.buckets}; pad to one of them"
            )
        if not 1 <= batch <= self.max_batch_size:
            raise EngineInputError(
                f"batch size {batch} is outside 1..{self.max_batch_size} "
                "(the compiled maximum; split the batch or recompile with "
                "--batch-size)"
            )
        return arrays, batch, seq

    def __repr__(self) -> str:
        return (
            f"Engine({str(self.path)!r}, buckets={self.buckets}, "
            f"max_batch_size={self.max_batch_size}, threads={self.threads})"
        )


def generate_random_inputs(
    engine: Engine, batch_size: int = 1, sequence_length: int | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Seeded inputs of the right names, shapes and dtypes (as DeepSparse's helper).

    Token ids are drawn from the vocabulary (above the special-token range when it is large),
    each row is valid up to a random length with an attention mask padding the tail, token
    types are 0 for the first third and 1 after; float inputs are standard normal.
    """
    rng = np.random.default_rng(seed)
    seq = sequence_length or engine.buckets[-1]
    lengths = rng.integers(max(1, seq // 2), seq + 1, size=batch_size)
    arrays = []
    for name, layout in zip(engine.input_names, engine._layouts):
        dtype = engine._input_dtypes[name]
        shape = [batch_size if d == "batch" else seq if d == "sequence" else d for d in layout]
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(shape).astype(dtype))
            continue
        valid = np.arange(shape[1])[None, :] < lengths[:, None] if len(shape) == 2 else True
        bound = engine._bounds.get(name)
        if "mask" in name:
            a = np.broadcast_to(valid, shape)
        elif "type" in name or "segment" in name:
            a = (np.arange(shape[-1]) >= shape[-1] // 3) & valid
            if bound is not None:
                a = np.minimum(a, bound - 1)
        else:
            hi = bound or 1000
            lo = 1000 if hi > 2000 else 0
            a = np.where(valid, rng.integers(lo, hi, size=shape), 0)
        arrays.append(np.ascontiguousarray(np.broadcast_to(a, shape)).astype(dtype))
    return arrays
