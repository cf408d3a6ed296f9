"""The export gate on real exports, with its default thresholds: a trained tiny model's full-int8 export passes;
the same model calibrated on noise fails, and so does the reference formulation (``int8_native=False``); a failing
``edge-asc export`` exits 1 with the model and its report kept, and says which clauses failed with which numbers.

Each case trains a tiny model (~1 min) and converts it once (~1 min); marked slow."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from edge_asc.export.gate import CLAUSES

pytestmark = pytest.mark.slow

#: A recipe that learns on the 11 train clips per class of ``tiny_dataset`` (~0.27 float macro accuracy) and gives
#: decided windows: no augmentation, one cosine cycle at a low learning rate.
RECIPE = {"epochs": 20, "batch_size": 8, "lr_max": 0.02, "t0": 20, "val_every": 0, "seed": 0}


def _train(dataset_dir: Path, out: Path, preset: str) -> Path:
    require("onnx2tf")
    torch = require("torch")

    from edge_asc.data import load_dataset
    from edge_asc.train.augment import AugmentConfig
    from edge_asc.train.loop import TrainConfig, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU training is reproducible for a given thread count
    try:
        train(load_dataset(dataset_dir), out, TrainConfig(preset=preset, augment=AugmentConfig.off(), **RECIPE),
              progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> Path:
    return _train(tiny_dataset, tmp_path_factory.mktemp("gate") / "edge", "edge")


def _export(run: Path, data: Path, out: Path, capsys, *extra: str) -> tuple[int, dict, str]:
    from edge_asc.cli import main

    capsys.readouterr()
    rc = main(["export", str(run), "--int8", "--data", str(data), "--out", str(out), "--json", *extra])
    cap = capsys.readouterr()
    rep = json.loads(cap.out)
    print(out.name, _numbers(rep["gate"]))  # shown by pytest -rA
    return rc, rep, cap.err


def _numbers(gate: dict) -> str:
    return "; ".join(f"{c['name']} {c['value']} vs {c['threshold']}" for c in gate["clauses"])


def test_a_good_int8_export_passes_the_default_gate(trained, tiny_dataset, tmp_path, capsys):
    model = tmp_path / "good.tflite"
    rc, rep, err = _export(trained, tiny_dataset, model, capsys, "--calib-size", "60")
    gate = rep["gate"]
    assert rc == 0, err
    assert gate["passed"] is True and gate["enforced"] is True and gate["failed"] == [], _numbers(gate)
    assert [c["name"] for c in gate["clauses"]] == list(CLAUSES)
    v = rep["verification"]
    # a faithful export: no clip changes class, every window the float model is sure of agrees
    assert v["macro_accuracy_drop_points"] <= 0.0 and v["confident_top1_agreement"] == 1.0
    assert v["confident_fraction"] > 0.2 and v["float_macro_accuracy"] > 0.2  # the model decides something
    assert json.loads((tmp_path / "good.export.json").read_text())["gate"] == gate


def _noise_calibration(run: Path, data: Path, out: Path) -> Path:
    """A calibration set of uniform noise over [-100, 20] dB in place of the training windows, saved like
    ``edge-asc calibrate`` saves one (its manifest's array hash matches the noise)."""
    import dataclasses

    from edge_asc.calibration import CalibrationSet, build_calibration, save_calibration
    from edge_asc.data import load_dataset
    from edge_asc.train.checkpoint import read_meta

    meta = read_meta(run)
    real = build_calibration(load_dataset(data), meta.frontend, meta.window_frames, size=60, labels=meta.labels)
    noise = np.random.default_rng(0).uniform(-100.0, 20.0, real.data.shape).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, noise, allow_pickle=False)
    manifest = dataclasses.replace(real.manifest, array_sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    return save_calibration(CalibrationSet(data=noise, manifest=manifest), out)


def test_noise_calibration_fails_the_gate_and_keeps_model_and_report(trained, tiny_dataset, tmp_path, capsys):
    model = tmp_path / "noise.tflite"
    calib = _noise_calibration(trained, tiny_dataset, tmp_path / "noise-calib")
    rc, rep, err = _export(trained, tiny_dataset, model, capsys, "--calib", str(calib))
    gate = rep["gate"]
    assert rc == 1 and gate["passed"] is False, _numbers(gate)
    # what a user loses: accuracy, window decisions, even the windows the float model is sure of
    assert {"accuracy_drop", "agreement", "confident_agreement"} <= set(gate["failed"]), _numbers(gate)
    assert rep["verification"]["macro_accuracy_drop_points"] > 5.0
    # the error line names each failed clause with its numbers; model and report are kept
    line = err.strip().splitlines()[-1]
    assert line.startswith("edge-asc: error: export gate failed: accuracy_drop +")
    assert all(name in line for name in gate["failed"]) and "model kept at" in line
    assert model.is_file() and json.loads((tmp_path / "noise.export.json").read_text())["gate"] == gate


def test_the_reference_formulation_fails_the_gate(tiny_dataset, tmp_path, capsys):
    """The reference blocks (comparisons, CAST, float tensors in the int8 graph) on the same recipe: clips change
    class in int8."""
    from edge_asc.data import load_dataset
    from edge_asc.errors import ExportGateError
    from edge_asc.export import ExportConfig, export_checkpoint

    run = _train(tiny_dataset, tmp_path / "ref", "edge:int8_native=false")
    model = tmp_path / "ref.tflite"
    with pytest.raises(ExportGateError) as info:
        export_checkpoint(run, model, config=ExportConfig(calib_size=60), dataset=load_dataset(tiny_dataset))
    result = info.value.result
    print(model.name, _numbers(result.report.gate))  # shown by pytest -rA
    assert "accuracy_drop" in result.gate.failed, result.gate.summary()
    assert result.report.ops["non_int8_activations"]  # the reference graph is not int8 inside
    assert model.is_file() and result.report_path.is_file()
    assert json.loads(result.report_path.read_text())["gate"]["failed"] == list(result.gate.failed)
