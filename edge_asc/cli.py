"""Thin command-line front: ``edge-asc <command> ...``.

Each command lives in ``edge_asc.commands.<module>`` and provides ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import only the standard library at module level (heavy imports happen inside ``run``), so
``edge-asc --help`` and the device commands stay light. Anticipated errors (:class:`EdgeAscError`) become one line on
stderr and the error's exit code (2 usage, 1 failure, 3 budget not met); no traceback reaches the user for them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import EdgeAscError

#: name -> (module in edge_asc.commands, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the whole pipeline on synthetic data: train, export int8, verify, report, classify"),
    "features": ("features", "log-mel features of an audio file, or fill a dataset's feature cache (--data)"),
    "data": ("data", "synthesise, check and summarise datasets (TAU 2020/2022 Mobile layout)"),
    "train": ("train", "train a Mini-SegNet model (the paper's recipe)"),
    "qat": ("qat", "quantisation-aware fine-tuning of a trained run for the full-int8 export"),
    "evaluate": ("evaluate", "score a checkpoint or a .tflite: macro accuracy, log loss, per-device table, confusion"),
    "calibrate": ("calibrate", "build the representative dataset for int8 calibration from training clips"),
    "export": ("export", "convert a checkpoint to TFLite (float, dynamic range or full int8) and verify it"),
    "info": ("info", "print the model card embedded in a .tflite file"),
    "classify": ("classify", "classify audio files through the streaming runtime path"),
    "listen": ("listen", "classify live microphone audio on the device"),
    "service": ("service", "run 'listen' as a systemd service: install, status, uninstall"),
    "report": ("report", "size, MACs, memory and latency of a .tflite against DCASE budgets and targets"),
    "fit": ("fit", "search Mini-SegNet configurations that meet a parameter / MAC / RAM budget"),
    "firmware": ("firmware", "generate a C firmware project of an int8 .tflite; build it, run it under QEMU, verify"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(f"edge_asc.commands.{module}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        self.exit(2, f"edge-asc: error: {message} (see '{self.prog} --help')\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, import just that command's module (fast path for a known command)."""
    parser = _Parser(prog="edge-asc", description="Acoustic scene classification from training to a microphone.")
    parser.add_argument("--version", action="version", version=f"edge-asc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (_, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edge_asc.commands"):
                p.set_defaults(_unavailable=name)
                continue
            raise
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help / --version (0) or usage errors (2)
        return int(exc.code or 0)
    if getattr(args, "_unavailable", None):
        print(f"edge-asc: error: command '{args._unavailable}' is not available in this build", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EdgeAscError as exc:
        if args.verbose or os.environ.get("EDGE_ASC_TRACEBACK"):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"edge-asc: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge-asc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `edge-asc classify ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
