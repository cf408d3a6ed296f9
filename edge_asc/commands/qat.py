"""``edge-asc qat RUN --data DIR [--out DIR] [--epochs N] [--lr F]``: quantisation-aware fine-tuning.

Fine-tunes a trained run through a simulation of its full-int8 TFLite graph (:mod:`edge_asc.train.qat`) and writes
the result as a new run directory (default ``RUN-qat`` beside RUN; RUN itself is not modified). Export it as any
run: ``edge-asc export RUN-qat --data DIR --out model.tflite`` (the converter re-calibrates the fine-tuned float
weights; nothing else changes). Its ``checkpoint.json`` records ``qat`` (base run, settings, float and simulated
int8 metrics before and after).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run directory written by 'edge-asc train' (or its checkpoint.json)")
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset the run was trained on")
    p.add_argument("--out", metavar="DIR", help="the new run directory (default: RUN-qat beside RUN)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default: 3)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine to 0 (default: 1e-3)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="default: adam")
    p.add_argument("--batch-size", type=int, help="clips per batch (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed for batches, augmentation and dropout (default: 0)")
    p.add_argument("--ranges", choices=("calibration", "ema"), default="calibration",
                   help="activation ranges: re-calibrated before every epoch as the export will (default), or a "
                        "moving average of the training batches")
    p.add_argument("--margin-weight", type=float, default=1.0, metavar="W",
                   help="weight of the hinge on top-2 logit gaps below 0.2 (the windows whose int8 answer can "
                        "differ from the float one; 0: cross-entropy on the int8 simulation only; default: 1)")
    p.add_argument("--calib", metavar="DIR",
                   help="calibration set written by 'edge-asc calibrate' (default: 300 training windows, seed 0, "
                        "as 'edge-asc export' draws them)")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: <out>/../feature-cache)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the new checkpoint's metadata as JSON")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..errors import UsageError, require

    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.lr < 1:
        raise UsageError(f"--lr must be in (0, 1), got {args.lr}")
    if args.batch_size is not None and args.batch_size < 2:
        raise UsageError(f"--batch-size must be >= 2, got {args.batch_size}")
    if args.margin_weight < 0:
        raise UsageError(f"--margin-weight must be >= 0, got {args.margin_weight}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    from ..train.checkpoint import read_meta, resolve_run_dir

    read_meta(args.checkpoint)  # a missing / corrupt run fails before torch is imported
    base = resolve_run_dir(args.checkpoint)
    out = Path(args.out) if args.out else base.with_name(f"{base.name}-qat")
    require("torch", "train", "quantisation-aware fine-tuning")
    import torch

    from ..data import load_dataset
    from ..train.qat import QatConfig, qat_finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    calibration = None
    if args.calib:
        from ..calibration import load_calibration

        calibration = load_calibration(args.calib)
    config = QatConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size,
                       seed=args.seed, ranges=args.ranges, margin_weight=args.margin_weight)
    result = qat_finetune(base, load_dataset(args.data), out, config, calibration=calibration,
                          cache_dir=args.cache_dir if args.cache_dir else base.parent / "feature-cache")
    if args.json:
        print(json.dumps(result.meta.to_dict(), indent=2, sort_keys=True))
        return 0
    a = result.meta.qat.get("after") or {}
    b = result.meta.qat.get("before") or {}
    line = f"checkpoint: {result.run_dir} (QAT {args.epochs} epochs from {base})"
    if a and b:
        line += (f"; simulated int8 agreement {b['sim_top1_agreement']:.3f} -> {a['sim_top1_agreement']:.3f}, "
                 f"float macro-acc {b['float_macro_acc']:.3f} -> {a['float_macro_acc']:.3f}")
    print(line, file=sys.stdout)
    return 0
