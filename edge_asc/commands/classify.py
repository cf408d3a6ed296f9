"""``edge-asc classify FILE... --model M [--hop S] [--json|--csv]``: per-window and clip labels of audio files.

Each file goes through the same ring buffer / streaming front end / window assembler / classifier / scene tracker
path as ``edge-asc listen`` (:func:`edge_asc.runtime.classify_audio`).
"""

from __future__ import annotations

import argparse


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by classify and listen."""
    p.add_argument("--model", metavar="M", help=".tflite model exported by 'edge-asc export' (required)")
    p.add_argument("--hop", type=float, default=None, metavar="S",
                   help="seconds between window starts (default: half the model's window)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="interpreter CPU threads (default 1)")
    p.add_argument("--edgetpu", action="store_true",
                   help="run on a Coral Edge TPU (a model compiled with edgetpu_compiler)")
    p.add_argument("--smooth", type=int, default=5, metavar="N",
                   help="windows in the posterior moving average of the scene tracker (default 5)")


def check_model_arguments(args: argparse.Namespace) -> None:
    from ..errors import UsageError

    if not args.model:
        raise UsageError("--model M is required (a .tflite exported by 'edge-asc export')")
    if args.hop is not None and not args.hop > 0:
        raise UsageError(f"--hop must be > 0 seconds, got {args.hop}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.smooth < 1:
        raise UsageError(f"--smooth must be >= 1 window, got {args.smooth}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV/FLAC/OGG, any rate and channel count)")
    add_model_arguments(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON: clip label, clip and window posteriors")
    fmt.add_argument("--csv", action="store_true", help="print CSV: one row per window plus one 'clip' row per file")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import warnings

    from ..audio import load_audio
    from ..runtime import Classifier, classify_audio

    check_model_arguments(args)
    clf = Classifier(args.model, threads=args.threads, edgetpu=args.edgetpu)
    card = clf.card
    results = []
    for path in args.files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, _ = load_audio(path, card.frontend.sample_rate)
            res = classify_audio(clf, x, hop_seconds=args.hop, smooth=args.smooth)
        for w in caught:
            print(f"edge-asc: warning: {w.message}", file=sys.stderr)
        results.append((path, res))
    labels = clf.labels
    if args.json:
        out = {"model": args.model, "model_sha256": clf.model_sha256, "labels": list(labels),
               "window_seconds": round(card.window_seconds, 6),
               "hop_seconds": _hop_s(res, card, args.hop),
               "files": [_file_json(path, r, labels) for path, r in results]}
        print(json.dumps(out, indent=2))
    elif args.csv:
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["file", "window", "start_s", "label", "confidence", *labels])
        for path, r in results:
            for i, (t, p) in enumerate(zip(r.window_starts_s, r.window_probs)):
                k = int(p.argmax())
                w.writerow([path, i, f"{t:.4f}", labels[k], f"{p[k]:.5f}", *(f"{v:.5f}" for v in p)])
            k = int(r.clip_probs.argmax())
            w.writerow([path, "clip", "", r.label, f"{r.clip_probs[k]:.5f}", *(f"{v:.5f}" for v in r.clip_probs)])
    else:
        for path, r in results:
            k = int(r.clip_probs.argmax())
            print(f"{path}: {r.label} ({r.clip_probs[k]:.2f}) over {len(r.window_starts_s)} windows of "
                  f"{card.window_seconds:.2f} s")
            for t, p in zip(r.window_starts_s, r.window_probs):
                j = int(p.argmax())
                print(f"  {t:8.2f} s  {labels[j]:<20s} {p[j]:.2f}")
    return 0


def _hop_s(res, card, hop) -> float:
    from ..runtime import hop_frames_for

    f = card.frontend
    return round(hop_frames_for(card, hop) * f.hop_length / f.sample_rate, 6)


def _file_json(path: str, r, labels) -> dict:
    return {
        "file": path,
        "label": r.label,
        "confidence": round(float(r.clip_probs.max()), 6),
        "clip_probs": {lbl: round(float(p), 6) for lbl, p in zip(labels, r.clip_probs)},
        "windows": [{"start_s": round(float(t), 4), "label": labels[int(p.argmax())],
                     "confidence": round(float(p.max()), 6), "probs": [round(float(v), 6) for v in p]}
                    for t, p in zip(r.window_starts_s, r.window_probs)],
        "scene_changes": [c.to_dict() for c in r.scene_changes],
        "latency_ms_median": round(float(_median(r.latencies_s)) * 1e3, 4),
    }


def _median(x) -> float:
    import numpy as np

    return float(np.median(x)) if len(x) else 0.0
