"""The TFLite Micro + CMSIS-NN reference build (edge_asc.firmware_bench.tflm_ref) without TFLM's sources (CI has
none: they are fetched by hand, see docs/firmware.md): the driver's console report parsed on a sample captured from
a real run, the driver and linker script it writes, the one-line message naming missing sources, and
benchmarks/firmware.py saying "TFLM not available" and still succeeding without --tflm-root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from edge_asc.firmware_bench import tflm_ref
from edge_asc.firmware_bench.codegen import get_chip

ROOT = Path(__file__).resolve().parents[1]

#: the console of the TFLM + CMSIS-NN driver built for the 'micro-64' preset (seeded weights) on Cortex-M4 (mps2-an386,
#: qemu -icount shift=0), two inferences, captured from a real run
CAPTURED = Path(__file__).with_name("data") / "tflm_console_micro_m4.txt"


def test_the_drivers_console_report_is_parsed_into_instructions():
    text = CAPTURED.read_text()
    rep = tflm_ref.parse_console(text)
    assert rep["done"]
    ipt = rep["instructions_per_tick"]
    assert ipt == 40.0  # 2,000,000 instructions in 50,000 ticks: 1 ns per instruction, SysTick at 25 MHz on mps2
    assert rep["arena_bytes"] == 3 << 20 and rep["arena_used_bytes"] == 123_172
    assert rep["instructions"] == (2_171_189 * 40, 2_171_211 * 40)
    tags = [tag for tag, _ in rep["op_events"]]
    assert len(tags) == text.count("\nTFLM op ") and tags[0] == "CONV_2D" and tags[-1] == "FULLY_CONNECTED"
    assert {"MEAN", "SUB", "MUL", "REDUCE_MAX", "CONV_2D"} <= set(tags)
    # per-op events are summed over both inferences; their sum is a little under the two inferences' total
    assert 0.95 * sum(rep["instructions"]) < sum(i for _, i in rep["op_events"]) <= sum(rep["instructions"])
    assert rep["stack_bytes"] > 0


def test_a_console_without_the_report_is_a_one_line_error():
    with pytest.raises(tflm_ref.TflmNotAvailable, match="failed under QEMU: EK error: AllocateTensors failed"):
        tflm_ref.parse_console("EK calibrate 2000000 50000\nEK error: AllocateTensors failed (arena too small?)\n")


def test_missing_sources_are_named_with_the_repository_that_provides_them(tmp_path):
    (tmp_path / "tensorflow/lite/micro/tools/make").mkdir(parents=True)
    (tmp_path / "tensorflow/lite/micro/tools/make/Makefile").write_text("")
    with pytest.raises(tflm_ref.TflmNotAvailable) as exc:
        tflm_ref.check_sources(tmp_path)
    msg = str(exc.value)
    assert msg.startswith("TFLM not available") and "\n" not in msg
    assert "ARM-software/CMSIS-NN" in msg and "google/flatbuffers v25.9.23" in msg and "Makefile" not in msg


def test_the_driver_registers_exactly_the_models_op_types():
    methods = {"CONV_2D": ("AddConv2D", "Register_CONV_2D"), "MEAN": ("AddMean", "Register_MEAN")}
    src = tflm_ref.driver_source(["CONV_2D", "MEAN"], methods, n_ops=7, arena_bytes=12_345)
    assert not re.search(r"@[A-Z_]+@", src)
    assert "resolver.AddConv2D()" in src and "resolver.AddMean()" in src and src.count("resolver.Add") == 2
    assert "MicroMutableOpResolver<EK_N_OP_TYPES>" in src and "#define EK_N_OP_TYPES 2" in src
    assert "#define EK_ARENA_BYTES 12345" in src and "#define EK_MAX_EVENTS 15" in src
    assert "#define EK_FIND_ARENA 0" in src
    assert "#define EK_FIND_ARENA 1" in tflm_ref.driver_source(["MEAN"], methods, n_ops=1, arena_bytes=64,
                                                                find_arena=True)
    with pytest.raises(tflm_ref.TflmNotAvailable, match="no MicroMutableOpResolver method for SVDF"):
        tflm_ref.driver_source(["CONV_2D", "SVDF"], methods, n_ops=2, arena_bytes=1024)


def test_the_linker_script_keeps_cpp_constructors_and_uses_the_boards_memory():
    chip = get_chip("nrf52840")
    script = tflm_ref.linker_script(tflm_ref.board_chip(chip))
    assert "__init_array_start = .; KEEP(*(.init_array*)) __init_array_end = .;" in script
    assert f"LENGTH = {4 << 20}" in script and f"LENGTH = {chip.ram_bytes}" not in script


@pytest.mark.slow  # TensorFlow converts a model, the benchmark builds and runs it under QEMU: 18 s (44 s under load)
def test_benchmark_without_tflm_root_says_tflm_not_available_and_succeeds(tmp_path):
    require("tensorflow")
    require("tflite_micro")
    sys.path.insert(0, str(ROOT / "tests"))
    from firmware_codegen_models import MODELS

    model = tmp_path / "conv.tflite"
    model.write_bytes(MODELS["conv"]())
    out = tmp_path / "fw.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "firmware.py"), "--presets", "micro",
                           "--model", f"micro={model}", "--targets", "nrf52840", "--verify", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith("TFLM not available (no --tflm-root)")
    assert out.exists() and '"vs_tflm"' not in out.read_text() and '"tflm"' not in out.read_text()


def test_the_comparison_puts_op_types_side_by_side_with_the_goal_ratios():
    ref = tflm_ref.TflmReference(
        core="cortex-m4", qemu_machine="mps2-an386", instructions=1000, instructions_range=(1000, 1000),
        op_types=(("MEAN", 2, 600), ("CONV_2D", 1, 300), ("RESHAPE", 1, 100)), flash_bytes=200_000,
        ram_bytes=130_000, arena_bytes=120_000, arena_used_bytes=119_000, stack_bytes=2000, static_ram_bytes=128_000,
        n_inputs=3, bit_exact=True, fits_chip=True, library={})
    ours = [("CONV_2D", 1, 250), ("MEAN", 2, 150), ("RESHAPE", 1, 0), ("TRANSPOSE", 1, 40)]
    rows = tflm_ref.side_by_side(ours, ref)
    assert rows == [("MEAN", 2, 150, 2, 600), ("CONV_2D", 1, 250, 1, 300), ("RESHAPE", 1, 0, 1, 100),
                    ("TRANSPOSE", 1, 40, 0, 0)]
    kw = {"instructions": 440, "arena_bytes": 90_000, "ram_bytes": 97_500, "flash_bytes": 100_000, "ref": ref}
    assert tflm_ref.ratios(**kw) == pytest.approx({"instructions": 0.44, "arena": 0.75, "ram": 0.75, "flash": 0.5})
    text = tflm_ref.format_comparison("title", ours, **kw)
    assert "0.44   (goal <= 0.5)" in text and "0.75   (goal <= 0.75)" in text and "0.50   (goal <= 0.65)" in text
    assert "bit-exact with the Python interpreter on 3 seeded inputs" in text


def test_cli_tflm_root_needs_run(tmp_path, capsys):
    from edge_asc.cli import main

    code = main(["firmware", str(tmp_path / "m.tflite"), "--target", "nrf52840", "--out", str(tmp_path / "fw"),
                 "--host", "--tflm-root", str(tmp_path)])
    assert code == 2 and "--tflm-root needs --run" in capsys.readouterr().err
