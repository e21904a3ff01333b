"""Mutated and truncated ONNX files for the importer's fuzz test, and a runner that compiles each
in a child process with a time and memory limit and says how the compile ended.

Three kinds of case, from a seed:

- ``truncate``: the file cut at a random offset (half of them in its first tenth, where the graph
  structure is);
- ``flip``: 1 to 8 random bytes XOR-ed with a random mask (half in the first tenth);
- ``edit``: 1 to 3 edits through the onnx protobuf API (``EDITS``: an op type, domain, input,
  output, attribute value or type, initializer shape, type or data, graph input shape or type,
  opset or IR version changed, dropped or duplicated).

A case ends as ``built`` (the compile reached the C build; it is stopped there, gcc adds nothing
to the importer's test), ``CompileError`` (sqc's own one-line error), or a finding: ``error:
TYPE`` (any other exception), ``hang`` (over the time limit) or ``died`` (the child died: a
signal or a hard exit).
"""

from __future__ import annotations

import os
import random
import resource
import traceback
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import onnx

CLEAR = ("built", "CompileError")


class _ReachedBuild(Exception):
    pass


# ------------------------------------------------------------------ mutations

OP_TYPES = [
    "MatMul", "Gemm", "Add", "Gather", "Reshape", "Transpose", "Softmax", "LayerNormalization",
    "Attention", "SkipLayerNormalization", "Conv", "LSTM", "Loop", "If", "NoSuchOp", "",
]  # fmt: skip
INTS = [0, 1, -1, 2, 3, -7, 1023, 2**31 - 1, -(2**31), 2**40, -(2**62)]
FLOATS = [0.0, -1.0, 1e-12, 1e30, float("inf"), float("-inf"), float("nan")]


def _pick(rng: random.Random, seq):
    return rng.choice(list(seq)) if len(seq) else None


def _node(m, rng):
    return _pick(rng, m.graph.node)


def edit_op_type(m, rng):
    if (n := _node(m, rng)) is not None:
        n.op_type = rng.choice(OP_TYPES)


def edit_domain(m, rng):
    if (n := _node(m, rng)) is not None:
        n.domain = rng.choice(["", "com.microsoft", "ai.onnx.ml", "bogus.domain"])


def edit_drop_input(m, rng):
    if (n := _node(m, rng)) is not None and n.input:
        del n.input[rng.randrange(len(n.input))]


def edit_rename_input(m, rng):
    if (n := _node(m, rng)) is not None and n.input:
        names = [v for node in m.graph.node for v in node.output] + ["", "no_such_value"]
        n.input[rng.randrange(len(n.input))] = rng.choice(names)


def edit_extra_input(m, rng):
    if (n := _node(m, rng)) is not None:
        n.input.append(rng.choice([i.name for i in m.graph.initializer] or ["x"]))


def edit_rename_output(m, rng):
    if (n := _node(m, rng)) is not None and n.output:
        n.output[rng.randrange(len(n.output))] = rng.choice(["", "dup", m.graph.input[0].name])


def edit_drop_node(m, rng):
    if m.graph.node:
        del m.graph.node[rng.randrange(len(m.graph.node))]


def edit_duplicate_node(m, rng):
    if (n := _node(m, rng)) is not None:
        m.graph.node.insert(rng.randrange(len(m.graph.node) + 1), n)


def edit_swap_nodes(m, rng):
    if len(m.graph.node) > 1:
        i, j = rng.sample(range(len(m.graph.node)), 2)
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(m.graph.node[i])
        b.CopyFrom(m.graph.node[j])
        m.graph.node[i].CopyFrom(b)
        m.graph.node[j].CopyFrom(a)


def _attribute(m, rng):
    nodes = [n for n in m.graph.node if n.attribute]
    n = _pick(rng, nodes)
    return None if n is None else (n, _pick(rng, n.attribute))


