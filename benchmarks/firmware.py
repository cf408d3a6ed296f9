"""What the generated firmware takes on each microcontroller, measured: each preset with seeded random weights is
exported to full int8 (as ``benchmarks/int8_graph.py`` does), turned into a C project by ``edge-asc firmware``,
built for each target's core with its real flash and RAM in the linker script, run under QEMU (``-icount shift=0``)
on seeded inputs and compared bit for bit with TFLite Micro. Reported per target and model: flash, RAM (data + bss +
stack high-water mark), instructions per inference and of the largest convolution per MAC (measured), milliseconds
at the target's clock and assumed CPI (estimate) and the duty cycle for the runtime's default hop (half a window).

With the front end on the device (the model preset's FrontendSpec in C, ``edge-asc firmware --frontend``): its
instructions per STFT hop (measured), the flash and RAM it adds to the model's link, and per target the audio-in ->
label-out time (one hop + window layout + model, after a window's last sample) and the duty cycle with it
((STFT hops per window stride x hop + layout + model) / stride), both estimates at the chip's CPI and clock.

Reference points: TFLite Micro's arena for the same file (measured with its Python interpreter) and the TFLM +
CMSIS-NN instruction count that ``edge-asc report`` estimates from its measured per-op table (``targets.toml``,
``tflm-cmsis-nn-armv7em``). With ``--tflm-root DIR`` (TFLM's sources with its third-party folders, see
``docs/firmware.md``) TFLite Micro + CMSIS-NN itself is built for each core and measured on the same file and inputs
(:mod:`edge_asc.firmware_bench.tflm_ref`): instructions per op type side by side and the ratios of issue 17's goals
(instructions <= 0.5x, arena <= 0.75x, flash <= 0.65x); without it the script says "TFLM not available" and goes on.
``--model PRESET=FILE`` measures that ``.tflite`` (e.g. a trained one) instead of the seeded-weights export.

    python benchmarks/firmware.py [--presets micro,edge] [--targets nrf52840,stm32l4r5,stm32h7,m55] [--verify 20]
                                  [--model micro=runs/demo/model.tflite] [--tflm-root DIR [--tflm-build DIR]]
                                  --json runs/bench/firmware.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _util import goals_text, parser, write_json

#: flash of the TFLM + CMSIS-NN library on Cortex-M4 (GCC 12.2 -O2), measured in the issue-17 spike: the reference
#: firmware's flash is this plus the model file
TFLM_LIBRARY_FLASH_BYTES = 156_000


def _hop_seconds(preset: str) -> float:
    """The runtime's default hop for a model preset: half a window (``default_hop_frames``) of its front end."""
    from edge_asc.frontend.windows import default_hop_frames
    from edge_asc.model import resolve_preset
    from edge_asc.spec import frontend_preset

    p = resolve_preset(preset)
    f = frontend_preset(p.frontend)
    return default_hop_frames(p.config.n_frames) * f.hop_length / f.sample_rate


def _tflm_reference(model: Path, target_key: str | None) -> dict:
    from edge_asc.firmware_bench.graph import read_graph
    from edge_asc.firmware_bench.targets import load_targets
    from edge_asc.firmware_bench.tflm import measure_arena

    arena = measure_arena(model)
    out = {"tflm_arena_bytes": arena.arena_bytes if arena.runs else None,
           "tflm_flash_bytes_est": TFLM_LIBRARY_FLASH_BYTES + model.stat().st_size}
    targets = load_targets()
    if target_key in targets:
        t = targets[target_key]
        est = t.estimate(read_graph(model).layers)
        out["tflm_cmsis_instructions_est"] = round(est.cycles / t.cpi) if t.cpi else None
    return out


