"""Does training give the same weights with another thread count or another vector width?

Runs a few SGD steps of a preset (``edge`` by default, real training batches of random features) in fresh
processes for each combination of PyTorch CPU capability (the machine's best vs capped at AVX2, what
``edge-asc demo`` and ``edge-asc train --portable-math`` do) and thread count (1, 2), and compares the final weights
bit for bit. Also times the steps, so the cost of the cap is a ratio measured in one run.

    python benchmarks/reproducibility.py --json runs/bench/reproducibility.json [--preset edge] [--steps 20]

Goal: with the cap, the weights are bit-identical across thread counts. (Without it they differ on this AVX-512
machine; a machine whose best path is AVX2 runs the capped code natively.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _util import goals_text, parser, write_json

CHILD = r"""
import hashlib, json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
import torch.nn.functional as F
from edge_asc.model import build_model, model_preset
from edge_asc.train.augment import AugmentConfig
from edge_asc.train.loop import make_batch
from edge_asc.train.reproducible import cpu_math

cfg = model_preset(sys.argv[2])
steps = int(sys.argv[3])
torch.manual_seed(0)
model = build_model(cfg).train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
rng = np.random.default_rng(0)
store = [rng.standard_normal((cfg.in_channels, cfg.n_mels, cfg.n_frames + 8)).astype(np.float32) for _ in range(64)]
y = np.arange(len(store)) % cfg.n_classes
aug = AugmentConfig.for_window(cfg.n_mels, cfg.n_frames)
zero, one = np.zeros((1, cfg.in_channels, 1, 1), np.float32), np.ones((1, cfg.in_channels, 1, 1), np.float32)
t0 = time.perf_counter()
for _ in range(steps):
    idx = rng.choice(len(store), size=32, replace=False)
    x, t = make_batch(store, idx, y, cfg.n_classes, cfg.n_frames, zero, one, aug, rng)
    loss = -(torch.from_numpy(t) * F.log_softmax(model(torch.from_numpy(x)), 1)).sum(1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
seconds = time.perf_counter() - t0
h = hashlib.sha256()
for p in model.state_dict().values():
    h.update(p.detach().contiguous().numpy().tobytes())
print(json.dumps({"sha256": h.hexdigest(), "loss": float(loss), "seconds": seconds, **cpu_math()}))
"""


def _run(capped: bool, threads: int, preset: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    if capped:
        from edge_asc.train.reproducible import PORTABLE_MATH_ENV

        env.update(PORTABLE_MATH_ENV)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), preset, str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return {"capped": capped, "threads": threads, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="edge")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    rows = [_run(c, t, args.preset, args.steps) for c in (False, True) for t in (1, 2)]
    capped = [r for r in rows if r["capped"]]
    native = [r for r in rows if not r["capped"]]
    goals = {"capped_identical_across_threads": len({r["sha256"] for r in capped}) == 1}
    for r in rows:
        print(f"{'AVX2 cap' if r['capped'] else 'native  '} {r['cpu_capability']:>7s} {r['threads']} thread(s): "
              f"loss {r['loss']:.10f} weights {r['sha256'][:16]} {r['seconds']:.2f} s")
    native_ids = {r["sha256"] for r in native}
    cost = {t: next(r["seconds"] for r in capped if r["threads"] == t) /
            next(r["seconds"] for r in native if r["threads"] == t) for t in (1, 2)}
    print(f"native path: {len(native_ids)} distinct result(s) over thread counts; "
          f"capped/native step time: {', '.join(f'{t} thread(s) x{c:.2f}' for t, c in cost.items())}")
    print("goals: " + goals_text(goals))
    write_json(args.json, {"preset": args.preset, "steps": args.steps, "rows": rows,
                           "native_distinct_results": len(native_ids), "capped_over_native_time": cost,
                           "goals": goals})


if __name__ == "__main__":
    main()
