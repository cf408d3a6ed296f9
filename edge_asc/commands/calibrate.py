"""``edge-asc calibrate CHECKPOINT --data DIR --out DIR [--size N] [--seed S] [--strategy stratified|random]``.

Draws the int8 representative dataset from real training clips through the checkpoint's front end and stores it
(``calib.npy`` NHWC + ``manifest.json``) for ``edge-asc export --int8 --calib DIR``.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run directory written by 'edge-asc train' (or its checkpoint.json)")
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset the model was trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write calib.npy + manifest.json into")
    p.add_argument("--size", type=int, default=300, metavar="N", help="number of windows (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of clip order and window offsets (default 0)")
    p.add_argument("--strategy", choices=("stratified", "random"), default="stratified",
                   help="stratified by class x device (default) or uniformly random clips")
    p.add_argument("--split", default="train", help="dataset split to draw from (default: train)")
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON")


def run(args: argparse.Namespace) -> int:
    import collections
    import json

    from ..calibration import build_calibration, save_calibration
    from ..errors import UsageError
    from ..train.checkpoint import read_meta

    if args.size < 1:
        raise UsageError(f"--size must be >= 1 window, got {args.size}")
    meta = read_meta(args.checkpoint)
    from ..data import load_dataset

    ds = load_dataset(args.data)
    cs = build_calibration(ds, meta.frontend, meta.window_frames, size=args.size, seed=args.seed,
                           strategy=args.strategy, split=args.split, labels=meta.labels)
    out = save_calibration(cs, args.out)
    m = cs.manifest
    groups = collections.Counter((e.label, e.device) for e in m.entries)
    summary = {"out": str(out), "windows": len(cs), "shape": list(m.shape), "layout": m.layout,
               "clips": len({e.clip_id for e in m.entries}), "groups": len(groups),
               "min_per_group": min(groups.values()), "max_per_group": max(groups.values()),
               "strategy": m.strategy, "seed": m.seed, "manifest_sha256": m.sha256,
               "feature_hash": m.frontend.feature_hash()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"calibration set: {summary['windows']} windows {summary['shape']} (NHWC, dB) from "
              f"{summary['clips']} clips in {summary['groups']} class x device groups "
              f"({summary['min_per_group']}-{summary['max_per_group']} each), {m.strategy}, seed {m.seed}")
        print(f"written to {out} (manifest sha256 {m.sha256[:16]})")
    return 0
