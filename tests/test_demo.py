"""`edge-asc demo --quick`: the whole pipeline end to end on a fresh synthetic dataset (the README's main job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_asc.cli import main
from edge_asc.spec import TAU_LABELS


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_summarises(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` uses (once joined dataset roots twice)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", "demo", "--no-vela"]) == 0
    s = json.loads((out / "summary.json").read_text())
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
    printed = capsys.readouterr().out
    assert "$ edge-asc train --data" in printed and "edge-asc demo summary" in printed
    assert "every activation tensor is int8" in printed
    assert "int8 gate" in printed and all(f"  {c['name']} " in printed for c in gate["clauses"])


def test_demo_refuses_an_unknown_preset_before_writing_anything(tmp_path, capsys):
    assert main(["demo", "--quick", "--preset", "nano", "--out", str(tmp_path / "d")]) != 0
    assert "unknown model preset 'nano'" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_demo_refuses_to_overwrite_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "was not made by 'edge-asc demo'" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
