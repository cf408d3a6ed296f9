"""``edge-asc data synth|check``: make a synthetic TAU-layout dataset, or validate a dataset folder."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    s = sub.add_parser("synth", help="write a synthetic dataset in the TAU 2020 Mobile development layout",
                       description="Write a deterministic synthetic dataset (10 TAU scenes, 9 simulated devices) in "
                                   "the TAU Urban Acoustic Scenes 2020 Mobile development layout.")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or an earlier synth)")
    s.add_argument("--clips-per-class", type=int, default=100, metavar="N", help="clips per scene, >= 15 (default 100)")
    s.add_argument("--seconds", type=float, default=1.0, metavar="S", help="clip length in s, 0.1-60 (default 1.0)")
    s.add_argument("--sample-rate", type=int, default=16_000, metavar="SR",
                   help="Hz, 8000-48000 (default 16000)")
    s.add_argument("--seed", type=int, default=0, metavar="K", help="dataset seed (default 0)")
    c = sub.add_parser("check", help="validate a dataset folder and print a class x device count table",
                       description="Validate a TAU 2020/2022 Mobile or folder-per-class dataset and print its "
                                   "class x device counts.")
    c.add_argument("root", metavar="ROOT", help="dataset folder")
    c.add_argument("--split", choices=("train", "evaluate", "test"), help="count only this split")
    c.add_argument("--deep", action="store_true", help="decode every file's samples, not only its header")
    c.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "check":
        from ..data.check import check_dataset

        report = check_dataset(args.root, deep=args.deep)
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(report.render(args.split))
        return 0
    raise UsageError("edge-asc data needs an action: synth or check (see 'edge-asc data --help')")


def _synth(args: argparse.Namespace) -> int:
    import time

    from ..data.synth import min_clips_per_class, synthesize
    from ..errors import UsageError

    n_min = min_clips_per_class()
    if args.clips_per_class < n_min:
        raise UsageError(f"--clips-per-class must be >= {n_min} (every device in both splits), "
                         f"got {args.clips_per_class}")
    if not 0.1 <= args.seconds <= 60:
        raise UsageError(f"--seconds must be in [0.1, 60], got {args.seconds}")
    if not 8000 <= args.sample_rate <= 48_000:
        raise UsageError(f"--sample-rate must be in [8000, 48000] Hz, got {args.sample_rate}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    t0 = time.perf_counter()
    out = synthesize(args.out, clips_per_class=args.clips_per_class, seconds=args.seconds,
                     sample_rate=args.sample_rate, seed=args.seed)
    n = args.clips_per_class * 10
    print(f"wrote {n} clips ({args.seconds:g} s, {args.sample_rate} Hz, seed {args.seed}) to {out} in "
          f"{time.perf_counter() - t0:.1f} s; check it with: edge-asc data check {out}", file=sys.stdout)
    return 0
