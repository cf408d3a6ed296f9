"""What ``edge-asc fit`` prints is what ``edge-asc train --preset`` takes: fit -> train -> evaluate -> export int8 ->
report on a tiny configuration (32 mels, so the front end must follow the preset string), on the tiny synthetic set."""

from __future__ import annotations

import json

import pytest
from conftest import require

require("torch")

from edge_asc.cli import main
from edge_asc.model import resolve_preset
from edge_asc.spec import PRESETS


@pytest.fixture(scope="module")
def fitted(tiny_dataset, tmp_path_factory):
    """(preset string printed by fit, run directory trained on it for one epoch)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["fit", "--params", "20000", "--macs", "2e6", "--top", "1"]) == 0
    line = next(x for x in buf.getvalue().splitlines() if x.startswith("to train: "))
    preset = line[len("to train: "):]
    run = tmp_path_factory.mktemp("fit_train") / "run"
    assert main(["train", "--data", str(tiny_dataset), "--preset", preset, "--epochs", "1", "--out", str(run),
                 "--no-progress", "--threads", "2", "--batch-size", "16"]) == 0
    return preset, run


def test_the_checkpoint_is_the_fitted_config_on_a_matching_front_end(fitted, tiny_dataset, tmp_path, capsys):
    preset, run = fitted
    cfg = resolve_preset(preset).config
    assert cfg.n_mels != PRESETS["edge"].n_mels  # the string changes the front end, not only the network
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["preset"] == preset and meta["train_config"]["preset"] == preset
    assert meta["model_config"] == cfg.to_dict() and meta["window_frames"] == cfg.n_frames
    expected = PRESETS["edge"].replace(n_mels=cfg.n_mels).to_dict()
    assert {k: v for k, v in meta["frontend"].items() if not k.startswith("norm_")} == \
           {k: v for k, v in expected.items() if not k.startswith("norm_")}
    # evaluate rebuilds the model from the checkpoint, not from a preset name
    js = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "--data", str(tiny_dataset), "--json", str(js)]) == 0
    rep = json.loads(js.read_text())
    assert rep["n_clips"] > 0 and 0.0 <= rep["macro_accuracy"] <= 1.0
    capsys.readouterr()


def test_a_preset_string_cannot_contradict_the_dataset(fitted, tiny_dataset, tmp_path, capsys):
    preset, _ = fitted
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--preset", preset + ",n_classes=3", "--epochs", "1",
                 "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "sets n_classes=3 but the dataset has 10 labels" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_fit_train_export_report(fitted, tiny_dataset, tmp_path, capsys):
    require("onnx2tf")
    from edge_asc.tflite_meta import read_model_card

    preset, run = fitted
    cfg = resolve_preset(preset).config
    model = tmp_path / "fit.tflite"
    assert main(["export", str(run), "--int8", "--data", str(tiny_dataset), "--calib-size", "40",
                 "--verify-clips", "20", "--min-agreement", "0", "--out", str(model)]) == 0
    card = read_model_card(model)
    assert card.model_preset == preset and dict(card.model_config) == cfg.to_dict()
    assert card.input_shape == (1, cfg.n_mels, cfg.n_frames, 1) and card.frontend.n_mels == cfg.n_mels
    capsys.readouterr()
    js = tmp_path / "report.json"
    assert main(["report", str(model), "--no-vela", "--no-measure", "--target", "nrf52840", "--json", str(js),
                 "--require", "dcase"]) == 0
    d = json.loads(js.read_text())
    assert d["card"]["model_preset"] == preset and d["window_frames"] == cfg.n_frames
    dcase = [b for b in d["budgets"] if b["key"].startswith("dcase")]
    assert dcase and all(b["passed"] for b in dcase)
    assert d["tflm"]["arena_bytes"] > 0  # TFLite Micro ran the fitted model
    # fit's own check of the exported model: the card's config gives the arena estimate
    capsys.readouterr()
    assert main(["fit", "--params", "20000", "--macs", "2e6", "--top", "1", "--confirm", str(model)]) == 0
    out = capsys.readouterr().out
    assert f"confirm {model}: TFLM arena" in out and " B estimated" in out  # estimate from the card's config
