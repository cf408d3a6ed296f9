"""``edge-asc features FILE --preset edge [--png OUT] [--json]``: log-mel features of one file.

``edge-asc features --data DIR --preset paper --cache-dir DIR [--workers N]``: fill the feature cache that
``edge-asc train --data DIR --preset paper --cache-dir DIR`` reads (both splits), in parallel, with a progress bar;
interrupted, it resumes where it stopped (:mod:`edge_asc.train.cache`).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="audio file (WAV/FLAC/OGG, any rate and channel count)")
    p.add_argument("--preset", default="edge",
                   help="front-end preset: edge or paper; with --data, the model preset as given to 'edge-asc train' "
                        "(NAME[:field=value,...]), whose front end is used (default: edge)")
    p.add_argument("--png", metavar="OUT", help="also write a spectrogram plot (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    g = p.add_argument_group("caching a whole dataset (instead of FILE)")
    g.add_argument("--data", metavar="DIR", help="dataset folder (TAU 2020/2022 Mobile layout or folder per class)")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache folder, as for 'edge-asc train --cache-dir' (train's default is "
                        "<out>/../feature-cache)")
    g.add_argument("--split", nargs="+", choices=("train", "evaluate"), default=["train", "evaluate"],
                   help="splits to cache (default: train evaluate)")
    g.add_argument("--workers", type=int,
                   help="extraction processes (default: min(CPUs, 8), or 1 below 32 MB of audio; 1 computes in "
                        "this process; the cache is the same for every value)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.data is not None:
        if args.file is not None or args.png:
            raise UsageError("give either FILE (one file's features) or --data DIR (cache a dataset), not both")
        return _cache_dataset(args)
    if args.file is None:
        raise UsageError("give an audio FILE, or --data DIR --cache-dir DIR to cache a dataset's features")
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


def _cache_dataset(args: argparse.Namespace) -> int:
    """Build (or finish) the cache entries ``edge-asc train`` would build for ``args.data`` and ``args.preset``."""
    import sys
    import time

    from ..data import load_dataset
    from ..errors import UsageError
    from ..model import resolve_preset
    from ..spec import frontend_for_model, frontend_preset
    from ..train.cache import build_cache
    from ..train.splits import resolve_split

    if args.cache_dir is None:
        raise UsageError("--data needs --cache-dir DIR: the folder 'edge-asc train --cache-dir' will read")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    preset = resolve_preset(args.preset)
    # the front end edge-asc train derives from the model preset, so the cache keys match
    spec = frontend_for_model(frontend_preset(preset.frontend), n_mels=preset.config.n_mels,
                              channels=preset.config.in_channels)
    dataset = load_dataset(args.data)
    labels = tuple(dataset.labels)
    summary = {"data": args.data, "preset": args.preset, "feature_hash": spec.feature_hash(), "splits": {}}
    for name in args.split:
        split = resolve_split(dataset, name, labels)
        if not split.paths:
            summary["splits"][name] = {"clips": 0}
            continue
        bar = None
        if not args.no_progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm comes with the train extra; without it, no bar
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=len(split.paths), desc=f"features ({name})", unit="clip", file=sys.stderr,
                           dynamic_ncols=True)
        t = time.perf_counter()
        try:
            store = build_cache(split.paths, split.clip_ids, spec, args.cache_dir, workers=args.workers,
                                on_clip=(lambda d, n, bar=bar: bar.update(1)) if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t
        nbytes = sum(c.nbytes for c in store.chunks)
        summary["splits"][name] = {"clips": len(store), "seconds": round(seconds, 2), "bytes": nbytes,
                                   "entry": str(store.path)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, r in summary["splits"].items():
            if r["clips"]:
                print(f"{name}: {r['clips']} clips cached in {r['seconds']:.1f} s ({r['bytes'] / 1e6:.1f} MB) "
                      f"-> {r['entry']}")
            else:
                print(f"{name}: no clips")
    return 0
