"""The compiler's graph: ONNX-shaped data, no behaviour beyond bookkeeping.

Passes are functions ``Graph -> Graph`` (see ``compiler/pipeline.py``). A graph is data: a
topologically ordered list of ``Node`` and a table of ``Value`` by name.

Batch semantics. sqc specializes a model for one example (batch 1) and runs it "vmapped" over
the batch at run time: every value that depends on a model input is *batched* and its ``shape``
is the shape for one example; at run time it holds ``batch`` such examples back to back. Every
value that does not depend on an input is a constant and is folded at compile time. This is
exact for encoder models, where examples never mix, and it keeps batch a run-time argument
without symbolic shapes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CompileError(Exception):
    """A problem with the user's model or options, reported as one line."""


class UnsupportedOpError(CompileError):
    def __init__(self, node: Node, opset: int | None, why: str = "is not supported"):
        domain = node.domain or "ai.onnx"
        super().__init__(f"node '{node.name}': op {node.op} (domain {domain}, opset {opset}) {why}")


@dataclass
class Value:
    name: str
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None  # per-example shape once specialized
    const: np.ndarray | None = None
    batched: bool = False

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def numel(self) -> int:
        assert self.shape is not None, self.name
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op: str
    inputs: list[str]  # "" marks an omitted optional input, as in ONNX
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""  # "" is ai.onnx; "com.microsoft"; "sqc" for the compiler's own ops

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""


@dataclass
class Graph:
    nodes: list[Node]
    values: dict[str, Value]
    inputs: list[str]
    outputs: list[str]
    opsets: dict[str, int]
    name: str = "model"
    # Declared ONNX shapes of inputs and outputs ("batch", "sequence" or ints), for the manifest.
    declared_shapes: dict[str, list] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Graph:
        """A copy whose node list, nodes and value records can be changed freely (arrays shared)."""
        return Graph(
            nodes=[copy.copy(n) for n in self.nodes],
            values={k: copy.copy(v) for k, v in self.values.items()},
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            opsets=dict(self.opsets),
            name=self.name,
            declared_shapes=copy.deepcopy(self.declared_shapes),
            meta=dict(self.meta),
        )

    def opset_of(self, node: Node) -> int | None:
        return self.opsets.get(node.domain or "", self.opsets.get("ai.onnx"))

    def value(self, name: str) -> Value:
        if name not in self.values:
            self.values[name] = Value(name)
        return self.values[name]

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        v = self.values.get(name)
        return None if v is None else v.const

    def add_const(self, hint: str, array: np.ndarray) -> str:
        """Add a constant under a fresh name derived from ``hint``; return its name."""
        name = self.fresh_name(hint)
        array = np.asarray(array)
        self.values[name] = Value(name, array.dtype, tuple(array.shape), array, False)
        return name

    def fresh_name(self, hint: str) -> str:
        name, i = hint, 0
        while name in self.values:
            i += 1
            name = f"{hint}__{i}"
        self.values[name] = Value(name)
        return name

    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users
