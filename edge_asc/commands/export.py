"""``edge-asc export CHECKPOINT --int8 [--calib DIR] --data DIR --out model.tflite``: convert and verify.

PyTorch -> ONNX (dynamo) -> onnx2tf -> TFLite with the ModelCard embedded; then the float model and the exported
model are compared on the dataset's held-out split, the export gate (:mod:`edge_asc.export.gate`) is applied and
``<out stem>.export.json`` is written beside the model. Exit 1 when a gate clause fails (``--max-accuracy-drop``,
``--min-agreement`` / ``--max-grid-gap``, ``--min-confident-agreement``, ``--min-event-agreement``): the model and its
report are kept, and the printed line (or ``--json``) names the failed clauses with their numbers.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run directory written by 'edge-asc train' (or its checkpoint.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--int8", dest="mode", action="store_const", const="int8",
                      help="full integer: int8 input/output/activations, per-channel int8 weights (default)")
    mode.add_argument("--float", dest="mode", action="store_const", const="float", help="float32 TFLite")
    mode.add_argument("--dynamic-range", dest="mode", action="store_const", const="dynamic-range",
                      help="int8 weights, float activations")
    mode.add_argument("--edgetpu", dest="mode", action="store_const", const="edgetpu",
                      help="full int8 for the Coral Edge TPU: lists unmapped ops, runs edgetpu_compiler if on PATH")
    p.set_defaults(mode="int8")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the .tflite to write (report: FILE stem + .export.json)")
    p.add_argument("--data", metavar="DIR",
                   help="dataset for verification (held-out split) and, without --calib, calibration "
                        "(default: the dataset recorded in the --calib manifest)")
    p.add_argument("--calib", metavar="DIR", help="calibration set written by 'edge-asc calibrate'")
    p.add_argument("--calib-size", type=int, default=300, metavar="N",
                   help="windows drawn when no --calib is given (default 300)")
    p.add_argument("--calib-seed", type=int, default=0, metavar="S", help="seed for those windows (default 0)")
    p.add_argument("--verify-split", default="evaluate", help="held-out split to verify on (default: evaluate)")
    p.add_argument("--verify-clips", type=int, default=None, metavar="N",
                   help="verify on at most N held-out clips (default: all)")
    p.add_argument("--keep-workdir", metavar="DIR", help="keep the ONNX file and onnx2tf outputs/log in DIR")
    p.add_argument("--json", action="store_true", help="print the export report as JSON (also when the gate fails)")
    _add_gate_arguments(p)


def _add_gate_arguments(p: argparse.ArgumentParser) -> None:
    from ..export.gate import (
        MAX_ACCURACY_DROP_POINTS,
        MAX_GRID_GAP,
        MIN_AGREEMENT,
        MIN_CONFIDENT_AGREEMENT,
        MIN_EVENT_SET_AGREEMENT,
    )
    from ..export.verify import CONFIDENT_MARGIN

    g = p.add_argument_group("export gate", "what the exported model may lose against the float model on the "
                             "held-out split; a failing clause exits 1 (model and report kept)")
    g.add_argument("--max-accuracy-drop", type=float, default=MAX_ACCURACY_DROP_POINTS, metavar="POINTS",
                   help="most clip-level macro accuracy the export may lose, in percentage points "
                        f"(default {MAX_ACCURACY_DROP_POINTS:g})")
    g.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="F",
                   help="window top-1 agreement asked for, in [0, 1]; the export needs min(F, output-grid ceiling - "
                        f"--max-grid-gap) (default {MIN_AGREEMENT:g}; 0 switches the clause off)")
    g.add_argument("--max-grid-gap", type=float, default=MAX_GRID_GAP, metavar="F",
                   help="how far agreement may stay below what the int8 output grid alone allows "
                        f"(default {MAX_GRID_GAP:g})")
    g.add_argument("--min-confident-agreement", type=float, default=MIN_CONFIDENT_AGREEMENT, metavar="F",
                   help=f"top-1 agreement on windows whose float top-2 logit margin is >= {CONFIDENT_MARGIN} "
                        f"(default {MIN_CONFIDENT_AGREEMENT:g})")
    g.add_argument("--min-event-agreement", type=float, default=MIN_EVENT_SET_AGREEMENT, metavar="F",
                   help=f"event block top-k set agreement (default {MIN_EVENT_SET_AGREEMENT:g})")
    g.add_argument("--no-gate", dest="gate", action="store_false",
                   help="report the gate's clauses but do not fail the export on them")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..errors import DatasetError, ExportGateError, UsageError

    for flag in ("min_agreement", "max_grid_gap", "min_confident_agreement", "min_event_agreement"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            raise UsageError(f"--{flag.replace('_', '-')} must be in [0, 1], got {getattr(args, flag)}")
    if not 0.0 <= args.max_accuracy_drop <= 100.0:
        raise UsageError(f"--max-accuracy-drop must be in [0, 100] points, got {args.max_accuracy_drop}")
    if args.calib_size < 1:
        raise UsageError(f"--calib-size must be >= 1, got {args.calib_size}")
    if args.verify_clips is not None and args.verify_clips < 1:
        raise UsageError(f"--verify-clips must be >= 1, got {args.verify_clips}")
    from ..export import ExportConfig, export_checkpoint

    config = ExportConfig(mode=args.mode, calib_size=args.calib_size, calib_seed=args.calib_seed,
                          verify_split=args.verify_split, verify_max_clips=args.verify_clips,
                          keep_workdir=args.keep_workdir, gate=args.gate,
                          max_accuracy_drop=args.max_accuracy_drop, min_agreement=args.min_agreement,
                          max_grid_gap=args.max_grid_gap, min_confident_agreement=args.min_confident_agreement,
                          min_event_set_agreement=args.min_event_agreement)
    calibration = None
    data_dir = args.data
    if args.calib:
        from ..calibration import load_calibration

        calibration = load_calibration(args.calib)  # spec/window checked against the checkpoint in export
        if data_dir is None:
            data_dir = calibration.manifest.dataset_root or None
    if data_dir is None:
        raise DatasetError("export needs --data DIR (the dataset to verify on; a --calib manifest records one too)")
    from ..data import load_dataset

    dataset = load_dataset(Path(data_dir))
    quiet = args.json
    try:
        result = export_checkpoint(args.checkpoint, args.out, config=config, dataset=dataset,
                                   calibration=calibration,
                                   log=None if quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    except ExportGateError as exc:
        if exc.result is not None:
            _print_result(exc.result, args)
        raise  # the CLI prints the failed clauses as the error line and exits 1
    _print_result(result, args)
    return 0


def _print_result(result, args: argparse.Namespace) -> None:
    import json

    if args.json:
        print(json.dumps(result.report.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"{result.model_path}: {result.report.size_bytes} bytes, {args.mode}; "
              f"{result.verification.summary()}; {result.gate.summary()}; report {result.report_path}")
