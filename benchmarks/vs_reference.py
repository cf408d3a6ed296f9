"""Does the trained ``edge`` model beat the reference classifier on unseen devices? Paired, over several datasets.

For each seed: synthesise a dataset (``edge_asc.data.synth``), fit the reference classifier of
``benchmarks/synth_difficulty.py`` (softmax regression on per-band log-mel mean + std) and train the ``edge`` preset
with the demo's recipe (``edge-asc train``), then score both on the same held-out clips: macro accuracy on seen
devices (A, B, C, S1-S3) and on unseen devices (S4-S6). The difference ``edge - reference`` is paired per seed (same
clips); the summary gives its mean, standard deviation and standard error over seeds, and the pooled difference with
a binomial standard error over all unseen clips.

    .venv/bin/python benchmarks/vs_reference.py --json results/vs_reference.json [--seeds 0 1 2 3 4] \
        [--clips-per-class 100] [--epochs 70] [--batch-size 32]

Goal (issue 4): ``edge`` clearly beats the reference on unseen devices: mean paired difference > 0 by more than two
standard errors (over seeds), and positive for every seed.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import goals_text, parser, write_json


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--clips-per-class", type=int, default=100)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=70)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--preset", default="edge")
    p.add_argument("--work", help="keep datasets and runs here (default: a temporary folder)")
    args = p.parse_args()

    from synth_difficulty import evaluate_dataset

    from edge_asc.cli import main as cli
    from edge_asc.data.synth import synthesize

    t0 = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="edge-asc-vsref-")
    work = Path(args.work or tmp.name)
    runs = {}
    for seed in args.seeds:
        root = work / f"seed{seed}"
        data = synthesize(root / "data", clips_per_class=args.clips_per_class, seconds=args.seconds,
                          sample_rate=16_000, seed=seed)
        ref = evaluate_dataset(data)
        argv = ["train", "--data", str(data), "--preset", args.preset, "--epochs", str(args.epochs),
                "--batch-size", str(args.batch_size), "--out", str(root / "train"), "--seed", str(seed),
                "--no-progress"]
        if cli(argv) != 0 or cli(["evaluate", str(root / "train"), "--data", str(data),
                                  "--json", str(root / "evaluate.json")]) != 0:
            print(f"vs_reference: seed {seed} failed")
            return 1
        ev = json.loads((root / "evaluate.json").read_text())
        g = ev["groups"]
        r = {"reference_seen": ref["seen_macro_acc"], "reference_unseen": ref["unseen_macro_acc"],
             "edge_seen": g["seen"]["macro_accuracy"], "edge_unseen": g["unseen"]["macro_accuracy"],
             "unseen_clips": g["unseen"]["n_clips"], "seen_clips": g["seen"]["n_clips"]}
        r["diff_unseen"] = r["edge_unseen"] - r["reference_unseen"]
        r["diff_seen"] = r["edge_seen"] - r["reference_seen"]
        runs[f"seed{seed}"] = r
        print(f"  seed {seed}: unseen edge {r['edge_unseen']:.3f} vs reference {r['reference_unseen']:.3f} "
              f"({r['diff_unseen']:+.3f}); seen edge {r['edge_seen']:.3f} vs reference {r['reference_seen']:.3f} "
              f"({r['diff_seen']:+.3f})", flush=True)

    def stats(key: str) -> dict:
        v = np.array([r[key] for r in runs.values()])
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        return {"mean": float(v.mean()), "sd": sd, "se": sd / math.sqrt(len(v)), "min": float(v.min()),
                "max": float(v.max())}

    du, ds = stats("diff_unseen"), stats("diff_seen")
    n_unseen = sum(r["unseen_clips"] for r in runs.values())
    pe = float(np.mean([r["edge_unseen"] for r in runs.values()]))
    pr = float(np.mean([r["reference_unseen"] for r in runs.values()]))
    pooled_se = math.sqrt(pe * (1 - pe) / n_unseen + pr * (1 - pr) / n_unseen)  # unpaired: conservative
    goals = {"unseen diff > 2 SE (over seeds)": du["mean"] > 2 * du["se"],
             "unseen diff > 0 for every seed": du["min"] > 0}
    out = {"preset": args.preset, "seeds": args.seeds, "clips_per_class": args.clips_per_class,
           "seconds": args.seconds, "epochs": args.epochs, "batch_size": args.batch_size,
           "diff_unseen": du, "diff_seen": ds, "unseen_clips_total": n_unseen,
           "pooled": {"edge_unseen": pe, "reference_unseen": pr, "binomial_se_of_diff": pooled_se},
           "goals": goals, "runs": runs, "seconds_total": time.perf_counter() - t0}
    write_json(args.json, out)
    print(f"vs_reference ({len(runs)} seeds, {n_unseen} unseen clips): unseen edge - reference "
          f"{du['mean']:+.3f} (sd {du['sd']:.3f}, se {du['se']:.3f}, min {du['min']:+.3f}); seen "
          f"{ds['mean']:+.3f} (se {ds['se']:.3f}); pooled unseen {pe:.3f} vs {pr:.3f} (binomial se {pooled_se:.3f}); "
          f"{goals_text(goals)}; {out['seconds_total']:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