def edit_attribute_value(m, rng):
    if (found := _attribute(m, rng)) is None:
        return
    _, a = found
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice(INTS)
    elif a.type == onnx.AttributeProto.INTS:
        if a.ints and rng.random() < 0.5:
            a.ints[rng.randrange(len(a.ints))] = rng.choice(INTS)
        else:
            del a.ints[:]
            a.ints.extend(rng.choice(INTS) for _ in range(rng.randrange(5)))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice(FLOATS)
    elif a.type == onnx.AttributeProto.STRING:
        a.s = rng.choice([b"", b"\xff\xfe", b"NOTSET", b"tanh"])
    elif a.type == onnx.AttributeProto.TENSOR:
        a.t.data_type = rng.randrange(0, 25)


def edit_attribute_type(m, rng):
    if (found := _attribute(m, rng)) is not None:
        found[1].type = rng.randrange(0, 15)


def edit_drop_attribute(m, rng):
    if (found := _attribute(m, rng)) is not None:
        n, a = found
        n.attribute.remove(a)


def edit_unknown_attribute(m, rng):
    if (n := _node(m, rng)) is not None:
        n.attribute.append(onnx.helper.make_attribute("fuzz_" + str(rng.randrange(9)), 1))


def _initializer(m, rng):
    return _pick(rng, m.graph.initializer)


def edit_initializer_dims(m, rng):
    if (t := _initializer(m, rng)) is not None:
        if t.dims and rng.random() < 0.7:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, -1, 2**20, 2**40])
        else:
            t.dims.append(rng.choice([0, 1, 2]))


def edit_initializer_type(m, rng):
    if (t := _initializer(m, rng)) is not None:
        t.data_type = rng.randrange(0, 25)


def edit_initializer_data(m, rng):
    if (t := _initializer(m, rng)) is not None:
        if t.raw_data:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]
        else:
            t.raw_data = os.urandom(rng.randrange(1, 64))


def edit_initializer_external(m, rng):
    if (t := _initializer(m, rng)) is not None:
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        entry = t.external_data.add()
        entry.key, entry.value = "location", rng.choice(["missing.bin", "../../etc/passwd", ""])


def edit_drop_initializer(m, rng):
    if m.graph.initializer:
        del m.graph.initializer[rng.randrange(len(m.graph.initializer))]


def edit_input_shape(m, rng):
    if (i := _pick(rng, m.graph.input)) is None:
        return
    dims = i.type.tensor_type.shape.dim
    if dims and rng.random() < 0.8:
        d = dims[rng.randrange(len(dims))]
        if rng.random() < 0.5:
            d.dim_value = rng.choice([0, 1, 7, 2**31, 2**40])
        else:
            d.dim_param = rng.choice(["", "batch", "sequence", "n"])
    else:
        i.type.tensor_type.shape.dim.add().dim_value = rng.choice([1, 2])


def edit_input_type(m, rng):
    if (i := _pick(rng, m.graph.input)) is not None:
        i.type.tensor_type.elem_type = rng.randrange(0, 25)


def edit_drop_graph_io(m, rng):
    field = m.graph.input if rng.random() < 0.5 else m.graph.output
    if field:
        del field[rng.randrange(len(field))]


def edit_output_name(m, rng):
    if (o := _pick(rng, m.graph.output)) is not None:
        o.name = rng.choice(["", "no_such_value", m.graph.input[0].name if m.graph.input else "x"])


def edit_opset(m, rng):
    if m.opset_import:
        m.opset_import[rng.randrange(len(m.opset_import))].version = rng.choice(
            [-1, 0, 1, 7, 13, 14, 17, 18, 19, 21, 99, 2**40]
        )
    if rng.random() < 0.2:
        del m.opset_import[:]


def edit_ir_version(m, rng):
    m.ir_version = rng.choice([0, 1, 3, 7, 8, 10, 99])


EDITS = [f for name, f in sorted(globals().items()) if name.startswith("edit_")]


