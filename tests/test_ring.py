"""RingBuffer: order, wrap-around, overflow keeps the newest audio and counts, SPSC threads lose nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_asc.frontend import RingBuffer


def test_fifo_order_across_wraparound():
    rb = RingBuffer(10)
    rb.write(np.arange(7, dtype=np.float32))
    np.testing.assert_array_equal(rb.read(5), np.arange(5))
    rb.write(np.arange(7, 13, dtype=np.float32))  # wraps
    assert len(rb) == 8
    np.testing.assert_array_equal(rb.read(), np.arange(5, 13))
    assert rb.overrun_samples == 0 and len(rb) == 0


def test_overflow_keeps_newest_and_counts_dropped_samples():
    rb = RingBuffer(8)
    rb.write(np.arange(6, dtype=np.float32))
    rb.write(np.arange(6, 11, dtype=np.float32))  # 11 samples into 8: the 3 oldest are dropped
    assert rb.overrun_samples == 3 and rb.overrun_events == 1
    np.testing.assert_array_equal(rb.read(), np.arange(3, 11))


def test_block_larger_than_capacity_keeps_its_tail():
    rb = RingBuffer(4)
    rb.write(np.array([100.0], np.float32))
    rb.write(np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(rb.read(), [6, 7, 8, 9])
    assert rb.overrun_samples == 7  # the unread sample + 6 samples of the block that never fit


def test_read_partial_and_clear():
    rb = RingBuffer(5)
    rb.write(np.ones((3, 1), np.float32))  # (n, 1) blocks as sounddevice delivers them
    assert rb.read(10).shape == (3,)
    rb.write(np.ones(2, np.float32))
    rb.clear()
    assert len(rb) == 0 and rb.read().shape == (0,)


def test_rejects_zero_capacity():
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_producer_consumer_threads_preserve_the_sequence():
    rb = RingBuffer(4096)
    total = 200_000
    got = []

    def producer():
        for start in range(0, total, 256):
            while rb.capacity - len(rb) < 256:  # a well-behaved producer for this test: never overrun
                pass
            rb.write(np.arange(start, min(start + 256, total), dtype=np.float32))

    t = threading.Thread(target=producer)
    t.start()
    n = 0
    while n < total:
        chunk = rb.read(1000)
        n += chunk.shape[0]
        got.append(chunk)
    t.join()
    np.testing.assert_array_equal(np.concatenate(got), np.arange(total, dtype=np.float32))
    assert rb.overrun_samples == 0
