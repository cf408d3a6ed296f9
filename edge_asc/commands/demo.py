"""``edge-asc demo``: the whole product on this machine (finished in the demo issue).

For now it runs the streaming front end on a generated tone and prints frames per second.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="where artifacts go (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="a short version (used by the test suite)")


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..frontend import StreamingFrontend
    from ..spec import PRESETS

    seconds = 10.0
    for name, spec in PRESETS.items():
        t = np.arange(int(seconds * spec.sample_rate)) / spec.sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        fe = StreamingFrontend(spec)
        t0 = time.process_time()
        n = sum(fe.push(tone[i : i + 1024]).shape[-1] for i in range(0, tone.size, 1024))
        cpu = time.process_time() - t0
        print(f"front end '{name}': {n} frames from {seconds:.0f} s of a 440 Hz tone in {cpu * 1e3:.1f} ms CPU "
              f"({n / max(cpu, 1e-9):,.0f} frames/s, real-time factor {cpu / seconds:.5f})")
    return 0
