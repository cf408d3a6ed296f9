"""Static memory plan: every activation tensor gets a fixed offset in one arena, sized at generation time.

Lifetimes come from the op order: a tensor lives from the op that writes it (graph inputs: before the first op) to
the last op that reads it (graph outputs: after the last op). Tensors joined by a pure re-view op (RESHAPE, SQUEEZE,
EXPAND_DIMS) share one buffer whose lifetime is the union; so do the output of an element-wise op and a same-shape
input whose buffer is read for the last time by that op (the kernels compute element i from element i, so writing in
place is safe: :data:`IN_PLACE_OPS`). Buffers are placed largest first at the lowest offset
that does not overlap any already placed buffer alive at the same time (the greedy strategy of TFLite Micro's
GreedyMemoryPlanner), each aligned to :data:`ALIGN` bytes. :func:`check_plan` proves that no two buffers that are
alive together overlap in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ModelContractError
from .graph import Model
from .lower import ALIAS_OPS

#: ops whose output may overwrite a same-shape input that dies at the op (every kernel reads element i of that input
#: before writing element i of the output)
IN_PLACE_OPS = frozenset({"ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "RELU_N1_TO_1"})

#: alignment of every buffer in the arena (bytes)
ALIGN = 16


@dataclass(frozen=True, kw_only=True)
class Buffer:
    """One arena buffer: ``tensors`` share it, alive from op ``first`` to op ``last`` (inclusive)."""

    tensors: tuple[int, ...]
    size: int
    first: int
    last: int
    offset: int


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """``arena_bytes``: the arena size; ``offsets``: tensor index -> byte offset in the arena (activations only);
    ``scratch_offsets``: op index -> offset of the op's scratch memory; ``peak_live_bytes``: the largest sum of
    (aligned) buffer sizes alive at one op, a lower bound of the arena."""

    buffers: tuple[Buffer, ...]
    arena_bytes: int
    offsets: dict[int, int]
    peak_live_bytes: int
    scratch_offsets: dict[int, int] = field(default_factory=dict)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(model: Model, scratch: dict[int, int] | None = None, *, in_place: bool = True,
                fusions: dict[int, int] | None = None) -> MemoryPlan:
    """Plan the arena of ``model`` (constants stay in flash and are not planned).

    Args:
        scratch: op index -> bytes of scratch memory the op needs while it runs (alive at that op only).
        in_place: let element-wise ops write over an input that dies with them (:data:`IN_PLACE_OPS`).
        fusions: producer op -> consumer op fused by the generator: the producer writes the consumer's output, its own
            output tensor is never materialised (not planned), the consumer's output lives from the producer on.

    Raises:
        ModelContractError: an activation tensor is read before it is written.
    """
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    const = {t.index for t in model.tensors if t.is_const}
    for op in model.ops:
        if op.name in ALIAS_OPS and op.inputs[0] not in const:
            parent[root(op.outputs[0])] = root(op.inputs[0])
    n_ops = len(model.ops)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    elided = {model.ops[k].outputs[0] for k in (fusions or {})}
    for k, k2 in (fusions or {}).items():
        first[model.ops[k2].outputs[0]] = k
    for i in model.inputs:
        first[i] = 0
    for k, op in enumerate(model.ops):
        for i in op.outputs:
            if i >= 0 and i not in const and i not in elided:
                first.setdefault(i, k)
                last[i] = max(last.get(i, k), k)
        for i in op.inputs:
            if i < 0 or i in const or i in elided:
                continue
            if i not in first:
                raise ModelContractError(f"tensor {i} ({model.tensors[i].name}) is read by op {k} ({op.name}) "
                                         "before any op writes it")
            last[i] = max(last.get(i, k), k)
    for i in model.outputs:
        last[i] = n_ops - 1
        first.setdefault(i, 0)
    if in_place:
        group_last: dict[int, int] = {}
        for i in first:
            group_last[root(i)] = max(group_last.get(root(i), -1), last[i])
        outputs = set(model.outputs)
        for k, op in enumerate(model.ops):
            if op.name not in IN_PLACE_OPS or len(op.outputs) != 1:
                continue
            o = model.tensors[op.outputs[0]]
            if o.index in const or root(o.index) != o.index:
                continue
            for i in op.inputs:
                t = model.tensors[i] if i >= 0 else None
                if (t is None or i in const or t.shape != o.shape or t.dtype != o.dtype or i in outputs
                        or group_last.get(root(i)) != k or root(i) == root(o.index)):
                    continue
                r = root(i)
                parent[root(o.index)] = r
                group_last[r] = max(group_last[r], group_last.pop(o.index, last[o.index]))
                break
    groups: dict[int, list[int]] = {}
    for i in first:
        groups.setdefault(root(i), []).append(i)
    bufs = []
    for members in groups.values():
        size = max(model.tensors[i].nbytes for i in members)
        bufs.append({"tensors": tuple(sorted(members)), "size": _align(max(size, 1)),
                     "first": min(first[i] for i in members), "last": max(last[i] for i in members)})
    for k, nbytes in sorted((scratch or {}).items()):
        if nbytes > 0:  # scratch of op k: tensor id -(k + 1)
            bufs.append({"tensors": (-(k + 1),), "size": _align(nbytes), "first": k, "last": k})
    order = sorted(range(len(bufs)), key=lambda b: (-bufs[b]["size"], bufs[b]["first"], bufs[b]["tensors"]))
    placed: list[dict] = []
    for b in order:
        buf = bufs[b]
        clashes = sorted((p["offset"], p["offset"] + p["size"]) for p in placed
                         if p["first"] <= buf["last"] and buf["first"] <= p["last"])
        offset = 0
        for lo, hi in clashes:
            if offset + buf["size"] <= lo:
                break
            offset = max(offset, hi)
        buf["offset"] = offset
        placed.append(buf)
    arena = max((p["offset"] + p["size"] for p in placed), default=0)
    peak = max((sum(p["size"] for p in placed if p["first"] <= k <= p["last"]) for k in range(n_ops)), default=0)
    buffers = tuple(Buffer(**p) for p in sorted(placed, key=lambda p: (p["offset"], p["first"])))
    offsets = {i: p.offset for p in buffers for i in p.tensors if i >= 0}
    scratch_offsets = {-i - 1: p.offset for p in buffers for i in p.tensors if i < 0}
    plan = MemoryPlan(buffers=buffers, arena_bytes=arena, offsets=offsets, peak_live_bytes=peak,
                      scratch_offsets=scratch_offsets)
    check_plan(plan)
    return plan


def check_plan(plan: MemoryPlan) -> None:
    """Raise AssertionError if two buffers alive at the same op overlap in memory (or one leaves the arena)."""
    bs = plan.buffers
    for i, a in enumerate(bs):
        if a.offset % ALIGN or a.offset + a.size > plan.arena_bytes:
            raise AssertionError(f"buffer {a} is misaligned or outside the {plan.arena_bytes}-byte arena")
        for b in bs[i + 1:]:
            if a.first <= b.last and b.first <= a.last and not (a.offset + a.size <= b.offset
                                                                 or b.offset + b.size <= a.offset):
                raise AssertionError(f"buffers alive together overlap: {a} and {b}")