def measure(preset: str, targets: list[str], n_verify: int, work: Path, model: Path | None = None) -> list[dict]:
    from edge_asc.export import export_untrained_int8
    from edge_asc.firmware_bench.codegen import LinkOverflowError, firmware, get_chip
    from edge_asc.model import resolve_preset

    cfg = resolve_preset(preset).config
    (work / preset).mkdir(parents=True, exist_ok=True)
    if model is None:
        model, _ = export_untrained_int8(cfg, work / preset)
    hop_s = _hop_seconds(preset)
    rows = []
    for key in targets:
        chip = get_chip(key)
        ref = _tflm_reference(model, chip.report_target or ("nrf52840" if chip.core == "cortex-m4" else None))
        row = {"preset": preset, "target": key, "core": chip.core, "hop_s": hop_s, **ref}
        try:
            rep = firmware(model, key, work / preset / f"fw-{key}", run=True, n_verify=n_verify,
                           frontend=_frontend_preset(preset))
        except LinkOverflowError as exc:
            row.update(fits=False, link_error=str(exc), region=exc.region, overflow_bytes=exc.overflow_bytes)
            rows.append(row)
            continue
        big = rep.largest_conv()
        row.update(
            fits=True, bit_exact=rep.bit_exact, n_verified=n_verify, flash_bytes=rep.flash_bytes,
            ram_bytes=rep.ram_bytes, arena_bytes=rep.arena_bytes, stack_bytes=rep.stack_bytes,
            instructions=rep.instructions, macs=rep.macs,
            largest_conv_instructions_per_mac=big.instructions_per_mac if big else None,
            est_ms=rep.est_ms, cpi=rep.cpi, clock_hz=rep.clock_hz, duty_cycle=rep.est_ms / 1e3 / hop_s,
            op_types=[{"op": n, "count": c, "instructions": i, "macs": m} for n, c, i, m in rep.op_type_table()])
        if ref.get("tflm_cmsis_instructions_est"):
            row["instructions_vs_tflm_cmsis_est"] = rep.instructions / ref["tflm_cmsis_instructions_est"]
        if ref.get("tflm_arena_bytes"):
            row["arena_vs_tflm"] = rep.arena_bytes / ref["tflm_arena_bytes"]
        row["flash_vs_tflm_est"] = rep.flash_bytes / ref["tflm_flash_bytes_est"]
        row.update(_frontend_columns(rep))
        rows.append(row)
    return rows


def _model_files(specs: list[str]) -> dict[str, Path]:
    """``--model PRESET=FILE`` options -> {preset: file}."""
    out = {}
    for spec in specs:
        preset, sep, file = spec.partition("=")
        if not sep or not Path(file).is_file():
            raise SystemExit(f"--model wants PRESET=FILE with an existing .tflite file, got {spec!r}")
        out[preset] = Path(file)
    return out


def _tflm_measured(rows: list[dict], files: dict[str, Path], root: str, build: Path, n_verify: int) -> None:
    """Build TFLite Micro + CMSIS-NN for each (model, core) that fits and add its measurements and the goal ratios to
    those rows (``tflm``, ``vs_tflm``); prints the side-by-side tables. A missing source or a failed build prints
    "TFLM not available: ..." and leaves the rows as they are."""
    from edge_asc.firmware_bench import tflm_ref
    from edge_asc.firmware_bench.codegen import get_chip
    from edge_asc.firmware_bench.codegen.verify import seeded_inputs, tflm_reference

    done: dict[tuple[str, str], tflm_ref.TflmReference] = {}
    for r in rows:
        if not r["fits"]:
            continue
        key = (r["preset"], r["core"])
        if key not in done:
            model = files[r["preset"]]
            inputs = seeded_inputs(model.read_bytes(), max(n_verify, 1), 0)
            try:
                done[key] = tflm_ref.measure(model, get_chip(r["target"]), root, build, inputs,
                                             expected=tflm_reference(model, inputs)[0])
            except tflm_ref.TflmNotAvailable as exc:
                print(exc if str(exc).startswith("TFLM not available") else f"TFLM not available: {exc}")
                return
        ref = done[key]
        ours = [(o["op"], o["count"], o["instructions"]) for o in r["op_types"]]
        kw = {"instructions": r["instructions"], "arena_bytes": r["arena_bytes"], "ram_bytes": r["ram_bytes"],
              "flash_bytes": r["flash_bytes"], "ref": ref}
        r["tflm"] = ref.to_json()
        r["vs_tflm"] = tflm_ref.ratios(**kw)
        r["tflm_side_by_side"] = [dict(zip(("op", "ours_count", "ours_instructions", "tflm_count",
                                            "tflm_instructions"), row)) for row in tflm_ref.side_by_side(ours, ref)]
        print()
        print(tflm_ref.format_comparison(f"{r['preset']} on {r['target']} ({r['core']}): ours vs TFLite Micro + "
                                         "CMSIS-NN, instructions per inference (measured, qemu -icount)", ours, **kw))


