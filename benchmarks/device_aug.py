"""Do Freq-MixStyle and device impulse response (DIR) augmentation help on unseen devices? Paired over seeds.

For each seed: synthesise a dataset (train on devices A, B, C, S1-S3; evaluate also on the unseen S4-S6) and train
the student preset (default ``micro``) with the same seed and recipe three times: baseline (the paper's recipe),
``+ Freq-MixStyle`` (``--freq-mixstyle P``) and ``+ DIR`` (``--dir P`` with the synthetic device family of
``edge_asc.data.devices.dir_family``, none of which is an evaluation device). Scores are the macro accuracy on the
'evaluate' split after the last epoch; differences to the baseline are paired per seed.

    nice -n 10 .venv/bin/python benchmarks/device_aug.py --json results/device_aug.json [--seeds 0 1 2 3 4] \
        [--clips-per-class 20] [--epochs 10] [--batch-size 16] [--fms-p 0.4] [--dir-p 0.6]

Verdict per variant: "helps" when the mean unseen-device gain is positive by more than one standard error and not
negative for most seeds; only such a variant belongs in a preset's default recipe. The JSON is rewritten after every
seed (``"complete": false`` until the last); parts run as separate processes are summarised together with
``--combine part_0.json part_1.json ... --json all.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _util import parser, write_json
from distill import combine, paired_stats, train_run

SETTINGS = ("preset", "clips_per_class", "seconds", "epochs", "batch_size", "fms_p", "dir_p", "threads", "variants")


def summarise(runs: dict[str, dict], settings: dict) -> dict:
    """Paired differences to the baseline and a verdict per variant over ``runs`` (``{"seedK": {...}}``)."""
    variants = settings["variants"]
    summary = {}
    for name in variants:
        if name == "baseline":
            continue
        du = paired_stats(x[f"diff_unseen_{name}"] for x in runs.values())
        ds = paired_stats(x[f"diff_seen_{name}"] for x in runs.values())
        n_neg = sum(x[f"diff_unseen_{name}"] < 0 for x in runs.values())
        helps = bool(du["mean"] > du["se"] and n_neg <= len(runs) // 2) if len(runs) > 1 else False
        summary[name] = {"diff_unseen": du, "diff_seen": ds, "seeds_worse_unseen": n_neg, "helps": helps}
    mean = {n: {g: float(np.mean([x[n][g] for x in runs.values()])) for g in ("seen", "unseen")} for n in variants}
    return {**settings, "seeds": [int(k[4:]) for k in runs], "summary": summary, "mean": mean, "runs": runs}


def report(out: dict) -> None:
    print(f"device_aug ({out['preset']}, {len(out['runs'])} seeds): " + "; ".join(
        f"{n} unseen {s['diff_unseen']['mean']:+.3f} (se {s['diff_unseen']['se']:.3f}, min "
        f"{s['diff_unseen']['min']:+.3f}), seen {s['diff_seen']['mean']:+.3f} -> "
        f"{'helps' if s['helps'] else 'does not clearly help'}" for n, s in out["summary"].items()))


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--combine", nargs="+", metavar="JSON", help="summarise the runs of these outputs together")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--clips-per-class", type=int, default=20)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--preset", default="micro")
    p.add_argument("--fms-p", type=float, default=0.4, help="Freq-MixStyle probability (CP-JKU: 0.4)")
    p.add_argument("--dir-p", type=float, default=0.6, help="DIR probability per clip (CP-JKU: 0.6)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--work", help="keep datasets and runs here (default: a temporary folder)")
    args = p.parse_args()
    if args.combine:
        return combine(args.combine, args.json, name="device_aug", settings_keys=SETTINGS,
                       summarise_fn=summarise, report_fn=report)

    from edge_asc.data.synth import synthesize

    variants = {"baseline": {}, "freq_mixstyle": {"freq_mixstyle": args.fms_p}, "dir": {"dir": args.dir_p}}
    t0 = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="edge-asc-devaug-")
    work = Path(args.work or tmp.name)
    runs: dict[str, dict] = {}
    out: dict = {}
    for seed in args.seeds:
        root = work / f"seed{seed}"
        data = root / "data"
        if not (data / "synth.json").exists():
            synthesize(data, clips_per_class=args.clips_per_class, seconds=args.seconds, sample_rate=16_000,
                       seed=seed)
        r = {name: train_run(data, root / name, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
                             seed=seed, cache=root / "cache", threads=args.threads, **over)
             for name, over in variants.items()}
        for name in variants:
            if name != "baseline":
                r[f"diff_unseen_{name}"] = r[name]["unseen"] - r["baseline"]["unseen"]
                r[f"diff_seen_{name}"] = r[name]["seen"] - r["baseline"]["seen"]
        runs[f"seed{seed}"] = r
        print(f"  seed {seed}: unseen " + ", ".join(f"{n} {r[n]['unseen']:.3f}" for n in variants)
              + "; seen " + ", ".join(f"{n} {r[n]['seen']:.3f}" for n in variants), flush=True)
        settings = {k: getattr(args, k) for k in SETTINGS if k != "variants"} | {"variants": variants}
        out = {**summarise(runs, settings), "complete": len(runs) == len(args.seeds),
               "seconds_total": time.perf_counter() - t0}
        write_json(args.json, out)
    report(out)
    print(f"  {out['seconds_total']:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
