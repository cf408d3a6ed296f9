"""``edge-asc train`` / ``edge-asc evaluate`` end to end on the tiny synthetic fixture, and their error exits."""

from __future__ import annotations

import json

import pytest
from conftest import require

require("torch")

from edge_asc.cli import main


def _root(tiny_dataset) -> str:
    return str(tiny_dataset)


@pytest.fixture(scope="module")
def cli_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(["train", "--data", _root(tiny_dataset), "--preset", "edge", "--epochs", "2", "--out", str(out),
               "--seed", "1", "--no-progress", "--batch-size", "16"])
    assert rc == 0
    return out


def test_train_then_evaluate(cli_run, tiny_dataset, tmp_path, capsys):
    meta = json.loads((cli_run / "checkpoint.json").read_text())
    assert meta["epoch"] == 2 and meta["preset"] == "edge" and meta["window_frames"] == 61
    hist = [json.loads(line) for line in (cli_run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    js, png = tmp_path / "eval.json", tmp_path / "cm.png"
    rc = main(["evaluate", str(cli_run), "--data", _root(tiny_dataset), "--json", str(js), "--png", str(png)])
    assert rc == 0
    rep = json.loads(js.read_text())
    assert 0.0 <= rep["macro_accuracy"] <= 1.0 and rep["log_loss"] > 0
    assert sum(map(sum, rep["confusion"])) == rep["n_clips"] > 0
    assert set(rep["groups"]) <= {"seen", "unseen"} and rep["per_device"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "macro accuracy" in capsys.readouterr().out


def test_resume_continues(cli_run, tiny_dataset, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    rc = main(["train", "--data", _root(tiny_dataset), "--preset", "edge", "--epochs", "3", "--out", str(run),
               "--seed", "1", "--no-progress", "--batch-size", "16", "--resume"])
    assert rc == 0
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 3


def test_cli_errors(cli_run, tiny_dataset, tmp_path, capsys):
    data = _root(tiny_dataset)
    assert main(["train", "--data", data, "--epochs", "0", "--out", str(tmp_path / "x")]) == 2
    # the run exists and --resume was not given
    assert main(["train", "--data", data, "--epochs", "1", "--out", str(cli_run), "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err
    # corrupt checkpoint
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.json").write_text("{oops")
    assert main(["evaluate", str(bad), "--data", data]) == 1
    assert "corrupt" in capsys.readouterr().err
    # an empty dataset folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--epochs", "1", "--out", str(tmp_path / "y"), "--no-progress"]) == 1
    assert "error" in capsys.readouterr().err
    # a negative ReLU bound is refused in one line, before any training
    assert main(["train", "--data", data, "--epochs", "1", "--act-bound", "-6", "--out", str(tmp_path / "z"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "act_bound must be None or a positive number" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "z").exists()
