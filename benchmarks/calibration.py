"""Int8 accuracy and float-vs-int8 agreement as a function of calibration size and selection strategy.

    python benchmarks/calibration.py --run runs/bench-export/run-edge-... --data runs/bench-export/synth-... \
        --sizes 10 50 200 500 --json results/calibration.json

The model is converted to ONNX and by onnx2tf to a SavedModel once; for every (size, strategy) a calibration set is
drawn from the training split (``edge_asc.calibration.build_calibration``, seed fixed), the SavedModel is quantised
to full int8 with it, the ModelCard embedded, and the result verified on the held-out split through the runtime
(``edge_asc.export.verify.verify_export``), exactly as ``edge-asc export --int8`` does. Results so far:
``docs/int8-fidelity.md``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _util import parser, write_json


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="trained run directory (edge-asc train)")
    p.add_argument("--data", required=True, help="the dataset it was trained on")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200, 500])
    p.add_argument("--strategies", nargs="+", default=["stratified", "random"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verify-clips", type=int, default=None, help="cap on held-out clips (default: all)")
    args = p.parse_args()

    import numpy as np

    from edge_asc.calibration import build_calibration, save_calibration
    from edge_asc.data import load_dataset
    from edge_asc.export import build_card
    from edge_asc.export.convert import _produced, _run, run_onnx2tf, to_onnx
    from edge_asc.export.verify import verify_export
    from edge_asc.tflite_meta import embed_model_card
    from edge_asc.train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(args.run)
    ds = load_dataset(args.data)
    f = meta.frontend
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-asc-calib-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        example = np.zeros((1, f.channels, f.n_mels, meta.window_frames), np.float32)
        onnx = to_onnx(model, example, work / "model.onnx")
        run_onnx2tf(onnx, work, "float", sample_nhwc=example.transpose(0, 2, 3, 1))  # no MS-COCO download
        print(f"ONNX + onnx2tf SavedModel in {time.perf_counter() - t:.1f} s", flush=True)
        for strategy in args.strategies:
            for size in args.sizes:
                t = time.perf_counter()
                cs = build_calibration(ds, f, meta.window_frames, size=size, seed=args.seed, strategy=strategy,
                                       labels=meta.labels)
                cdir = save_calibration(cs, work / f"calib-{strategy}-{size}")
                target = work / f"m-{strategy}-{size}.tflite"
                _run([__import__("sys").executable, "-m", "edge_asc.export._tflite_convert", str(work / "onnx2tf"),
                      str(target), "int8", str(cdir / "calib.npy"), str(list(f.norm_mean)), str(list(f.norm_std))],
                     "TFLite int8 conversion", work, 900, None)
                raw = _produced(target, "the TFLite converter", None).read_bytes()
                card = build_card(raw, meta, calibration_sha256=cs.manifest.sha256, provenance={"bench": True})
                target.write_bytes(embed_model_card(raw, card))
                conv_s = time.perf_counter() - t
                v = verify_export(target, model, ds, meta.labels, mode="int8", max_clips=args.verify_clips)
                row = {"strategy": strategy, "size": size, "convert_s": conv_s,
                       "top1_agreement": v.window_top1_agreement,
                       "float_macro_acc": v.float_macro_accuracy, "int8_macro_acc": v.exported_macro_accuracy,
                       "macro_acc_drop_points": v.macro_accuracy_drop, "max_logit_error": v.max_logit_error,
                       "mean_logit_error": v.mean_logit_error, "events_topk_set_agreement": v.events_topk_set_agreement,
                       "events_top1_agreement": v.events_top1_agreement, "n_windows": v.n_windows}
                rows.append(row)
                print(f"{strategy:10s} {size:4d}: agreement {row['top1_agreement']:.4f}, int8 macro acc "
                      f"{row['int8_macro_acc']:.4f} (float {row['float_macro_acc']:.4f}), mean logit error "
                      f"{row['mean_logit_error']:.4f}", flush=True)
    write_json(args.json, {"run": args.run, "data": args.data, "preset": meta.preset, "rows": rows})
    best = max(rows, key=lambda r: (r["top1_agreement"], -r["size"]))
    print(f"calibration: {len(rows)} settings; best agreement {best['top1_agreement']:.4f} "
          f"({best['strategy']}, {best['size']} windows); "
          + "; ".join(f"{r['strategy'][:5]}/{r['size']}={r['top1_agreement']:.3f}" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
