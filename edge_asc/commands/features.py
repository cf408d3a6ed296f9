"""``edge-asc features FILE --preset edge [--png OUT] [--json]``: log-mel features of one file."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="audio file (WAV/FLAC/OGG, any rate and channel count)")
    p.add_argument("--preset", default="edge", help="front-end preset: edge or paper (default: edge)")
    p.add_argument("--png", metavar="OUT", help="also write a spectrogram plot (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..audio import load_audio
    from ..frontend import offline
    from ..spec import frontend_preset

    spec = frontend_preset(args.preset)
    x, sr = load_audio(args.file, spec.sample_rate)
    feats = offline(x, spec)
    summary = {
        "file": args.file,
        "preset": args.preset,
        "seconds": round(x.shape[0] / sr, 4),
        "shape": list(feats.shape),
        "axes": "channels, mel bins, frames",
        "frames_per_second": round(spec.sample_rate / spec.hop_length, 3),
        "channels": {name: {"min_db" if i == 0 else "min": float(np.min(c)) if c.size else None,
                            "max_db" if i == 0 else "max": float(np.max(c)) if c.size else None,
                            "mean_db" if i == 0 else "mean": float(np.mean(c)) if c.size else None}
                     for i, (name, c) in enumerate(zip(("log_mel", "delta", "delta_delta"), feats))},
    }
    if args.png:
        _plot(feats, spec, args.png, args.file)
        summary["png"] = args.png
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.file}: {summary['seconds']} s -> features {tuple(feats.shape)} (channels, mels, frames) "
              f"with preset '{args.preset}'")
        for name, st in summary["channels"].items():
            print(f"  {name:12s} " + "  ".join(f"{k}={v:.2f}" for k, v in st.items() if v is not None))
        if args.png:
            print(f"  plot: {args.png}")
    return 0


def _plot(feats, spec, out: str, title: str) -> None:
    from .._io import atomic_path
    from ..errors import require

    require("matplotlib", "train", "--png plots")
    # A Figure of its own, not pyplot: a plot must not switch the caller's matplotlib backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.5 * feats.shape[0]))
    axes = fig.subplots(feats.shape[0], 1, squeeze=False)
    for ax, c, name in zip(axes[:, 0], feats, ("log-mel (dB)", "delta", "delta-delta")):
        im = ax.imshow(c, origin="lower", aspect="auto",
                       extent=(0, c.shape[1] * spec.hop_length / spec.sample_rate, 0, spec.n_mels))
        ax.set_ylabel("mel bin")
        ax.set_title(name)
        fig.colorbar(im, ax=ax)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
