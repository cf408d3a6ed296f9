"""Does quantisation-aware fine-tuning close the float-vs-int8 gap of the full-int8 export? Paired, per seed and preset.

For each seed: synthesise a dataset (``edge_asc.data.synth``); for each preset train it with the demo's recipe
(``edge_asc.train``), export it to full int8 and verify (``edge_asc.export``: the default 300 calibration windows,
every held-out clip); then fine-tune that run with ``edge_asc.train.qat`` (``--qat-epochs``) and export and verify the
QAT run the same way. Same data, same calibration windows, same held-out windows for both.

    .venv/bin/python benchmarks/int8_fidelity.py --json runs/bench/int8_fidelity.json \
        [--seeds 0 1 2 3 4] [--presets edge micro] [--epochs N] [--qat-epochs 3] [--work DIR]

Per row (seed x preset x {plain, qat}): float and int8 clip macro accuracy, window top-1 agreement, the int8
output grid's ceiling on it, agreement on confident windows (float top-2 margin >= 0.5), event top-4 set agreement,
and wall times. Goals (issue 16), checked on the QAT rows of each preset:

- int8 macro accuracy >= float - 0.5 points on average over seeds, and >= float - 1.0 on every seed;
- top-1 agreement >= 0.97 and within 1 point of the output-grid ceiling;
- agreement >= 0.995 on confident windows;
- event top-4 set agreement >= 0.95;
- float macro accuracy after QAT >= before - 1.0 point.

With ``--work`` the datasets, runs and models are kept and reused (a finished stage is not redone; QAT runs are kept
per settings), so a re-run with other QAT settings retrains nothing. Measurements so far: ``docs/qat.md``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import goals_text, parser, write_json

#: goals (issue 16)
MEAN_DROP_POINTS = 0.5
MAX_DROP_POINTS = 1.0
MIN_AGREEMENT = 0.97
CEILING_GAP = 0.01
MIN_CONFIDENT = 0.995
MIN_EVENT_SET = 0.95
MAX_FLOAT_LOSS_POINTS = 1.0

ROW_KEYS = ("float_macro_accuracy", "exported_macro_accuracy", "window_top1_agreement", "output_grid_agreement",
            "confident_top1_agreement", "confident_fraction", "events_topk_set_agreement", "input_grid_agreement",
            "events_input_grid_set_agreement", "n_windows")


def _export(run: Path, out: Path, ds, calib_size: int) -> dict:
    """Export + verify ``run`` (reusing ``out``'s report when it exists); the verification's row values."""
    report = out.with_name(f"{out.stem}.export.json")
    t = time.perf_counter()
    if not report.exists():
        from edge_asc.export import ExportConfig, export_checkpoint

        export_checkpoint(run, out, config=ExportConfig(mode="int8", gate=False, calib_size=calib_size),
                          dataset=ds)
    v = json.loads(report.read_text())["verification"]
    if "input_grid_agreement" not in v:  # a report written before the verifier measured the input-grid floor
        v.update(_input_grid_floor(run, out, ds))
    row = {k: v.get(k) for k in ROW_KEYS}
    row["export_s"] = time.perf_counter() - t
    return row


def _input_grid_floor(run: Path, model: Path, ds) -> dict:
    """The verifier's input-grid fields for ``run`` exported to ``model``, on the same held-out windows."""
    from edge_asc.export.verify import grid_agreement, held_out_clips, held_out_windows, input_grid_run, run_float
    from edge_asc.runtime import Classifier
    from edge_asc.train.checkpoint import load_checkpoint

    torch_model, _ = load_checkpoint(run)
    card = Classifier(model).card
    wins = held_out_windows(card.frontend, card.window_frames, ds, held_out_clips(ds, card.labels))
    top1, ev = grid_agreement(run_float(torch_model, wins), input_grid_run(torch_model, wins, card.input_quant))
    return {"input_grid_agreement": top1, "events_input_grid_set_agreement": ev}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--presets", nargs="+", default=["edge", "micro"])
    p.add_argument("--clips-per-class", type=int, default=100)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--epochs", type=int, help="float training epochs (default: the demo's, 70 and 150 for micro)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--qat-lr", type=float, default=1e-3)
    p.add_argument("--qat-schedule", default="cosine", choices=("cosine", "constant"))
    p.add_argument("--qat-optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--qat-ranges", default="calibration", choices=("calibration", "ema"))
    p.add_argument("--qat-float-weight", type=float, default=0.0)
    p.add_argument("--qat-tie-weight", type=float, default=0.0)
    p.add_argument("--qat-margin", type=float, default=1.0, help="weight of the top-2 logit margin hinge (0: off)")
    p.add_argument("--qat-margin-target", type=float, default=0.2, help="the hinge's margin in logit units")
    p.add_argument("--qat-margin-on", default="top1", choices=("label", "top1"))
    p.add_argument("--qat-event-margin", type=float, default=0.0, help="weight of the per-cell event margin hinge")
    p.add_argument("--qat-mixup", type=float, default=None, help="QAT mixup alpha (default: the run's; 0: off)")
    p.add_argument("--qat-tag", default="", help="suffix of the QAT run folders (their names carry a hash of the "
                                                 "QAT settings already)")
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--work", help="keep datasets, runs and models here (default: a temporary folder)")
    args = p.parse_args()

    import torch

    from edge_asc.commands.demo import FULL, MICRO_EPOCHS
    from edge_asc.data import load_dataset
    from edge_asc.data.synth import synthesize
    from edge_asc.train.loop import TrainConfig, train
    from edge_asc.train.qat import QatConfig, qat_finetune

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="edge-asc-int8fid-")
    work = Path(args.work or tmp.name)
    qcfg = QatConfig(epochs=args.qat_epochs, lr=args.qat_lr, schedule=args.qat_schedule,
                     optimizer=args.qat_optimizer, ranges=args.qat_ranges, float_weight=args.qat_float_weight,
                     tie_weight=args.qat_tie_weight, mixup_alpha=args.qat_mixup,
                     event_margin_weight=args.qat_event_margin, margin_weight=args.qat_margin,
                     margin=args.qat_margin_target, margin_on=args.qat_margin_on,
                     calib_size=args.calib_size)
    # QAT runs are kept per settings: a re-run with other settings does not reuse them
    qtag = hashlib.sha256(json.dumps(qcfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    epochs = {p: args.epochs or (MICRO_EPOCHS if p == "micro" else FULL["epochs"]) for p in args.presets}
    rows: list[dict] = []
    for seed in args.seeds:
        data = work / f"seed{seed}" / "data"
        if not (data / "synth.json").exists():
            synthesize(data, clips_per_class=args.clips_per_class, seconds=args.seconds, sample_rate=16_000,
                       seed=seed)
        ds = load_dataset(data)
        for preset in args.presets:
            root = work / f"seed{seed}" / preset
            plain = root / f"plain-e{epochs[preset]}"
            t = time.perf_counter()
            if not (plain / "checkpoint.json").exists():
                train(ds, plain, TrainConfig(preset=preset, epochs=epochs[preset], batch_size=args.batch_size,
                                             seed=seed, val_every=0), cache_dir=work / "feature-cache",
                      progress=False, log=lambda s: None)
            train_s = time.perf_counter() - t
            row_plain = {"seed": seed, "preset": preset, "variant": "plain", "train_s": train_s,
                         **_export(plain, root / f"plain-e{epochs[preset]}.tflite", ds, args.calib_size)}
            qat = root / f"qat-e{epochs[preset]}-{qtag}{args.qat_tag}"
            t = time.perf_counter()
            if not (qat / "checkpoint.json").exists():
                qat_finetune(plain, ds, qat, qcfg, cache_dir=work / "feature-cache",
                             log=lambda s: print(f"    {s}", flush=True))
            qat_s = time.perf_counter() - t
            row_qat = {"seed": seed, "preset": preset, "variant": "qat", "qat_s": qat_s,
                       **_export(qat, root / f"{qat.name}.tflite", ds, args.calib_size)}
            row_qat["float_macro_accuracy_before_qat"] = row_plain["float_macro_accuracy"]
            rows += [row_plain, row_qat]
            for r in (row_plain, row_qat):
                print(_row_text(r), flush=True)

    goals, summary = {}, {}
    for preset in args.presets:
        for variant in ("plain", "qat"):
            rs = [r for r in rows if r["preset"] == preset and r["variant"] == variant]
            drops = np.array([100 * (r["float_macro_accuracy"] - r["exported_macro_accuracy"]) for r in rs])
            s = {k: float(np.mean([r[k] for r in rs if r[k] is not None])) for k in ROW_KEYS
                 if any(r[k] is not None for r in rs)}
            s["drop_points_mean"], s["drop_points_max"] = float(drops.mean()), float(drops.max())
            summary[f"{preset}/{variant}"] = s
            if variant != "qat":
                continue
            agree = [r["window_top1_agreement"] for r in rs]
            g = {
                f"{preset}: int8 acc >= float - {MEAN_DROP_POINTS} pt (mean)":
                    s["drop_points_mean"] <= MEAN_DROP_POINTS,
                f"{preset}: int8 acc >= float - {MAX_DROP_POINTS} pt (every seed)":
                    s["drop_points_max"] <= MAX_DROP_POINTS,
                f"{preset}: top-1 agreement >= {MIN_AGREEMENT}": min(agree) >= MIN_AGREEMENT,
                f"{preset}: agreement within {CEILING_GAP} of the grid ceiling": all(
                    r["output_grid_agreement"] - r["window_top1_agreement"] <= CEILING_GAP for r in rs),
                f"{preset}: confident agreement >= {MIN_CONFIDENT}": all(
                    (r["confident_top1_agreement"] or 1.0) >= MIN_CONFIDENT for r in rs),
                f"{preset}: event top-4 set >= {MIN_EVENT_SET}": all(
                    (r["events_topk_set_agreement"] or 1.0) >= MIN_EVENT_SET for r in rs),
                f"{preset}: float acc after QAT >= before - {MAX_FLOAT_LOSS_POINTS} pt": all(
                    100 * (r["float_macro_accuracy_before_qat"] - r["float_macro_accuracy"]) <= MAX_FLOAT_LOSS_POINTS
                    for r in rs),
            }
            goals.update(g)
    out = {"seeds": args.seeds, "presets": args.presets, "clips_per_class": args.clips_per_class,
           "seconds": args.seconds, "epochs": epochs, "batch_size": args.batch_size, "qat": qcfg.to_dict(),
           "threads": args.threads, "rows": rows, "summary": summary, "goals": goals,
           "seconds_total": time.perf_counter() - t0}
    write_json(args.json, out)
    for name, ok in goals.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"int8_fidelity ({len(args.seeds)} seeds x {args.presets}): {goals_text(goals)}; "
          f"{out['seconds_total']:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


def _row_text(r: dict) -> str:
    def f(k: str) -> str:
        return "-" if r.get(k) is None else f"{r[k]:.3f}"

    times = ", ".join(f"{k} {r[k]:.0f} s" for k in ("train_s", "qat_s", "export_s") if k in r)
    return (f"  seed {r['seed']} {r['preset']:5s} {r['variant']:5s}: macro acc float {f('float_macro_accuracy')} "
            f"int8 {f('exported_macro_accuracy')}; agreement {f('window_top1_agreement')} (grid ceiling "
            f"{f('output_grid_agreement')}, confident {f('confident_top1_agreement')} on "
            f"{f('confident_fraction')}); events top-4 set {f('events_topk_set_agreement')}; input-grid floor "
            f"{f('input_grid_agreement')} (events {f('events_input_grid_set_agreement')}); {times}")


if __name__ == "__main__":
    raise SystemExit(main())
