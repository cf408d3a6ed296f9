"""What the int8-native graph costs on device, per preset, without training: each preset with seeded random weights
is exported to full int8 through the product's chain (calibrated on seeded Gaussian windows, ops reordered for
memory as ``edge-asc export`` does), then the file's ops,
activation dtypes, TFLite Micro arena (measured), ``edge-asc fit``'s arena estimate, Vela's CPU fallback ops and the
Edge TPU op check are reported. Arena and op mapping depend on the graph, not on the weights.

    python benchmarks/int8_graph.py [--presets edge,micro] --json runs/bench/int8_graph.json
"""

from __future__ import annotations

import tempfile
from collections import Counter

from _util import goals_text, parser, write_json


def measure(name: str) -> dict:
    from edge_asc.export import export_untrained_int8
    from edge_asc.export.convert import op_summary, tflite_ops
    from edge_asc.export.edgetpu import check_edgetpu
    from edge_asc.firmware_bench.fit import arena_estimate
    from edge_asc.firmware_bench.tflm import measure_arena
    from edge_asc.firmware_bench.vela import run_vela
    from edge_asc.model import resolve_preset

    cfg = resolve_preset(name).config
    with tempfile.TemporaryDirectory() as d:
        path, schedule = export_untrained_int8(cfg, d)
        buf = path.read_bytes()
        ops = tflite_ops(buf)
        arena = measure_arena(path)
        vela = run_vela(path)
        tpu = check_edgetpu(buf, path)
    return {
        "preset": name, "ops": len(ops), "op_counts": dict(Counter(o.name for o in ops)),
        "non_int8_activations": op_summary(ops)["non_int8_activations"],
        "tflm_arena_bytes": arena.arena_bytes if arena.runs else None,
        "tflm_head_bytes": arena.head_bytes if arena.runs else None,
        "peak_bytes": schedule.peak_bytes, "converter_order_peak_bytes": schedule.original_peak_bytes,
        "fit_arena_estimate_bytes": arena_estimate(cfg),
        "vela_cpu_ops": [c.op for c in vela.cpu_ops] if vela is not None else None,
        "edgetpu_unmapped": tpu.unsupported,
    }


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default="edge,micro", help="comma-separated presets (default edge,micro)")
    args = p.parse_args()
    rows = [measure(n) for n in args.presets.split(",")]
    for r in rows:
        est = r["fit_arena_estimate_bytes"] / r["tflm_arena_bytes"] if r["tflm_arena_bytes"] else float("nan")
        print(f"{r['preset']}: {r['ops']} ops, non-int8 activations {r['non_int8_activations'] or 'none'}, "
              f"activation peak {r['converter_order_peak_bytes']:,} -> {r['peak_bytes']:,} B reordered, "
              f"TFLM arena {r['tflm_arena_bytes']:,} B (fit estimate x{est:.3f}), "
              f"Vela CPU ops {r['vela_cpu_ops']}, Edge TPU unmapped {r['edgetpu_unmapped'] or 'none'}")
    goals = {"only int8 activations": all(not r["non_int8_activations"] for r in rows),
             "every op on the Edge TPU": all(not r["edgetpu_unmapped"] for r in rows),
             "micro arena <= 200 KiB": all(r["tflm_arena_bytes"] <= 200 * 1024 for r in rows if r["preset"] == "micro"),
             "edge arena <= 256 KiB": all(r["tflm_arena_bytes"] <= 256 * 1024 for r in rows if r["preset"] == "edge")}
    print("goals:", goals_text(goals))
    write_json(args.json, {"rows": rows, "goals": goals})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
