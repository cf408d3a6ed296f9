"""``edge-asc report MODEL [--target T ...] [--json F] [--md F] [--png F] [--require BUDGET ...]``.

Size, MACs, memory and latency of a ``.tflite`` against the DCASE budgets and deployment targets
(:mod:`edge_asc.firmware_bench`). Exit code 3 when a ``--require``d budget is not met (after writing every output).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help=".tflite file (an edge-asc export carries its window and front end)")
    p.add_argument("--target", action="append", metavar="T",
                   help="target key from targets.toml (repeatable; default: all): rpi4 rpi5 coral nrf52840 stm32h7 "
                        "m55-u55")
    p.add_argument("--targets-file", metavar="F", help="extra targets TOML (same schema as the packaged targets.toml)")
    p.add_argument("--hop", type=float, metavar="S", help="seconds between inferences (default: half a window)")
    p.add_argument("--window-seconds", type=float, metavar="S",
                   help="audio per inference, for a model without an edge-asc model card (default 1)")
    p.add_argument("--json", metavar="F", help="write the report as JSON ('-' for stdout instead of the table)")
    p.add_argument("--md", metavar="F", help="write the report as Markdown")
    p.add_argument("--png", metavar="F", help="write per-layer params/MACs bars with the budget lines")
    p.add_argument("--require", action="append", metavar="B",
                   help="fail with exit code 3 unless met: dcase2021, dcase2022, dcase, dcase2022-params, "
                        "dcase2022-macs, dcase2021-params or target:KEY (repeatable)")
    p.add_argument("--firmware", action="append", metavar="DIR",
                   help="an 'edge-asc firmware --run' project folder of this model (repeatable): its target then "
                        "reports the firmware's measured flash, RAM and instructions")
    p.add_argument("--no-tflm", action="store_true", help="skip the TFLite Micro arena measurement")
    p.add_argument("--no-vela", action="store_true", help="skip Vela (Ethos-U targets fall back to an estimate)")
    p.add_argument("--no-measure", action="store_true", help="skip timing the model on this host")
    p.add_argument("--threads", type=int, metavar="N", help="host timing with 1 and N threads (default: all CPUs)")
    p.add_argument("--no-layers", action="store_true", help="leave the per-layer table out of the terminal output")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.hop is not None and not args.hop > 0:
        raise UsageError(f"--hop must be > 0 seconds, got {args.hop}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    from ..firmware_bench.render import to_markdown, to_text, write_png, write_text_file
    from ..firmware_bench.report import build_report

    threads = tuple(sorted({1, args.threads})) if args.threads else None
    report = build_report(args.model, hop_seconds=args.hop, window_seconds=args.window_seconds,
                          target_keys=args.target, targets_file=args.targets_file, run_tflm=not args.no_tflm,
                          run_vela=not args.no_vela, measure=not args.no_measure, threads=threads,
                          firmware=tuple(args.firmware or ()))
    report.check(args.require or [])  # unknown names fail now (exit 2 would hide the outputs' value otherwise)
    if args.json == "-":
        print(report.to_json())
    else:
        print(to_text(report, layers=not args.no_layers), end="")
        if args.json:
            write_text_file(report.to_json() + "\n", args.json)
    if args.md:
        write_text_file(to_markdown(report), args.md)
    if args.png:
        write_png(report, args.png)
    report.require(args.require or [])
    return 0