def _tflm_goals(rows: list[dict]) -> dict[str, bool]:
    """Issue 17's goals against the measured TFLM build (only when one was measured)."""
    from edge_asc.firmware_bench.tflm_ref import GOALS

    measured = [r for r in rows if r.get("vs_tflm")]
    if not measured:
        return {}
    return {f"{what} <= {limit}x TFLM+CMSIS-NN (measured build)": all(r["vs_tflm"][what] <= limit for r in measured)
            for what, limit in GOALS.items()}


def _table(rows: list[dict]) -> str:
    head = (f"{'model':<6} {'target':<10} {'flash B':>9} {'RAM B':>9} {'arena B':>9} {'instr/inf':>13} "
            f"{'conv i/MAC':>10} {'est ms':>8} {'duty':>7} {'bit-exact':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r["fits"]:
            lines.append(f"{r['preset']:<6} {r['target']:<10} does not fit: {r['link_error']}")
            continue
        lines.append(f"{r['preset']:<6} {r['target']:<10} {r['flash_bytes']:>9,} {r['ram_bytes']:>9,} "
                     f"{r['arena_bytes']:>9,} {r['instructions']:>13,} "
                     f"{r['largest_conv_instructions_per_mac'] or float('nan'):>10.2f} {r['est_ms']:>8.1f} "
                     f"{100 * r['duty_cycle']:>6.1f}% {r['bit_exact']!s:>9}")
    return "\n".join(lines)


def _frontend_preset(preset: str) -> str:
    """The front-end preset of a model preset (the exported file has no card): its FrontendSpec on the device."""
    from edge_asc.model import resolve_preset

    return resolve_preset(preset).frontend


def _frontend_columns(rep) -> dict:
    """The front end's figures of a firmware run (``FirmwareReport.frontend``), flattened for the table and JSON:
    instructions per STFT hop (measured, qemu), flash and RAM it adds to the model's link, and with the model:
    audio-in -> label-out ms (one hop + window layout + model, after a window's last sample) and duty cycle
    ((hops per window stride x hop + layout + model) / stride), estimates at the chip's CPI and clock."""
    fe = rep.frontend
    if not fe:
        return {}
    return {"frontend_hop_instructions": fe["hop_instructions"], "frontend_hop_ms": fe["hop_ms"],
            "frontend_window_instructions": fe["window_instructions"],
            "frontend_flash_added_bytes": fe["flash_added_bytes"], "frontend_ram_added_bytes": fe["ram_added_bytes"],
            "app_flash_bytes": fe["flash_bytes"], "app_ram_bytes": fe["ram_bytes"],
            "audio_to_label_ms": fe["audio_to_label_ms"], "duty_cycle_with_frontend": fe["duty_cycle"],
            "frontend_int8_equal": fe["int8_equal"] / fe["int8_elements"] if fe["int8_elements"] else None,
            "frontend_int8_max_step": fe["int8_max_step"], "frontend_stride_s": fe["stride_s"]}


def _frontend_table(rows: list[dict]) -> str:
    head = (f"{'model':<6} {'target':<10} {'FE instr/hop':>12} {'FE ms/hop':>9} {'+flash B':>9} {'+RAM B':>8} "
            f"{'app flash B':>11} {'app RAM B':>10} {'audio->label ms':>15} {'duty':>7} {'int8 equal':>10}")
    lines = ["front end on the device (int16 ring -> log-mel -> int8 input tensor), with the model:", head,
             "-" * len(head)]
    for r in rows:
        if not r.get("frontend_hop_instructions"):
            continue
        lines.append(f"{r['preset']:<6} {r['target']:<10} {r['frontend_hop_instructions']:>12,} "
                     f"{r['frontend_hop_ms']:>9.2f} {r['frontend_flash_added_bytes']:>9,} "
                     f"{r['frontend_ram_added_bytes']:>8,} {r['app_flash_bytes']:>11,} {r['app_ram_bytes']:>10,} "
                     f"{r['audio_to_label_ms']:>15.1f} {100 * r['duty_cycle_with_frontend']:>6.1f}% "
                     f"{100 * r['frontend_int8_equal']:>9.2f}%")
    return "\n".join(lines)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default="micro,edge", help="comma-separated presets (default micro,edge)")
    p.add_argument("--targets", default="nrf52840,stm32l4r5,stm32h7,m55", help="comma-separated firmware targets")
    p.add_argument("--verify", type=int, default=20, help="seeded inputs compared with TFLite Micro (default 20)")
    p.add_argument("--tflm-root", metavar="DIR", help="TFLite Micro + CMSIS-NN sources for a reference build")
    p.add_argument("--tflm-build", metavar="DIR", help="where TFLM is built (default: DIR/edge_asc_build)")
    p.add_argument("--model", action="append", default=[], metavar="PRESET=FILE",
                   help="measure this .tflite for PRESET instead of exporting it with seeded weights (repeatable)")
    args = p.parse_args()
    models = _model_files(args.model)
    if not args.tflm_root:
        print("TFLM not available (no --tflm-root): reference figures are TFLM's measured arena and the report's "
              "TFLM + CMSIS-NN instruction estimate")
    from edge_asc.firmware_bench.codegen import install_arm_toolchain

    if not install_arm_toolchain():
        print("arm-none-eabi-gcc / qemu-system-arm not available (install gcc-arm-none-eabi "
              "libnewlib-arm-none-eabi qemu-system-arm): nothing measured")
        write_json(args.json, {"rows": [], "skipped": "no arm toolchain"})
        return 0
    targets = args.targets.split(",")
    with tempfile.TemporaryDirectory(prefix="edge_asc_fw_bench_") as d:
        rows = [r for preset in args.presets.split(",")
                for r in measure(preset, targets, args.verify, Path(d), models.get(preset))]
        print(_table(rows))
        print(_frontend_table(rows))
        if args.tflm_root:
            build = Path(args.tflm_build) if args.tflm_build else Path(args.tflm_root) / "edge_asc_build"
            files = {preset: models.get(preset) or Path(d) / preset / "model.tflite"
                     for preset in args.presets.split(",")}
            _tflm_measured(rows, files, args.tflm_root, build, args.verify)
    for r in rows:
        if r["fits"] and r.get("instructions_vs_tflm_cmsis_est"):
            print(f"{r['preset']} on {r['target']}: instructions {r['instructions_vs_tflm_cmsis_est']:.2f}x the "
                  f"TFLM+CMSIS-NN estimate ({r['tflm_cmsis_instructions_est']:,}), arena "
                  f"{r.get('arena_vs_tflm', float('nan')):.2f}x TFLM's measured arena "
                  f"({r['tflm_arena_bytes']:,} B), flash {r['flash_vs_tflm_est']:.2f}x TFLM's (estimate: "
                  f"{TFLM_LIBRARY_FLASH_BYTES:,} B library + model file)")
    fit = [r for r in rows if r["fits"]]
    goals = {"bit-exact with TFLite Micro on every target that fits": all(r["bit_exact"] for r in fit),
             "largest conv <= 6 instructions/MAC on the Cortex-M4":
                 all((r["largest_conv_instructions_per_mac"] or 0) <= 6 for r in fit if r["core"] == "cortex-m4"),
             "arena <= 0.75x TFLM's": all(r.get("arena_vs_tflm", 0) <= 0.75 for r in fit),
             "instructions <= 0.5x TFLM+CMSIS-NN (estimate)":
                 all(r.get("instructions_vs_tflm_cmsis_est", 0) <= 0.5 for r in fit
                     if r.get("instructions_vs_tflm_cmsis_est"))}
    goals.update(_tflm_goals(rows))
    print("goals:", goals_text(goals))
    write_json(args.json, {"rows": rows, "goals": goals})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
