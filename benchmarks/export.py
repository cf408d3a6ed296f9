"""Export goals: a trained preset on the synthetic dataset -> full int8 TFLite, verified.

    python benchmarks/export.py --preset edge --json results/export_edge.json
    python benchmarks/export.py --preset paper --epochs 1 --clips-per-class 15 --seconds 10 --calib-size 40 \
        --json results/export_paper.json

Goals (issue 5) for ``edge``: top-1 agreement float vs int8 >= 99 %, macro-accuracy drop <= 0.5 points, int8 file
<= 128 KB (131,072 bytes), export wall time <= 120 s (calibration + ONNX + onnx2tf + int8 conversion + card +
verification). ``paper``: exports to int8 and verifies; its size is reported (it does not fit 128 KB).

Results so far (a table of runs, and why the agreement goal is out of reach for an int8-output export of this
model): ``docs/int8-fidelity.md``.

The dataset is synthesised (``edge_asc.data.synth``) and the model trained (``edge_asc.train``) into ``--work``
(default runs/bench-export) unless they already exist there; only the export is timed.
"""

from __future__ import annotations

import time
from pathlib import Path

from _util import goals_text, parser, write_json

SIZE_GOAL = 128 * 1024
AGREEMENT_GOAL = 0.99
DROP_GOAL_POINTS = 0.5
WALL_GOAL_S = 120.0


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="edge", help="model preset (default edge)")
    p.add_argument("--work", default="runs/bench-export", help="folder for the dataset, runs and models")
    p.add_argument("--data", help="use this dataset folder instead of synthesising one")
    p.add_argument("--run", help="use this trained run directory instead of training one")
    p.add_argument("--clips-per-class", type=int, default=100)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--sample-rate", type=int, default=None, help="default: the preset's front-end rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64, help="training batch (the paper preset needs ~8 in 8 GB)")
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--verify-clips", type=int, default=None, help="cap on held-out clips verified (default: all)")
    p.add_argument("--mode", default="int8", choices=("int8", "dynamic-range", "float", "edgetpu"))
    p.add_argument("--copy-to", metavar="FILE", help="also copy the exported model here")
    args = p.parse_args()

    from edge_asc.data import load_dataset
    from edge_asc.export import ExportConfig, export_checkpoint
    from edge_asc.model import resolve_preset
    from edge_asc.spec import frontend_preset

    work = Path(args.work)
    spec = frontend_preset(resolve_preset(args.preset).frontend)  # sample rate only; n_mels does not change it
    sr = args.sample_rate or spec.sample_rate
    if args.data:
        data = Path(args.data)
    else:
        data = work / f"synth-{args.clips_per_class}x{args.seconds:g}s-{sr}-seed{args.seed}"
        if not (data / "synth.json").exists():
            from edge_asc.data.synth import synthesize

            t = time.perf_counter()
            synthesize(data, clips_per_class=args.clips_per_class, seconds=args.seconds, sample_rate=sr,
                       seed=args.seed)
            print(f"synthesised {data} in {time.perf_counter() - t:.1f} s", flush=True)
    ds = load_dataset(data)
    run = Path(args.run) if args.run else work / f"run-{args.preset}-{data.name}-e{args.epochs}"
    train_s = None
    if not (run / "checkpoint.json").exists():
        from edge_asc.train.loop import TrainConfig, train

        t = time.perf_counter()
        train(ds, run, TrainConfig(preset=args.preset, epochs=args.epochs, seed=args.seed, val_every=0,
                                           batch_size=args.batch_size),
              progress=False)
        train_s = time.perf_counter() - t
        print(f"trained {run} in {train_s:.1f} s", flush=True)
    out = work / f"{args.preset}_{args.mode.replace('-', '_')}.tflite"
    t = time.perf_counter()
    res = export_checkpoint(run, out, config=ExportConfig(mode=args.mode, min_agreement=0.0,
                                                          calib_size=args.calib_size,
                                                          verify_max_clips=args.verify_clips),
                            dataset=ds, log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t
    v = res.verification
    if args.copy_to:
        import shutil

        Path(args.copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, args.copy_to)
    results = {
        "preset": args.preset, "mode": args.mode, "dataset": str(data), "run": str(run), "model": str(out),
        "train_s": train_s, "export_wall_s": wall, "timings_s": res.report.timings_s,
        "size_bytes": res.report.size_bytes, "param_count": res.card.param_count,
        "macs_per_inference": res.card.macs_per_inference, "verification": v.to_dict(),
        "goals": {
            "top1_agreement>=0.99": v.window_top1_agreement >= AGREEMENT_GOAL,
            "macro_acc_drop<=0.5pt": v.macro_accuracy_drop <= DROP_GOAL_POINTS,
            "size<=128KB": res.report.size_bytes <= SIZE_GOAL,
            "export_wall<=120s": wall <= WALL_GOAL_S,
        },
    }
    write_json(args.json, results)
    ev = ""
    if v.events_topk_set_agreement is not None:
        ev = f", events top-k set {v.events_topk_set_agreement:.3f} top-1 {v.events_top1_agreement:.3f}"
    if v.output_grid_agreement is not None:
        ev += f", int8 output grid ceiling {v.output_grid_agreement:.3f}"
    if v.confident_top1_agreement is not None:
        ev += f", {v.confident_top1_agreement:.3f} on windows with margin >= 0.5 ({v.confident_fraction:.0%})"
    print(f"export {args.preset} {args.mode}: {res.report.size_bytes:,} B, top-1 agreement "
          f"{v.window_top1_agreement:.4f} ({v.n_windows} windows), macro acc {v.float_macro_accuracy:.4f} -> "
          f"{v.exported_macro_accuracy:.4f} ({v.macro_accuracy_drop:+.2f} pt), wall {wall:.1f} s{ev}; goals: "
          + goals_text(results["goals"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
