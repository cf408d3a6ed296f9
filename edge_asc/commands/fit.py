"""``edge-asc fit --params 128000 --macs 30e6 [--ram 256KB] [--family minisegnet] [--base edge]``.

Searches Mini-SegNet width, mel bins, frames and pooling factors for the largest configurations meeting every budget
(:mod:`edge_asc.firmware_bench.fit`), prints a ranked table and the preset string to train.
"""

from __future__ import annotations

import argparse
import re

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1_000_000, "mb": 1_000_000, "mib": 1 << 20}


def parse_size(text: str) -> float:
    """'256KB' -> 256000, '256KiB' -> 262144, '30e6' -> 3e7, '128000' -> 128000 (raises ValueError)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 128000, 30e6, 256KB, 256KiB)")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def _size(text: str) -> float:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=_size, default=128_000.0, metavar="N",
                   help="max trainable parameters (default 128000, the DCASE 2022+ budget at int8)")
    p.add_argument("--macs", type=_size, default=30e6, metavar="N", help="max MACs per 1 s of audio (default 30e6)")
    p.add_argument("--ram", type=_size, metavar="BYTES",
                   help="max TFLite Micro arena (estimated: int8 activations + interpreter data), e.g. 256KB or 192KiB")
    p.add_argument("--family", default="minisegnet", choices=("minisegnet",), help="model family (default minisegnet)")
    p.add_argument("--base", default="edge", metavar="PRESET",
                   help="preset NAME[:field=value,...] whose other settings are kept (default edge)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="rows to print (default 10)")
    p.add_argument("--json", action="store_true", help="print the ranked candidates as JSON")
    p.add_argument("--confirm", metavar="MODEL", help="exported .tflite whose TFLM arena is measured and compared "
                                                      "with the estimate for its embedded config")


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import UsageError
    from ..firmware_bench.fit import confirm, search

    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    for name in ("params", "macs", "ram"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise UsageError(f"--{name} must be > 0, got {v:g}")
    found = search(max_params=args.params, max_macs=args.macs, max_ram=args.ram, base=args.base, top=args.top)
    conf = confirm(args.confirm) if args.confirm else None
    if args.json:
        print(json.dumps({"constraints": {"params": args.params, "macs": args.macs, "ram": args.ram},
                          "candidates": [c.to_dict() for c in found],
                          "confirm": conf.to_dict() if conf else None}, indent=2))
    else:
        ram = f", RAM <= {args.ram:,.0f} B" if args.ram else ""
        print(f"Mini-SegNet configurations around '{args.base}' with params <= {args.params:,.0f}, "
              f"MACs/s <= {args.macs:,.0f}{ram} (largest first):")
        head = ("#", "width", "c1/c2", "mels", "frames", "pool", "params", "MACs/1 s", "arena est. B", "preset")
        rows = [(str(i + 1), f"{c.config.width:g}", "/".join(map(str, c.config.channels)), str(c.config.n_mels),
                 str(c.config.n_frames), f"{c.config.pool[0]}x{c.config.pool[1]}", f"{c.params:,}",
                 f"{c.macs_1s:,.0f}", f"{c.arena_estimate_bytes:,}", c.preset_string) for i, c in enumerate(found)]
        widths = [max(len(x) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
        for row in (head, *rows):
            print("  ".join(x.rjust(w) if i not in (9,) else x for i, (x, w) in enumerate(zip(row, widths))))
        if found:
            best = found[0]
            print(f"\nto train: {best.preset_string}")
            print(f"config:   {json.dumps(best.config.to_dict(), sort_keys=True)}")
            print("then export it and check the real numbers with 'edge-asc report MODEL.tflite' "
                  "(or 'edge-asc fit --confirm MODEL.tflite' for the arena)")
        else:
            print("no configuration meets every budget: relax one of them")
        if conf:
            if conf.measured_bytes is None:
                est = f"; estimate {conf.estimate_bytes:,} B" if conf.estimate_bytes else ""
                print(f"confirm {conf.model}: TFLite Micro cannot run it ({conf.error}); the exported graph's "
                      f"activation peak is {conf.graph_peak_bytes:,} B{est}")
            else:
                est = f"{conf.estimate_bytes:,} B estimated" if conf.estimate_bytes else "no config in the card"
                ratio = f" (measured/estimate {conf.ratio:.2f})" if conf.ratio else ""
                verdict = ""
                if args.ram:
                    verdict = " -> fits --ram" if conf.measured_bytes <= args.ram else " -> EXCEEDS --ram"
                print(f"confirm {conf.model}: TFLM arena {conf.measured_bytes:,} B measured, {est}{ratio}{verdict}")
    if not found:
        return 1
    if conf and args.ram and conf.measured_bytes is not None and conf.measured_bytes > args.ram:
        from ..errors import BudgetExceededError

        raise BudgetExceededError(
            f"{conf.model}: measured TFLM arena {conf.measured_bytes:,} B > --ram {args.ram:,.0f}"
        )
    return 0
