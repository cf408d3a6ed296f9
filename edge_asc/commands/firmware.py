"""``edge-asc firmware MODEL --target T --out DIR [--host] [--run [--tflm-root DIR]] [--frontend [PRESET]] [--verify N]
[--json F]``.

Generate a self-contained C project of a full-int8 ``.tflite`` for a microcontroller (:mod:`edge_asc.firmware_bench.
codegen`): weights as const arrays, a static tensor arena, int8 kernels bit-exact with TensorFlow Lite Micro, a
``main`` running one inference between markers, and a linker script with the chip's flash and RAM. ``--host`` builds
it with the host's C compiler, ``--run`` for the chip with arm-none-eabi-gcc and runs it under QEMU; both compare the
outputs of seeded inputs with TFLite Micro's. ``--frontend`` adds the model's front end in C (the streaming log-mel of
its FrontendSpec fed from an int16 ring, producing the int8 input tensor) and an audio-in -> label-out program; with
``--run`` it is measured too: instructions per STFT hop, flash and RAM of front end + model linked for the chip,
audio-in -> label-out milliseconds and duty cycle (estimates at the chip's CPI and clock). With ``--run --tflm-root
DIR`` TFLite Micro + CMSIS-NN is also built from its sources in DIR for the same core and run on the same inputs
(:mod:`edge_asc.firmware_bench.tflm_ref`): a TFLM column per op type and the goal ratios (instructions, arena,
flash) are added. Exit codes: 1 not bit-exact, an
unsupported op or a failed build, 2 usage, 3 the firmware does not fit the chip (the linker's overflow).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGETS = ("nrf52840", "stm32l4r5", "stm32h7", "m55")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="full-int8 .tflite file")
    p.add_argument("--target", required=True, choices=TARGETS, help="microcontroller (its core, flash and RAM)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the generated C project")
    p.add_argument("--host", action="store_true", help="build with the host's C compiler and compare with TFLM")
    p.add_argument("--run", action="store_true",
                   help="build for the chip, run under qemu-system-arm, measure flash/RAM/instructions, compare")
    p.add_argument("--verify", type=int, default=20, metavar="N",
                   help="seeded inputs compared with TFLite Micro (default 20; 0 = no comparison)")
    p.add_argument("--seed", type=int, default=0, help="seed of the int8 inputs (default 0)")
    p.add_argument("--frontend", nargs="?", const="card", metavar="PRESET",
                   help="add the front end: the model card's (no value, or 'card'), or for a file without a card "
                        "a front-end preset fitted to the input tensor (e.g. edge)")
    p.add_argument("--stack-bytes", type=int, metavar="B", help="main stack reserved in RAM (default 4096)")
    p.add_argument("--install-toolchain", action="store_true",
                   help="with --run: apt-get install the arm toolchain and QEMU when missing (root)")
    p.add_argument("--tflm-root", metavar="DIR",
                   help="with --run: also build TFLite Micro + CMSIS-NN from DIR and compare (docs/firmware.md)")
    p.add_argument("--tflm-build", metavar="DIR",
                   help="where TFLM is built, reused across runs (default: the --tflm-root DIR/edge_asc_build)")
    p.add_argument("--json", metavar="F", help="write the report as JSON ('-' for stdout instead of the table)")


def _text(rep, top: int = 8) -> str:
    lines = [f"firmware for {rep.target} ({rep.core}) in {rep.out_dir}: {rep.n_ops} ops, {rep.macs:,} MACs, "
             f"arena {rep.arena_bytes:,} B (planned), constants {rep.weight_bytes:,} B"]
    for c in rep.comparisons:
        verdict = "bit-exact" if c["bit_exact"] else f"NOT bit-exact (max |diff| {c['max_abs_diff']})"
        lines.append(f"  {c['where']}: {c['n_equal']}/{c['n']} seeded inputs identical to TFLite Micro: {verdict}"
                     + (f"; {c['first_divergence']}" if c["first_divergence"] else ""))
    fp = rep.frontend_parity
    if fp:
        lines.append(f"  front end, host build on seeded audio: log-mel within {fp['max_db']:.2g} dB of "
                     f"edge_asc.frontend ({fp['frames']} frames); int8 input tensor equal in {fp['int8_equal']:,}/"
                     f"{fp['int8_elements']:,} elements (max step {fp['int8_max_step']})")
    if rep.instructions is not None:
        lines.append(f"  measured on QEMU {rep.qemu_machine}: flash {rep.flash_bytes:,} B of {rep.chip_flash_bytes:,}, "
                     f"RAM {rep.ram_bytes:,} B of {rep.chip_ram_bytes:,} (data+bss {rep.static_ram_bytes:,}, stack "
                     f"{rep.stack_bytes:,}), {rep.instructions:,} instructions per inference")
        lines.append(f"  estimate: {rep.est_ms:.1f} ms per inference at CPI {rep.cpi} and {rep.clock_hz / 1e6:g} MHz")
        big = rep.largest_conv()
        if big:
            lines.append(f"  largest conv (op {big.index}): {big.macs:,} MACs, "
                         f"{big.instructions_per_mac:.2f} instructions/MAC")
        fe = rep.frontend
        if fe:
            lines.append(f"  front end ({fe['source']}): {fe['hop_instructions']:,} instructions per STFT hop "
                         f"({fe['hop_s'] * 1e3:g} ms of audio; {fe['hop_ms']:.2f} ms, "
                         f"{100 * fe['frontend_duty_cycle']:.1f}% of the core), window layout "
                         f"{fe['window_instructions']:,}; with the model: flash {fe['flash_bytes']:,} B "
                         f"(+{fe['flash_added_bytes']:,}), RAM {fe['ram_bytes']:,} B (+{fe['ram_added_bytes']:,})")
            lines.append(f"  audio in -> label out: {fe['audio_to_label_ms']:.1f} ms after a window's last sample; "
                         f"duty cycle {100 * fe['duty_cycle']:.1f}% (a window every {fe['hop_frames']} hops = "
                         f"{fe['stride_s']:g} s); int8 input tensor equal to the Python front end's in "
                         f"{fe['int8_equal']:,}/{fe['int8_elements']:,} elements (max step {fe['int8_max_step']})")
        lines.append("  instructions per op type:")
        for name, count, ins, macs in rep.op_type_table()[:top]:
            share = 100.0 * ins / rep.instructions if rep.instructions else 0.0
            lines.append(f"    {name:<24} x{count:<3} {ins:>13,} ({share:4.1f}%)"
                         + (f"  {ins / macs:.2f}/MAC" if macs else ""))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.verify < 0:
        raise UsageError(f"--verify must be >= 0, got {args.verify}")
    if args.stack_bytes is not None and args.stack_bytes < 256:
        raise UsageError(f"--stack-bytes must be >= 256, got {args.stack_bytes}")
    from ..firmware_bench.codegen import firmware, install_arm_toolchain

    if args.run and args.install_toolchain:
        install_arm_toolchain()
    if args.tflm_root and not args.run:
        raise UsageError("--tflm-root needs --run (TFLM is compared on the emulated core)")
    rep = firmware(args.model, args.target, args.out, host=args.host, run=args.run, n_verify=args.verify,
                   seed=args.seed, stack_bytes=args.stack_bytes, frontend=args.frontend)
    out = rep.to_dict()
    tflm_text = ""
    if args.tflm_root:
        tflm_text, out["tflm"] = _tflm(rep, args)
    if args.json == "-":
        print(json.dumps(out, indent=1))
    else:
        print(_text(rep) + tflm_text, end="")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _tflm(rep, args: argparse.Namespace) -> tuple[str, dict | None]:
    """TFLite Micro + CMSIS-NN on the same file, core and seeded inputs: (text, JSON); 'TFLM not available: ...'
    when its sources or build are missing (not an error: the firmware's own results stand)."""
    from ..firmware_bench import tflm_ref
    from ..firmware_bench.codegen import get_chip
    from ..firmware_bench.codegen.verify import seeded_inputs, tflm_reference

    model = Path(args.model)
    inputs = seeded_inputs(model.read_bytes(), max(args.verify, 1), args.seed)
    try:
        build = Path(args.tflm_build) if args.tflm_build else Path(args.tflm_root) / "edge_asc_build"
        ref = tflm_ref.measure(model, get_chip(args.target), args.tflm_root, build, inputs,
                               expected=tflm_reference(model, inputs)[0] if args.verify else None)
    except tflm_ref.TflmNotAvailable as exc:
        return f"  {exc}\n", None
    ours = [(name, count, ins) for name, count, ins, _ in rep.op_type_table()]
    kw = {"instructions": rep.instructions, "arena_bytes": rep.arena_bytes, "ram_bytes": rep.ram_bytes,
          "flash_bytes": rep.flash_bytes, "ref": ref}
    text = tflm_ref.format_comparison("ours vs TFLite Micro + CMSIS-NN (same file, core and inputs):", ours, **kw)
    return "".join(f"  {ln}\n" for ln in text.splitlines()), {**ref.to_json(), "vs_tflm": tflm_ref.ratios(**kw)}
