"""``edge-asc evaluate MODEL.tflite``: the device runtime's clip labels, equal to ``edge-asc classify`` clip by clip,
in the same per-device table a checkpoint gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

from edge_asc.audio import write_audio
from edge_asc.cli import main
from edge_asc.frontend import window_starts
from edge_asc.spec import TAU_LABELS

require("tensorflow")  # only to build the test models
from runtime_models import LABELS, high, low, write_model

ALL_DEVICES = {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}


@pytest.fixture(scope="module")
def ten_second(tmp_path_factory):
    """90 evaluate clips of 10 s from the synthetic TAU generator, and a 10-scene model whose answers vary."""
    from edge_asc.data.synth import synthesize

    d = tmp_path_factory.mktemp("eval10")
    data = synthesize(d / "data", clips_per_class=15, seconds=10.0, sample_rate=16_000, seed=3)
    return str(data), write_model(d / "tau.tflite", labels=TAU_LABELS)


@pytest.mark.slow
@pytest.mark.parametrize("hop", [None, "0.7"])
def test_evaluate_tflite_equals_classify_clip_by_clip(ten_second, hop, tmp_path, capsys):
    data, model = ten_second
    hop_args = [] if hop is None else ["--hop", hop]
    js = tmp_path / "eval.json"
    assert main(["evaluate", model, "--data", data, "--json", str(js), *hop_args]) == 0
    table = capsys.readouterr().out
    rep = json.loads(js.read_text())
    clips = rep["clips"]
    assert rep["n_clips"] == len(clips) == 90 and rep["tiled_clips"] == 0
    assert rep["hop_frames"] == (30 if hop is None else 44)  # half of 61 frames; 0.7 s = 43.75 frames

    assert main(["classify", *[c["file"] for c in clips], "--model", model, "--json", *hop_args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hop_seconds"] == pytest.approx(rep["hop_frames"] * 256 / 16_000)
    n_windows = len(window_starts(623, 61, rep["hop_frames"]))  # 10 s = 623 frames of the edge front end
    for c, f in zip(clips, out["files"], strict=True):
        assert f["file"] == c["file"] and f["label"] == c["predicted"]
        np.testing.assert_allclose(list(f["clip_probs"].values()), c["probs"], atol=2e-6)
        assert len(f["windows"]) == n_windows
    assert len({c["predicted"] for c in clips}) >= 3  # the comparison is not between constant answers
    assert rep["accuracy"] == pytest.approx(np.mean([c["predicted"] == c["label"] for c in clips]))

    # the same report as for a checkpoint: every device, the seen / unseen groups, the terminal table
    assert set(rep["per_device"]) == ALL_DEVICES and set(rep["groups"]) == {"seen", "unseen"}
    assert sum(map(sum, rep["confusion"])) == 90 and len(rep["model_sha256"]) == 64
    assert table.startswith("macro accuracy") and "device" in table and "[unseen]" in table


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """A folder-per-class dataset with the tiny model's labels; one 'low' clip is shorter than a window."""
    d = tmp_path_factory.mktemp("folders")
    for label in LABELS:
        (d / "data" / label).mkdir(parents=True)
    for k in range(5):
        write_audio(d / "data" / "low" / f"l{k}.wav", low(0.6 if k == 0 else 2.0, seed=10 + k), 16_000)
        write_audio(d / "data" / "high" / f"h{k}.wav", high(2.0, seed=20 + k), 16_000)
        write_audio(d / "data" / "silence" / f"s{k}.wav", np.zeros(32_000, np.float32), 16_000)
    return d / "data", write_model(d / "tiny.tflite")


def test_tflite_split_choice_short_clips_and_hop_in_frames(folder_dataset, tmp_path, capsys):
    data, model = folder_dataset
    js = tmp_path / "train.json"
    assert main(["evaluate", model, "--data", str(data), "--split", "train", "--hop-frames", "31",
                 "--json", str(js)]) == 0
    rep = json.loads(js.read_text())
    assert rep["split"] == "train" and rep["hop_frames"] == 31 and rep["labels"] == list(LABELS)
    assert rep["macro_accuracy"] == 1.0 and set(rep["per_device"]) == {"unknown"}
    short = [c for c in rep["clips"] if c["file"].endswith("l0.wav")]
    assert rep["tiled_clips"] == len(short)  # l0 is tiled to one window if it is in this split
    assert "warning" not in capsys.readouterr().err


def test_evaluate_usage_and_model_errors(folder_dataset, tmp_path, capsys):
    data, model = folder_dataset
    assert main(["evaluate", model, "--data", str(data), "--hop", "0"]) == 2
    assert "--hop must be > 0" in capsys.readouterr().err
    assert main(["evaluate", model, "--data", str(data), "--hop", "0.5", "--hop-frames", "3"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a model at all")
    assert main(["evaluate", str(fake), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "not a TFLite model" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other.tflite"
    write_model(other, labels=TAU_LABELS)
    assert main(["evaluate", str(other), "--data", str(data)]) == 1
    assert "labels do not match" in capsys.readouterr().err
