"""``edge-asc info MODEL.tflite [--json]``: print the ModelCard embedded in an exported model.

Device-safe: reads the card with :func:`edge_asc.artifact.read_artifact` (the TFLite schema bindings of the ``pi``
extra); no tensorflow, no interpreter. If ``<stem>.export.json`` lies beside the model, its verification summary is
shown too.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".tflite file written by 'edge-asc export'")
    p.add_argument("--json", action="store_true", help="print the card as JSON")


def _fmt_quant(q: dict) -> str:
    if q["dtype"] == "float32":
        return "float32"
    return f"{q['dtype']} (scale {q['scale']:.6g}, zero point {q['zero_point']})"


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from ..tflite_meta import read_model_card

    card = read_model_card(args.model)
    d = card.to_dict()
    size = os.path.getsize(args.model)
    if args.json:
        d["file_bytes"] = size
        print(json.dumps(d, indent=2, sort_keys=True))
        return 0
    f = d["frontend"]
    prov = d["provenance"]
    lines = [
        f"model          {args.model} ({size:,} bytes)",
        f"labels         {len(card.labels)}: {', '.join(card.labels)}",
        (f"front end      {f['sample_rate']} Hz, n_fft {f['n_fft']}, hop {f['hop_length']}, {f['n_mels']} mels, "
         f"{card.frontend.channels} channel(s), norm mean {f['norm_mean']} std {f['norm_std']} dB"),
        f"window         {card.window_frames} frames = {card.window_seconds:.3f} s",
        f"input          {d['input_layout']} {d['input_shape']} {_fmt_quant(d['input_quant'])}",
        f"output         {d['output_kind']} [{len(card.labels)}] {_fmt_quant(d['output_quant'])}",
        (f"model          preset {card.model_preset or '-'}, {card.param_count:,} params, "
         f"{card.macs_per_inference:,} MACs per window"),
        f"training run   {card.training_run or '-'}",
        f"calibration    {card.calibration_sha256[:16] or '-'}",
        f"exported       {prov.get('exported_at', '-')} mode {prov.get('mode', '-')} with "
        + ", ".join(f"{k} {v}" for k, v in sorted(prov.get("versions", {}).items())),
    ]
    rep = Path(args.model).with_name(f"{Path(args.model).stem}.export.json")
    if rep.is_file():
        try:
            v = json.loads(rep.read_text(encoding="utf-8"))["verification"]
            lines.append(f"verification   top-1 agreement {v['window_top1_agreement']:.4f}, macro acc float "
                         f"{v['float_macro_accuracy']:.4f} / exported {v['exported_macro_accuracy']:.4f} "
                         f"({'PASS' if v['passed'] else 'FAIL'}; {rep.name})")
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f"verification   {rep.name} is unreadable")
    print("\n".join(lines))
    return 0