def mutate(data: bytes, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """A mutant of the serialized model ``data`` and a short description of what was done."""
    if kind == "truncate":
        head = rng.random() < 0.5
        cut = rng.randrange(max(1, len(data) // 10) if head else len(data))
        return data[:cut], f"truncate at {cut} of {len(data)}"
    if kind == "flip":
        out = bytearray(data)
        where = []
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out) // 10 if rng.random() < 0.5 else len(out))
            out[i] ^= rng.randrange(1, 256)
            where.append(i)
        return bytes(out), f"flip bytes {where}"
    model = onnx.ModelProto()
    model.ParseFromString(data)
    done = []
    for _ in range(rng.randint(1, 3)):
        edit = rng.choice(EDITS)
        edit(model, rng)
        done.append(edit.__name__)
    return model.SerializeToString(), " + ".join(done)


# ------------------------------------------------------------------ running


def _sqc_frame(e: BaseException) -> str:
    """file:function of the innermost frame of sqc's own code in ``e``'s traceback."""
    where = "?"
    for frame in traceback.extract_tb(e.__traceback__):
        parts = Path(frame.filename).parts
        for root in ("compiler", "runtime", "sqc"):
            if root in parts and "site-packages" not in parts:
                rel = parts[parts.index(root) :]
                where = f"{'/'.join(rel)}:{frame.name}"
                break
    return where


def _compile_in_child(path: str, out_dir: str, memory_bytes: int, conn) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import sqc.compiler.driver as driver
    from sqc.compiler.ir import CompileError

    def stop_at_build(*args, **kwargs):
        raise _ReachedBuild

    driver.build_library = stop_at_build
    try:
        driver.compile_model(path, [16], out_dir, max_batch_size=2, force=True)
        outcome, message = "built", ""
    except _ReachedBuild:
        outcome, message = "built", ""
    except CompileError as e:
        outcome, message = "CompileError", str(e)
    except BaseException as e:  # a finding: report it, with where in sqc it came from
        outcome = f"error: {type(e).__name__} in {_sqc_frame(e)}"
        message = f"{e}\n{''.join(traceback.format_exc(limit=-3))}"
    conn.send((outcome, message))
    conn.close()
    os._exit(0)


def compile_outcome(
    path: Path, out_dir: Path, timeout: float = 30.0, memory_bytes: int = 3 << 30
) -> tuple[str, str]:
    """How compiling ``path`` ends, run in a child process: (outcome, message).

    The children are forked from a fork server (started once, without threads, with the
    compiler imported), not from this process: a test process may have threads (servers,
    thread pools) whose locks a plain fork would copy held."""
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["sqc.compiler.driver", "tests.trust.onnx_fuzz"])
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_compile_in_child, args=(str(path), str(out_dir), memory_bytes, send)
    )
    child.start()
    send.close()
    if not receive.poll(timeout):
        if child.is_alive():
            child.kill()
            child.join()
            return "hang", f"no result in {timeout:.0f} s"
    try:
        result = receive.recv()
    except EOFError:
        child.join()
        return "died", f"exit code {child.exitcode}"
    child.join()
    return result


def run_fuzz(models: list[Path], cases: dict[str, int], seed: int, work: Path):
    """Run ``cases`` (kind -> count) over ``models``; return (Counter of (kind, outcome),
    findings as (kind, model, description, outcome, message))."""
    rng = random.Random(seed)
    counts: Counter = Counter()
    findings = []
    sources = {m: m.read_bytes() for m in models}
    for kind, n in cases.items():
        for i in range(n):
            model = models[i % len(models)]
            data, what = mutate(sources[model], kind, rng)
            path = work / f"case-{kind}-{i}.onnx"
            path.write_bytes(data)
            outcome, message = compile_outcome(path, work / "out")
            counts[kind, outcome] += 1
            if outcome not in CLEAR:
                findings.append((kind, model.name, what, outcome, message))
            path.unlink()
    return counts, findings


def report(counts: Counter, findings, limit: int = 20) -> str:
    kinds = sorted({k for k, _ in counts})
    lines = [f"ONNX importer fuzz: {sum(counts.values())} cases"]
    for kind in kinds:
        ends = ", ".join(f"{o} {c}" for (k, o), c in sorted(counts.items()) if k == kind)
        lines.append(f"  {kind}: {sum(c for (k, _), c in counts.items() if k == kind)} ({ends})")
    for kind, model, what, outcome, message in findings[:limit]:
        lines.append(f"  FINDING {outcome} [{kind} {model}: {what}]\n    {message[:600]}")
    return "\n".join(lines)
