"""Memory-aware operator order (edge_asc.export.schedule): same ops, topological, lower activation peak."""

from __future__ import annotations

import pytest
from conftest import require

from edge_asc.export.schedule import order_ops


def _valid(order, op_io) -> bool:
    produced_at = {i: pos for pos, k in enumerate(order) for i in op_io[k][1]}
    return all(produced_at.get(i, -1) < pos for pos, k in enumerate(order) for i in op_io[k][0])


def test_an_upsampling_done_before_the_skip_tensor_dies_is_moved_after_it():
    # tensors: 0 input (10 B), 1 skip (100), 2 small (1), 3 values (1), 4 up(values) (100), 5 up(max) (100),
    # 6 mask (100), 7 out (100), 8 logits (1). Converter order: values are upsampled while the skip is still live.
    op_io = [((0,), (1,)),        # 0: skip = conv(input)
             ((1,), (2,)),        # 1: pooled maximum
             ((2,), (3,)),        # 2: decoder values (low resolution)
             ((3,), (4,)),        # 3: upsample values
             ((2,), (5,)),        # 4: upsample maximum
             ((1, 5), (6,)),      # 5: mask = f(skip, up(max)): the skip's last use
             ((4, 6), (7,)),      # 6: out = up(values) * mask
             ((7,), (8,))]        # 7: head
    sizes = {0: 10, 1: 100, 2: 1, 3: 1, 4: 100, 5: 100, 6: 100, 7: 100, 8: 1}
    s = order_ops(op_io, sizes, graph_inputs=(0,), graph_outputs=(8,))
    assert s.original_peak_bytes == 400  # at op 5: skip, up(values), up(max), mask
    assert s.peak_bytes == 301 and s.moved > 0  # skip, up(max), mask + one 1-byte low-resolution tensor
    assert sorted(s.order) == list(range(len(op_io))) and _valid(s.order, op_io)
    assert s.order.index(3) > s.order.index(5)  # values upsampled after the mask consumed the skip


def test_an_order_that_cannot_improve_is_kept():
    op_io = [((0,), (1,)), ((1,), (2,)), ((2,), (3,))]
    s = order_ops(op_io, {0: 5, 1: 5, 2: 5, 3: 5}, graph_inputs=(0,), graph_outputs=(3,))
    assert s.order == (0, 1, 2) and s.moved == 0 and s.peak_bytes == s.original_peak_bytes


@pytest.mark.parametrize("seed", range(5))
def test_random_graphs_stay_topological_and_never_get_worse(seed):
    import random

    rng = random.Random(seed)
    op_io, sizes = [], {0: rng.randint(1, 50)}
    for _ in range(30):
        avail = list(sizes)
        ins = tuple(rng.sample(avail, k=min(len(avail), rng.randint(1, 2))))
        out = len(sizes)
        sizes[out] = rng.randint(1, 100)
        op_io.append((ins, (out,)))
    s = order_ops(op_io, sizes, graph_inputs=(0,), graph_outputs=(len(sizes) - 1,))
    assert sorted(s.order) == list(range(30)) and _valid(s.order, op_io)
    assert s.peak_bytes <= s.original_peak_bytes


def test_greedy_planner_places_largest_first_at_the_lowest_free_offset():
    from edge_asc.export.schedule import greedy_arena_bytes

    # a (96 B, ops 0-1) and b (96 B, ops 2-3) never overlap: both at offset 0; c (48 B, ops 1-2) overlaps both
    assert greedy_arena_bytes([96, 96, 48], [0, 2, 1], [1, 3, 2]) == 144
    # sizes are rounded up to 16-byte blocks, as TFLite Micro does
    assert greedy_arena_bytes([1, 1], [0, 0], [0, 0]) == 32
    # a gap the largest-first order cannot fill: the planner needs more than the peak of live bytes (160)
    sizes, first, last = [64, 64, 32, 96], [0, 2, 1, 3], [1, 3, 2, 3]
    live_peak = max(sum(s for s, f, la in zip(sizes, first, last) if f <= k <= la) for k in range(4))
    assert greedy_arena_bytes(sizes, first, last) >= live_peak


def test_reorder_sizes_tensors_by_their_dtype():
    # the hand-built graph holds int8, int16, int32 and float32 activations: the schedule's peak in the file's order
    # is the report's activation peak (1,808 B), not one byte per element
    require("ai_edge_litert")
    import firmware_models as fm

    from edge_asc.export.schedule import reorder_for_memory
    from edge_asc.firmware_bench.graph import read_graph

    model = fm.hand_model()
    _, s = reorder_for_memory(model)
    assert s.original_peak_bytes == read_graph(model).peak_activation_bytes == max(fm.HAND_LIVE)
