"""Static memory plan: every batched intermediate gets an offset in one workspace.

after: ``graph.meta["memory"]`` maps each batched value that is not a graph input to
``(offset, size)`` in bytes *per example*; at run time with batch B the value lives at
``B * offset`` and takes ``B * size`` bytes, so one plan serves every batch size (intervals that
do not overlap per example do not overlap scaled by B). A node's attrs["reads_too"] names
values it reads beyond its inputs (they live until it). View ops (Reshape, Squeeze,
Unsqueeze, Flatten, Identity, Dropout) alias their input: ``graph.meta["alias"]`` maps a view to
the value that owns its bytes. Values whose lifetimes overlap never share bytes.
"""

from __future__ import annotations

from sqc.compiler.ir import Graph

ALIGN = 64  # bytes: a cache line, and the widest vector load
VIEW_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout")


def aligned(n: int) -> int:
    """``n`` rounded up to a multiple of ALIGN."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(graph: Graph) -> Graph:
    g = graph.copy()
    alias: dict[str, str] = {}
    for node in g.nodes:
        if node.op in VIEW_OPS and not node.domain and g.values[node.inputs[0]].batched:
            src = node.inputs[0]
            alias[node.outputs[0]] = alias.get(src, src)

    def owner(name: str) -> str:
        return alias.get(name, name)

    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, node in enumerate(g.nodes):
        for o in node.outputs:
            if o and owner(o) not in g.inputs:
                first.setdefault(owner(o), i)
                last[owner(o)] = max(last.get(owner(o), i), i)
        # reads_too: values a node's kernel reads beyond its inputs (pair_sparse_ffn)
        for name in [*node.inputs, *node.attrs.get("reads_too", ())]:
            if name and not g.values[name].is_const:
                last[owner(name)] = i
    for out in g.outputs:
        if owner(out) in last:
            last[owner(out)] = len(g.nodes)

    # Greedy first fit in order of definition: place each buffer at the lowest offset that
    # does not overlap a buffer whose lifetime intersects its own.
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    memory: dict[str, tuple[int, int]] = {}
    for name in sorted(first, key=lambda n: first[n]):
        size = aligned(max(g.values[name].nbytes, 1))
        live = sorted((o, s) for o, s, f, la in placed if not (la < first[name] or f > last[name]))
        offset = 0
        for o, s in live:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, first[name], last[name]))
        memory[name] = (offset, size)
    g.meta["memory"] = memory
    g.meta["alias"] = alias
    g.meta["workspace_per_example"] = max((o + s for o, s in memory.values()), default=0)
    return g
