"""``edge-asc evaluate CHECKPOINT --data DIR [--split evaluate] [--json F] [--png F]``: DCASE-style scores."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run directory written by 'edge-asc train' (or its checkpoint.json)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (TAU 2020/2022 Mobile layout)")
    p.add_argument("--split", default="evaluate", choices=("train", "evaluate", "test"),
                   help="which split to score (default: evaluate)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--png", metavar="FILE", help="write the confusion matrix as PNG")
    p.add_argument("--hop-frames", type=int, help="frames between windows of a clip (default: the window length)")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: beside the run directory)")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..errors import UsageError, require

    if args.hop_frames is not None and args.hop_frames < 1:
        raise UsageError(f"--hop-frames must be >= 1, got {args.hop_frames}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    require("torch", "train", "evaluating checkpoints")
    import torch

    from ..data import load_dataset
    from ..train.evaluate import evaluate_checkpoint, plot_confusion

    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate_checkpoint(args.checkpoint, load_dataset(args.data), split=args.split,
                                 hop_frames=args.hop_frames, cache_dir=args.cache_dir)
    print(report.render_text())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"\njson: {args.json}")
    if args.png:
        plot_confusion(report, args.png)
        print(f"confusion matrix: {args.png}")
    return 0
