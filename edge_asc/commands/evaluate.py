"""``edge-asc evaluate MODEL --data DIR [--split evaluate] [--hop S] [--json F] [--png F]``: DCASE-style scores.

MODEL is a training run (its directory or ``checkpoint.json``: the float PyTorch model) or an exported ``.tflite``
(run through the device runtime, the path ``edge-asc classify`` takes: same windows, same clip labels).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="run directory written by 'edge-asc train' (or its checkpoint.json), or a .tflite exported "
                        "by 'edge-asc export'")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (TAU 2020/2022 Mobile layout)")
    p.add_argument("--split", default="evaluate", choices=("train", "evaluate", "test"),
                   help="which split to score (default: evaluate)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--png", metavar="FILE", help="write the confusion matrix as PNG")
    hop = p.add_mutually_exclusive_group()
    hop.add_argument("--hop", type=float, metavar="S",
                     help="seconds between window starts, as 'edge-asc classify --hop' (default: half the window)")
    hop.add_argument("--hop-frames", type=int, metavar="N", help="the same in front-end frames")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache folder of a run (default: beside the run directory)")
    p.add_argument("--threads", type=int, help="CPU threads (torch for a run, the interpreter for a .tflite)")


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..artifact import is_tflite
    from ..errors import UsageError, require

    if args.hop is not None and not args.hop > 0:
        raise UsageError(f"--hop must be > 0 seconds, got {args.hop}")
    if args.hop_frames is not None and args.hop_frames < 1:
        raise UsageError(f"--hop-frames must be >= 1, got {args.hop_frames}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    from ..data import load_dataset

    if args.model.lower().endswith(".tflite") or is_tflite(args.model):
        from ..train.evaluate import evaluate_tflite

        report = evaluate_tflite(args.model, load_dataset(args.data), split=args.split, hop_seconds=args.hop,
                                 hop=args.hop_frames, threads=args.threads or 1)
    else:
        require("torch", "train", "evaluating checkpoints")
        import torch

        from ..train.evaluate import evaluate_checkpoint

        if args.threads:
            torch.set_num_threads(args.threads)
        report = evaluate_checkpoint(args.model, load_dataset(args.data), split=args.split, hop_seconds=args.hop,
                                     hop=args.hop_frames, cache_dir=args.cache_dir)
    print(report.render_text())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"\njson: {args.json}")
    if args.png:
        from ..train.evaluate import plot_confusion

        plot_confusion(report, args.png)
        print(f"confusion matrix: {args.png}")
    return 0
