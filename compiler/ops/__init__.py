"""Op definitions: one handler per op, named as the op, with the spec's attributes and defaults.

Each handler has ``evaluate`` (numpy semantics, used for constant folding and shape
inference) and optionally ``infer`` (shapes and dtypes without computing, for ops whose
evaluation would be expensive). Code emission lives in ``compiler/codegen``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqc.compiler.ir import Node

# evaluate(node, arrays, opset) -> list of arrays; arrays[i] is None for omitted inputs
Evaluate = Callable[[Node, list, int], list]
# infer(node, [(dtype, shape) | None], opset) -> [(dtype, shape)]
Infer = Callable[[Node, list, int], list]


@dataclass(frozen=True)
class OpDef:
    op: str
    domain: str
    evaluate: Evaluate | None
    infer: Infer | None = None
    attrs: frozenset[str] = field(default_factory=frozenset)
    since: int = 1  # lowest opset version supported
    # input positions that must be compile-time constants (shape, axes, ...)
    const_inputs: tuple[int, ...] = ()


REGISTRY: dict[tuple[str, str], OpDef] = {}

# ONNX opsets this compiler implements (ai.onnx). Older or newer models are refused by name.
MIN_OPSET = 11
MAX_OPSET = 21


def register(
    op: str,
    domain: str = "",
    *,
    attrs=(),
    infer: Infer | None = None,
    since: int = 1,
    const_inputs: tuple[int, ...] = (),
):
    def wrap(fn: Evaluate | None):
        REGISTRY[(domain, op)] = OpDef(op, domain, fn, infer, frozenset(attrs), since, const_inputs)
        return fn

    return wrap


def lookup(node: Node) -> OpDef | None:
    return REGISTRY.get((node.domain or "", node.op))


def _load_all() -> None:
    from sqc.compiler.ops import contrib_ops, onnx_ops, quant_ops, sqc_ops  # noqa: F401


_load_all()
