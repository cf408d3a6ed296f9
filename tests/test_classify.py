"""`edge-asc classify`: labels, JSON/CSV output, and the same numbers as the offline (export verification) path."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from conftest import require

from edge_asc.audio import load_audio, write_audio
from edge_asc.cli import main
from edge_asc.frontend import offline
from edge_asc.runtime import Classifier

require("tensorflow")
from runtime_models import LABELS, cached_model, high, low, scene_audio, write_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    m = write_model(d / "tiny.tflite")
    scene = d / "scene.wav"
    write_audio(scene, scene_audio(2.0), 16_000)
    hi48 = d / "high48k.flac"
    write_audio(hi48, np.stack([high(2.0, 48_000), high(2.0, 48_000)], axis=1).mean(axis=1), 48_000)
    return {"model": m, "scene": str(scene), "high48": str(hi48), "dir": d}


def test_json_windows_and_clip_label_match_the_offline_path(files, capsys):
    assert main(["classify", files["scene"], files["high48"], "--model", files["model"], "--hop", "0.5",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels"] == list(LABELS) and out["hop_seconds"] == 0.496 and len(out["model_sha256"]) == 64
    scene, hi = out["files"]
    labels = [w["label"] for w in scene["windows"]]
    assert labels[:3] == ["low"] * 3 and labels[5:7] == ["high"] * 2 and labels[-2:] == ["low"] * 2
    assert hi["label"] == "high" and all(w["label"] == "high" for w in hi["windows"])
    assert [c["label"] for c in scene["scene_changes"]] == ["low", "high", "low"]
    # The export verification path: whole-clip offline features, sliced into the same windows.
    clf = Classifier(files["model"])
    for f in (scene, hi):
        x, _ = load_audio(f["file"], 16_000)
        feats = offline(x, clf.card.frontend)
        wins = [feats[:, :, s : s + 61] for s in range(0, feats.shape[-1] - 61 + 1, 31)]
        probs = np.stack([clf.probabilities(w) for w in wins])
        np.testing.assert_allclose(np.array([w["probs"] for w in f["windows"]]), probs, atol=2e-6)
        assert f["label"] == LABELS[int(probs.mean(axis=0).argmax())]
        np.testing.assert_allclose(list(f["clip_probs"].values()), probs.mean(axis=0), atol=2e-6)


def test_csv_has_one_row_per_window_and_a_clip_row(files, capsys):
    assert main(["classify", files["scene"], "--model", files["model"], "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["file", "window", "start_s", "label", "confidence", *LABELS]
    n = 1 + (6 * 16_000 - 15_872) // (30 * 256)  # default hop: half a window = 30 frames
    assert len(rows) == 1 + n + 1 and rows[-1][1] == "clip" and rows[1][3] == "low"
    assert [r[1] for r in rows[1:-1]] == [str(i) for i in range(n)]
    assert all(abs(sum(float(v) for v in r[5:]) - 1) < 1e-4 for r in rows[1:])


def test_plain_output(files, capsys):
    assert main(["classify", files["high48"], "--model", files["model"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{files['high48']}: high (") and "windows of 0.99 s" in out[0]
    assert all(" high " in line for line in out[1:])


def test_short_clip_warns_and_still_classifies(files, capsys):
    short = files["dir"] / "short.wav"
    write_audio(short, low(0.8), 16_000)
    assert main(["classify", str(short), "--model", files["model"], "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["files"][0]["label"] == "low"
    assert "warning:" in cap.err and "tiled" in cap.err


def test_errors_are_one_line_with_exit_codes(files, capsys, tmp_path):
    assert main(["classify", files["scene"]]) == 2  # no --model
    assert "--model M is required" in capsys.readouterr().err
    assert main(["classify", files["scene"], "--model", files["model"], "--hop", "0"]) == 2
    assert main(["classify", str(tmp_path / "missing.wav"), "--model", files["model"]]) == 1
    assert "no such file" in capsys.readouterr().err
    nocard = tmp_path / "nocard.tflite"
    nocard.write_bytes(cached_model(with_card=False)[0])
    assert main(["classify", files["scene"], "--model", str(nocard)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no edge-asc model card" in err[0]
