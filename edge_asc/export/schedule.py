"""Memory-aware operator order: the same graph, its ops reordered so fewer activation bytes are live at once.

TFLite interpreters (LiteRT, TFLite Micro) run the operators of a subgraph in the order the file stores them, and
TFLite Micro's memory planner sizes the arena from the tensors' live ranges in that order. The TFLite converter
orders ops without regard to memory: on Mini-SegNet it upsamples the decoder values of the second unpooling before
the skip tensor's last use, so four full-resolution tensors are live at once where three would do.

:func:`order_ops` searches topological orders by local moves from the converter's: each op is tried just before its
first consumer (sinking it) and just after its last producer (hoisting it), and a move is kept when the peak of live
activation bytes falls, or stays and the sum over all ops falls. Every order it returns is a valid topological order
of the same ops, so every tensor holds the same values (tests compare the outputs bit for bit);
:func:`reorder_for_memory` rewrites a ``.tflite`` file in that order. Pure Python: the file is read with
:func:`edge_asc.artifact.read_artifact` and rewritten with the object API of the TFLite schema bindings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Passes over all ops; each pass that keeps no move ends the search.
MAX_PASSES = 8


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """An operator order and what it costs."""

    order: tuple[int, ...]
    """original op indices in execution order."""
    peak_bytes: int
    """activation bytes live at the worst op (graph inputs from the start, outputs to the end, constants excluded)."""
    original_peak_bytes: int
    moved: int
    """ops whose position changed."""

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "original_peak_bytes": self.original_peak_bytes, "moved": self.moved}


def live_ranges(order: Sequence[int], op_io: Sequence[tuple[Sequence[int], Sequence[int]]],
                sizes: Collection[int], *, graph_inputs: Collection[int] = (),
                graph_outputs: Collection[int] = ()) -> dict[int, tuple[int, int]]:
    """Tensor -> (first, last) position in ``order`` at which it is live; only tensors in ``sizes`` (activations),
    graph inputs from position 0, graph outputs to the last position."""
    n = len(order)
    first: dict[int, int] = {i: 0 for i in graph_inputs if i in sizes}
    last: dict[int, int] = dict(first)
    for pos, k in enumerate(order):
        ins, outs = op_io[k]
        for i in (*ins, *outs):
            if i in sizes:
                first.setdefault(i, pos)
                last[i] = max(last.get(i, pos), pos)
    for i in graph_outputs:
        if i in sizes:
            first.setdefault(i, n - 1)
            last[i] = n - 1
    return {i: (f, last[i]) for i, f in first.items()}


def _cost(order: Sequence[int], op_io: Sequence[tuple[Sequence[int], Sequence[int]]], sizes: Mapping[int, int],
          pinned_first: Collection[int], pinned_last: Collection[int]) -> tuple[int, int]:
    """(peak, sum) of live activation bytes over the ops when run in ``order``."""
    n = len(order)
    diff = [0] * (n + 1)
    for i, (f, la) in live_ranges(order, op_io, sizes, graph_inputs=pinned_first, graph_outputs=pinned_last).items():
        diff[f] += sizes[i]
        diff[la + 1] -= sizes[i]
    peak = total = live = 0
    for k in range(n):
        live += diff[k]
        peak, total = max(peak, live), total + live
    return peak, total


def order_ops(op_io: Sequence[tuple[Sequence[int], Sequence[int]]], sizes: Mapping[int, int], *,
              graph_inputs: Collection[int] = (), graph_outputs: Collection[int] = ()) -> Schedule:
    """A topological order of the ops with a lower activation peak than ``range(len(op_io))`` where one is found.

    Args:
        op_io: per op in the original order, (input tensor indices, output tensor indices); the original order must
            be topological (a producer before its consumers), as in every TFLite file.
        sizes: bytes of every activation tensor (tensors not in it, i.e. constants, are ignored).
        graph_inputs, graph_outputs: live from the first op / to the last op.
    """
    n = len(op_io)
    producer = {i: k for k, (_, outs) in enumerate(op_io) for i in outs if i in sizes}
    consumers: dict[int, list[int]] = {k: [] for k in range(n)}
    producers: dict[int, set[int]] = {k: set() for k in range(n)}
    for k, (ins, _) in enumerate(op_io):
        for i in ins:
            if i in producer and producer[i] != k:
                consumers[producer[i]].append(k)
                producers[k].add(producer[i])
    pin_in = [i for i in graph_inputs if i in sizes]
    pin_out = [i for i in graph_outputs if i in sizes]

    def cost(o: Sequence[int]) -> tuple[int, int]:
        return _cost(o, op_io, sizes, pin_in, pin_out)

    order = list(range(n))
    best = original = cost(order)
    for _ in range(MAX_PASSES):
        kept = False
        for k in reversed(list(order)):
            pos = order.index(k)
            after = [order.index(c) for c in consumers[k]]
            before = [order.index(p) for p in producers[k]]
            targets = []
            if after and min(after) - 1 > pos:
                targets.append(min(after) - 1)  # sink: just before the first consumer
            if max(before, default=-1) + 1 < pos:
                targets.append(max(before, default=-1) + 1)  # hoist: just after the last producer
            for t in targets:
                trial = order[:pos] + order[pos + 1:]
                trial.insert(t, k)
                c = cost(trial)
                if c < best:
                    order, best, kept = trial, c, True
                    break
        if not kept:
            break
    return Schedule(order=tuple(order), peak_bytes=best[0], original_peak_bytes=original[0],
                    moved=sum(1 for a, b in enumerate(order) if a != b))


def reorder_for_memory(model: bytes) -> tuple[bytes, Schedule]:
    """Rewrite subgraph 0 of a ``.tflite`` file in the order :func:`order_ops` finds.

    Returns the new file (the input unchanged when no order is better) and the schedule. Only the operator list of
    subgraph 0 changes; tensors, buffers, metadata and signatures are written back as read.
    """
    import flatbuffers

    from ..artifact import FILE_IDENTIFIER, read_artifact
    from ..errors import require

    art = read_artifact(model)
    sizes = {t.index: t.nbytes for t in art.tensors if not t.constant}
    op_io = [(op.present_inputs, op.outputs) for op in art.ops]
    sched = order_ops(op_io, sizes, graph_inputs=art.inputs, graph_outputs=art.outputs)
    if sched.moved == 0:
        return model, sched
    schema = require("ai_edge_litert.schema_py_generated", "pi", "writing TFLite graphs")
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    g = m.subgraphs[0]
    g.operators = [g.operators[k] for k in sched.order]
    b = flatbuffers.Builder(len(model) + 4096)
    b.Finish(m.Pack(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output()), sched


#: TFLite Micro rounds every planned buffer up to this many bytes (``MicroArenaBufferAlignment``).
TFLM_BUFFER_ALIGNMENT = 16


def greedy_arena_bytes(sizes: Sequence[int], first: Sequence[int], last: Sequence[int], *,
                       alignment: int = TFLM_BUFFER_ALIGNMENT) -> int:
    """Bytes TFLite Micro's ``GreedyMemoryPlanner`` needs for buffers live from op ``first[i]`` to ``last[i]``.

    The planner places buffers largest first, each at the lowest offset where it overlaps no placed buffer that is
    live at the same time; the arena head is the highest end. It can exceed the peak of live bytes (gaps left by
    larger buffers), never undercut it.
    """
    aligned = [-(-int(s) // alignment) * alignment for s in sizes]
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    top = 0
    for i in sorted(range(len(aligned)), key=lambda j: -aligned[j]):
        size, f, la = aligned[i], first[i], last[i]
        offset = 0
        for o, s, _, _ in sorted(p for p in placed if p[2] <= la and f <= p[3]):
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, f, la))
        top = max(top, offset + size)
    return top
