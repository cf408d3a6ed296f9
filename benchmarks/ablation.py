"""Ablation in miniature (the paper's Table 5): BN vs IN vs MixupNorm(0.1) on the first/last conv, and GAP vs event
extraction, on the synthetic dataset with a short fixed budget (same epochs, seed and data for every variant).

Reports the macro class accuracy (DCASE metric) on the 'evaluate' split for seen and unseen devices. The budget is
small, so differences of a few points are within seed noise; the script reports what it measures either way.

    python benchmarks/ablation.py --json runs/bench/ablation.json [--clips-per-class 40] [--epochs 10] [--data DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _util import parser, write_json

VARIANTS = {
    "bn+events": {"norm": "bn", "head": "events"},
    "in+events": {"norm": "in", "head": "events"},
    "mixup0.1+events": {"norm": "mixup", "mixup_lambda": 0.1, "head": "events"},
    "mixup0.1+gap": {"norm": "mixup", "mixup_lambda": 0.1, "head": "gap"},
}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", help="use this dataset instead of synthesising one")
    p.add_argument("--clips-per-class", type=int, default=40, help="synthetic clips per class (default 40)")
    p.add_argument("--seconds", type=float, default=1.0, help="synthetic clip length in s (default 1.0)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per variant (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    import torch

    from edge_asc.data import load_dataset
    from edge_asc.train.loop import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="edge-asc-ablation-") as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            from edge_asc.data.synth import synthesize

            synthesize(root, clips_per_class=args.clips_per_class, seconds=args.seconds, sample_rate=16_000,
                       seed=args.seed)
        ds = load_dataset(root)
        results = {}
        for name, over in VARIANTS.items():
            t0 = time.perf_counter()
            res = train(ds, Path(tmp) / "runs" / name,
                        TrainConfig(preset="edge", model_overrides=over, epochs=args.epochs, seed=args.seed,
                                    val_every=args.epochs),
                        cache_dir=Path(tmp) / "cache", progress=False, log=lambda s: None)
            m = res.meta.metrics
            results[name] = {"overrides": over, "seconds": time.perf_counter() - t0,
                             "train_loss": m["train_loss"], "macro_acc": m.get("val_macro_acc"),
                             "seen_macro_acc": m.get("val_seen_macro_acc"),
                             "unseen_macro_acc": m.get("val_unseen_macro_acc"), "log_loss": m.get("val_log_loss")}
            print(f"  {name:16s} seen {results[name]['seen_macro_acc']:.3f}  unseen "
                  f"{results[name]['unseen_macro_acc']:.3f}  ({results[name]['seconds']:.0f} s)", flush=True)
        n_train = len(ds.split("train"))
    out = {"variants": results, "epochs": args.epochs, "seed": args.seed, "train_clips": n_train,
           "data": args.data or f"synthesize(clips_per_class={args.clips_per_class}, seconds={args.seconds}, "
                                f"sample_rate=16000, seed={args.seed})", "preset": "edge"}
    write_json(args.json, out)
    best = max(results, key=lambda k: results[k]["unseen_macro_acc"] or 0)
    print("ablation: " + "; ".join(f"{k} {v['seen_macro_acc']:.3f}/{v['unseen_macro_acc']:.3f}"
                                   for k, v in results.items())
          + f" (seen/unseen macro acc, {args.epochs} epochs, {n_train} train clips); best unseen: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
