"""``edge-asc export CHECKPOINT --int8 [--calib DIR] --data DIR --out model.tflite``: convert and verify.

PyTorch -> ONNX (dynamo) -> onnx2tf -> TFLite with the ModelCard embedded; then the float model and the exported
model are compared on the dataset's held-out split and ``<out stem>.export.json`` is written beside the model.
Exit 1 (with the report kept) when top-1 agreement is below ``--min-agreement``.
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
    p.add_argument("--out", required=True, metavar="FILE", help="the .tflite to write (report: FILE stem + .export.json)")
    p.add_argument("--data", metavar="DIR",
                   help="dataset for verification (held-out split) and, without --calib, calibration "
                        "(default: the dataset recorded in the --calib manifest)")
    p.add_argument("--calib", metavar="DIR", help="calibration set written by 'edge-asc calibrate'")
    p.add_argument("--calib-size", type=int, default=300, metavar="N",
                   help="windows drawn when no --calib is given (default 300)")
    p.add_argument("--calib-seed", type=int, default=0, metavar="S", help="seed for those windows (default 0)")
    p.add_argument("--min-agreement", type=float, default=0.97, metavar="F",
                   help="minimum float-vs-exported top-1 agreement in [0, 1] (default 0.97)")
    p.add_argument("--verify-split", default="evaluate", help="held-out split to verify on (default: evaluate)")
    p.add_argument("--verify-clips", type=int, default=None, metavar="N",
                   help="verify on at most N held-out clips (default: all)")
    p.add_argument("--keep-workdir", metavar="DIR", help="keep the ONNX file and onnx2tf outputs/log in DIR")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from ..errors import DatasetError, UsageError

    if not 0.0 <= args.min_agreement <= 1.0:
        raise UsageError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    if args.calib_size < 1:
        raise UsageError(f"--calib-size must be >= 1, got {args.calib_size}")
    if args.verify_clips is not None and args.verify_clips < 1:
        raise UsageError(f"--verify-clips must be >= 1, got {args.verify_clips}")
    from ..export import ExportConfig, export_checkpoint

    config = ExportConfig(mode=args.mode, min_agreement=args.min_agreement, calib_size=args.calib_size,
                          calib_seed=args.calib_seed, verify_split=args.verify_split,
                          verify_max_clips=args.verify_clips, keep_workdir=args.keep_workdir)
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
    result = export_checkpoint(args.checkpoint, args.out, config=config, dataset=dataset, calibration=calibration,
                               log=None if quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    if args.json:
        print(json.dumps(result.report.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"{result.model_path}: {result.report.size_bytes} bytes, {args.mode}; "
              f"{result.verification.summary()}; report {result.report_path}")
    return 0
