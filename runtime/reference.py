"""The reference engine: the ONNX model run by onnxruntime, behind the same interface as the
compiled `Engine` (`buckets`, `max_batch_size`, `input_names`, `output_names`, `run`).

Tests compare sqc against it and benchmarks time it beside sqc, so it runs the best dense path
onnxruntime offers on a CPU: all graph optimizations on, and the thread count set explicitly when
given, so both sides of a comparison use the same threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["OnnxRuntimeEngine"]

# onnxruntime's names for the integer element types a QA model may declare for its inputs.
_ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxRuntimeEngine:
    """An ONNX model in an onnxruntime CPU session, restricted to fixed sequence lengths.

    `buckets` are the sequence lengths accepted (the model itself must have a dynamic or matching
    sequence axis); `run` takes int64 arrays [batch, S] with S in `buckets` and
    batch <= `max_batch_size`, keyed by `input_names`, and returns the outputs as numpy arrays in
    `output_names` order. Inputs the model declares as int32 are cast. Inputs out of contract
    (missing name, other length, larger batch) raise ValueError, so callers that break the engine
    interface fail here as they would on the compiled engine.

    `threads`: onnxruntime's intra-op thread count; None keeps onnxruntime's default (one per
    physical core).
    """

    def __init__(
        self,
        model_path: str | Path,
        buckets: int | Sequence[int],
        max_batch_size: int = 32,
        threads: int | None = None,
        per_example: bool = False,
    ) -> None:
        try:
            import onnxruntime
        except ImportError as error:  # the reference is optional at install time
            raise ImportError(
                "OnnxRuntimeEngine needs onnxruntime: pip install onnxruntime"
            ) from error

        self.model_path = str(model_path)
        self.buckets = sorted(
            {int(b) for b in ([buckets] if isinstance(buckets, int) else buckets)}
        )
        if not self.buckets or self.buckets[0] < 1:
            raise ValueError(f"buckets must be positive sequence lengths, got {buckets!r}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = int(max_batch_size)
        self.threads = threads
        # Run a batch one example at a time: for dynamic-quantized files, whose
        # DynamicQuantizeLinear takes its range over the whole batch tensor in onnxruntime but
        # per example in sqc, this gives onnxruntime sqc's (batch-independent) semantics.
        self.per_example = per_example

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self.session = onnxruntime.InferenceSession(
            self.model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_types = {
            node.name: _ORT_INT_TYPES.get(node.type, np.int64) for node in self.session.get_inputs()
        }
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for one batch, in `output_names` order."""
        feed = {}
        for name in self.input_names:
            if name not in inputs:
                raise ValueError(f"missing input {name!r}; the model takes {self.input_names}")
            array = np.asarray(inputs[name])
            if array.ndim != 2 or array.shape[1] not in self.buckets:
                raise ValueError(
                    f"input {name!r} has shape {array.shape}; expected [batch, S] with S in "
                    f"{self.buckets}"
                )
            if array.shape[0] > self.max_batch_size:
                raise ValueError(
                    f"input {name!r} has batch {array.shape[0]} > max_batch_size "
                    f"{self.max_batch_size}"
                )
            feed[name] = array.astype(self._input_types[name], copy=False)
        if self.per_example:
            batch = next(iter(feed.values())).shape[0]
            runs = [
                self.session.run(self.output_names, {k: v[i : i + 1] for k, v in feed.items()})
                for i in range(batch)
            ]
            return [np.concatenate(parts) for parts in zip(*runs)]
        return self.session.run(self.output_names, feed)

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeEngine({self.model_path!r}, buckets={self.buckets}, "
            f"max_batch_size={self.max_batch_size}, threads={self.threads})"
        )
