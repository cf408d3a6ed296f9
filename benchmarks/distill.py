"""Does knowledge distillation help a small student on unseen devices? Paired over seeds on synthetic data.

For each seed: synthesise a dataset (``edge_asc.data.synth``: train on devices A, B, C, S1-S3, evaluate on those and
the unseen S4-S6), train a teacher (``--teacher-preset``, default ``edge``), then the student (``--student``, default
``micro``) twice with the same seed and recipe: plain, and distilled from the teacher (``train --teacher``). Scores are
the macro accuracy on the 'evaluate' split after the last epoch, seen devices and unseen devices separately. The
difference ``KD - plain`` is paired per seed (same data, same initialisation, same augmentation draws).

    nice -n 10 .venv/bin/python benchmarks/distill.py --json results/distill.json [--seeds 0 1 2 3 4] \
        [--clips-per-class 20] [--epochs 10] [--teacher-epochs 10] [--batch-size 16] [--kd-weight 0.5]

Goal (issue 18): KD improves unseen-device macro accuracy by >= 2 points on average, and by >= 0 for every seed.
The JSON is rewritten after every seed (``"complete": false`` until the last), so an interrupted run keeps its seeds.
Seeds run as separate processes (one ``--seeds K --json part_K.json`` each) are summarised together with
``--combine part_0.json part_1.json ... --json all.json``.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import goals_text, parser, write_json


def train_run(data: Path, out: Path, *, preset: str, epochs: int, batch_size: int, seed: int, cache: Path,
              threads: int | None, **extra) -> dict:
    """Train (or reuse a finished run in ``out`` with the same settings) and return its final evaluate-split scores:
    ``seen``, ``unseen``, ``overall`` macro accuracy, ``seconds``."""
    import torch

    from edge_asc.data import load_dataset
    from edge_asc.model import resolve_preset
    from edge_asc.train.augment import AugmentConfig
    from edge_asc.train.loop import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    aug_over = {k: extra.pop(k) for k in ("freq_mixstyle", "dir") if k in extra}
    cfg = resolve_preset(preset).config
    config = TrainConfig(preset=preset, epochs=epochs, batch_size=batch_size, seed=seed, val_every=epochs,
                         augment=AugmentConfig.for_window(cfg.n_mels, cfg.n_frames, **aug_over), **extra)
    t0 = time.perf_counter()
    res = train(load_dataset(data), out, config, resume=(out / "checkpoint.json").exists(), cache_dir=cache,
                progress=False, log=lambda s: None)
    m = res.meta.metrics
    return {"seen": m["val_seen_macro_acc"], "unseen": m["val_unseen_macro_acc"], "overall": m["val_macro_acc"],
            "seconds": time.perf_counter() - t0}


def paired_stats(values) -> dict:
    v = np.asarray(list(values), dtype=float)
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sd": sd, "se": sd / math.sqrt(len(v)), "min": float(v.min()),
            "max": float(v.max()), "n": len(v)}


SETTINGS = ("student", "teacher_preset", "clips_per_class", "seconds", "epochs", "teacher_epochs", "batch_size",
            "kd_temperature", "kd_weight", "threads")


def summarise(runs: dict[str, dict], settings: dict) -> dict:
    """The paired statistics and goal verdicts over ``runs`` (``{"seedK": {...}}``)."""
    du = paired_stats(x["diff_unseen"] for x in runs.values())
    ds = paired_stats(x["diff_seen"] for x in runs.values())
    goals = {"unseen KD - plain >= 0.02 on average": du["mean"] >= 0.02,
             "unseen KD - plain >= 0 for every seed": du["min"] >= -1e-9}
    mean = {k: {g: float(np.mean([x[k][g] for x in runs.values()])) for g in ("seen", "unseen")}
            for k in ("teacher", "plain", "kd")}
    secs = {k: float(np.mean([x[k]["seconds"] for x in runs.values()])) for k in ("teacher", "plain", "kd")}
    return {**settings, "seeds": [int(k[4:]) for k in runs], "diff_unseen": du, "diff_seen": ds, "mean": mean,
            "mean_seconds": secs, "goals": goals, "runs": runs}


def report(out: dict) -> None:
    du, ds, goals = out["diff_unseen"], out["diff_seen"], out["goals"]
    print(f"distill ({out['student']} <- {out['teacher_preset']}, {len(out['runs'])} seeds): unseen KD - plain "
          f"{du['mean']:+.3f} (sd {du['sd']:.3f}, se {du['se']:.3f}, min {du['min']:+.3f}); seen {ds['mean']:+.3f} "
          f"(se {ds['se']:.3f}); means unseen teacher {out['mean']['teacher']['unseen']:.3f} plain "
          f"{out['mean']['plain']['unseen']:.3f} KD {out['mean']['kd']['unseen']:.3f}; {goals_text(goals)}")


def combine(paths: list[str], json_out: str | None, *, name: str = "distill", settings_keys=None,
            summarise_fn=None, report_fn=None) -> int:
    """``--combine``: summarise seeds run as separate processes (their JSON outputs) as one run; refuses parts run
    with different settings. ``device_aug.py`` passes its own settings keys, summary and report."""
    import json

    keys = SETTINGS if settings_keys is None else settings_keys
    parts = [json.loads(Path(p).read_text()) for p in paths]
    settings = {k: parts[0][k] for k in keys}
    if any({k: q[k] for k in keys} != settings for q in parts):
        print(f"{name} --combine: the parts were run with different settings")
        return 1
    runs = {k: v for q in parts for k, v in q["runs"].items()}
    out = {**(summarise_fn or summarise)(runs, settings), "complete": all(q["complete"] for q in parts),
           "combined_from": paths}
    write_json(json_out, out)
    (report_fn or report)(out)
    return 0


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--combine", nargs="+", metavar="JSON", help="summarise the runs of these outputs together")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--clips-per-class", type=int, default=20)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=10, help="student epochs (default 10: one SGDR cycle)")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--student", default="micro")
    p.add_argument("--teacher-preset", default="edge")
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--kd-weight", type=float, default=0.5)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--work", help="keep datasets and runs here (default: a temporary folder)")
    args = p.parse_args()
    if args.combine:
        return combine(args.combine, args.json)

    from edge_asc.data.synth import synthesize
    from edge_asc.train.distill import DistillConfig, teacher_refs

    t0 = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="edge-asc-distill-")
    work = Path(args.work or tmp.name)
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads}
    runs: dict[str, dict] = {}
    out: dict = {}
    for seed in args.seeds:
        root = work / f"seed{seed}"
        data = root / "data"
        if not (data / "synth.json").exists():
            synthesize(data, clips_per_class=args.clips_per_class, seconds=args.seconds, sample_rate=16_000,
                       seed=seed)
        cache = root / "cache"
        teacher = train_run(data, root / "teacher", preset=args.teacher_preset, epochs=args.teacher_epochs,
                            batch_size=args.batch_size, seed=seed, cache=cache, threads=args.threads)
        plain = train_run(data, root / "plain", preset=args.student, seed=seed, cache=cache, **common)
        kd_cfg = DistillConfig(teachers=teacher_refs([root / "teacher"]), temperature=args.kd_temperature,
                               weight=args.kd_weight)
        kd = train_run(data, root / "kd", preset=args.student, seed=seed, cache=cache, distill=kd_cfg, **common)
        r = {"teacher": teacher, "plain": plain, "kd": kd, "diff_unseen": kd["unseen"] - plain["unseen"],
             "diff_seen": kd["seen"] - plain["seen"]}
        runs[f"seed{seed}"] = r
        print(f"  seed {seed}: unseen KD {kd['unseen']:.3f} vs plain {plain['unseen']:.3f} ({r['diff_unseen']:+.3f});"
              f" seen KD {kd['seen']:.3f} vs plain {plain['seen']:.3f} ({r['diff_seen']:+.3f}); teacher unseen "
              f"{teacher['unseen']:.3f} seen {teacher['seen']:.3f}; {kd['seconds'] + plain['seconds']:.0f} s",
              flush=True)
        settings = {k: getattr(args, k) for k in SETTINGS}
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
