"""`edge-asc demo --quick`: the whole pipeline end to end on a fresh synthetic dataset (the README's main job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_asc.cli import main
from edge_asc.spec import TAU_LABELS


def _run_demo(cwd: Path, out: str, threads: int) -> tuple[dict, str]:
    """`edge-asc demo --quick` in a fresh process (as `make demo` runs it: torch not loaded before the demo starts)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    proc = subprocess.run([sys.executable, "-m", "edge_asc", "demo", "--quick", "--out", out, "--no-vela",
                           "--threads", str(threads)], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((cwd / out / "summary.json").read_text()), proc.stdout


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    # a relative --out, as `make demo` uses (once joined dataset roots twice)
    summary, printed = _run_demo(cwd, "demo", threads=2)
    return cwd / "demo", summary, printed


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_summarises(quick_demo):
    out, s, printed = quick_demo
    for key, path in s["artifacts"].items():
        assert Path(path).is_absolute() and Path(path).exists(), key
    # the export ran with 'edge-asc export's default gate, and the summary shows each clause
    from edge_asc.export import ExportConfig

    gate = s["int8"]["gate"]
    assert s["int8"]["gate_passed"] == gate["passed"] == all(c["passed"] for c in gate["clauses"])
    defaults = ExportConfig()
    thresholds = {c["name"]: c["threshold"] for c in gate["clauses"]}
    assert thresholds["accuracy_drop"] == defaults.max_accuracy_drop
    assert thresholds["confident_agreement"] == defaults.min_confident_agreement
    assert thresholds["event_set_agreement"] == defaults.min_event_set_agreement
    assert s["params"]["epochs"] == 10 and s["float"]["macro_accuracy"] > 0.1  # above chance for 10 classes
    assert s["int8"]["file_bytes"] == (out / "model_int8.tflite").stat().st_size
    assert 0.0 <= s["int8"]["top1_agreement"] <= 1.0 and 0.0 <= s["int8"]["output_grid_agreement"] <= 1.0
    assert s["classified_clip"]["predicted"] in TAU_LABELS
    assert set(s["timings_s"]) >= {"synthesise", "train", "export", "report", "classify", "total"}
    assert s["int8"]["non_int8_activations"] == [] and s["int8"]["activation_peak_bytes"] > 0
    assert "$ edge-asc train --data" in printed and "edge-asc demo summary" in printed
    assert "every activation tensor is int8" in printed
    assert "int8 gate" in printed and all(f"  {c['name']} " in printed for c in gate["clauses"])
    assert s["cpu_math"]["portable"] and s["cpu_math"]["threads"] == 2 and "reproducible  yes" in printed
    # with the ARM toolchain (make test installs it; required under CI) the demo measures its chip: the generated
    # firmware runs under QEMU and the report's STM32H7 row takes its instructions, flash and RAM
    from edge_asc.firmware_bench.codegen.runner import arm_toolchain_present

    if arm_toolchain_present() or os.environ.get("CI"):
        assert "$ edge-asc firmware" in printed and "firmware_json" in s["artifacts"]
        (h7,) = [t for t in s["targets"] if t["name"].startswith("STM32H7")]
        assert h7["provenance"] == "firmware (qemu)" and 0 < h7["duty_cycle"] < 1


def _reproducible_part(s: dict) -> dict:
    """The summary without what legitimately differs between two runs: paths, wall times, host latencies, threads."""
    s = {k: v for k, v in s.items() if k not in ("artifacts", "timings_s", "host_latency_ms_1_thread")}
    s["targets"] = [t for t in s["targets"] if t["provenance"] != "measured"]
    s["cpu_math"] = {k: v for k, v in s["cpu_math"].items() if k != "threads"}
    s["classified_clip"] = {k: v for k, v in s["classified_clip"].items() if k != "file"}
    return s


@pytest.mark.slow
def test_quick_demo_gives_the_same_numbers_with_another_thread_count(quick_demo, tmp_path):
    """What a newcomer on another machine gets: a second fresh run with 1 thread instead of 2 prints the same
    summary (PyTorch's CPU math capped at AVX2 makes the float results independent of the thread count and of
    the machine's vector width)."""
    _, first, _ = quick_demo
    second, _ = _run_demo(tmp_path, "demo", threads=1)
    assert second["cpu_math"]["threads"] == 1
    assert _reproducible_part(second) == _reproducible_part(first)


def test_demo_refuses_an_unknown_preset_before_writing_anything(tmp_path, capsys):
    assert main(["demo", "--quick", "--preset", "nano", "--out", str(tmp_path / "d")]) != 0
    assert "unknown model preset 'nano'" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_demo_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "was not made by 'edge-asc demo'" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
