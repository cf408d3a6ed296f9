"""Training throughput: clips/s of the ``edge`` preset (full recipe: crop, shift, SpecAugment, mixup, SGD step,
batch 64) and the seconds of one training step of the ``paper`` preset, on this machine's CPU.

Features are random (the cache makes feature computation a one-off; this measures the per-epoch cost). Goal for the
2-core dev machine: ``edge`` >= 150 training clips/s, so that ``make demo`` trains 1,000+ clips per epoch in seconds.

    python benchmarks/train_speed.py --json runs/bench/train_speed.json [--threads 2] [--paper-batch 4]
"""

from __future__ import annotations

import time

import numpy as np
from _util import parser, write_json

GOAL_EDGE_CLIPS_PER_S = 150.0


def _step_fn(preset: str, batch: int, frames_extra: int):
    import torch
    import torch.nn.functional as F

    from edge_asc.model import build_model, count_macs, count_params, model_preset
    from edge_asc.train.augment import AugmentConfig
    from edge_asc.train.loop import make_batch

    cfg = model_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    store = [rng.standard_normal((cfg.in_channels, cfg.n_mels, cfg.n_frames + frames_extra)).astype(np.float32)
             for _ in range(max(batch, 8))]
    y = np.arange(len(store)) % cfg.n_classes
    aug = AugmentConfig.for_window(cfg.n_mels, cfg.n_frames)
    zero, one = np.zeros((1, cfg.in_channels, 1, 1), np.float32), np.ones((1, cfg.in_channels, 1, 1), np.float32)

    def step() -> None:
        idx = rng.choice(len(store), size=batch, replace=False)
        x, t = make_batch(store, idx, y, cfg.n_classes, cfg.n_frames, zero, one, aug, rng)
        logits = model(torch.from_numpy(x))
        loss = -(torch.from_numpy(t) * F.log_softmax(logits, 1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, model, cfg, count_params(cfg), count_macs(cfg)


def bench_edge(steps: int = 12) -> dict:
    import torch

    step, model, cfg, params, macs = _step_fn("edge", 64, 0)
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    model.eval()
    x = torch.randn(256, cfg.in_channels, cfg.n_mels, cfg.n_frames)
    with torch.no_grad():
        model(x)
        t1 = time.perf_counter()
        for _ in range(3):
            model(x)
        inf = 3 * 256 / (time.perf_counter() - t1)
    return {"preset": "edge", "batch": 64, "steps": steps, "train_clips_per_s": steps * 64 / dt,
            "seconds_per_step": dt / steps, "inference_windows_per_s": inf, "params": params, "macs": macs,
            "goal_train_clips_per_s": GOAL_EDGE_CLIPS_PER_S,
            "meets_goal": bool(steps * 64 / dt >= GOAL_EDGE_CLIPS_PER_S)}


def bench_paper(batch: int) -> dict:
    step, _, _, params, macs = _step_fn("paper", batch, 21)
    t0 = time.perf_counter()
    step()  # one step, cold (the paper model is too big to time many steps here)
    dt = time.perf_counter() - t0
    return {"preset": "paper", "batch": batch, "seconds_per_step": dt, "train_clips_per_s": batch / dt,
            "params": params, "macs": macs,
            "estimated_seconds_per_epoch_tau2020_train": 13_962 * dt / batch}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--paper-batch", type=int, default=4, help="batch of the single paper-preset step (default 4)")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    edge = bench_edge()
    paper = bench_paper(args.paper_batch)
    res = {"edge": edge, "paper": paper, "torch_threads": torch.get_num_threads()}
    write_json(args.json, res)
    print(f"train_speed: edge {edge['train_clips_per_s']:.0f} clips/s training (goal >= {GOAL_EDGE_CLIPS_PER_S:.0f}: "
          f"{'met' if edge['meets_goal'] else 'MISSED'}), {edge['inference_windows_per_s']:.0f} windows/s inference; "
          f"paper {paper['seconds_per_step']:.1f} s per step of {paper['batch']} "
          f"({paper['train_clips_per_s']:.2f} clips/s); {res['torch_threads']} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
