"""`edge-asc report`: outputs written, exit code 3 for an unmet --require, one-line errors."""

from __future__ import annotations

import json

import firmware_models as fm
import pytest
from conftest import require

from edge_asc.cli import main


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    require("tensorflow")
    p = tmp_path_factory.mktemp("report_cli") / "toy.tflite"
    p.write_bytes(fm.toy_model())
    return p


@pytest.fixture(scope="module")
def too_big(tmp_path_factory):
    """129 x 1000 int8 weights: 129,000 bytes, 1,000 over the DCASE 2022 budget (and under 2021's 131,072)."""
    require("tensorflow")
    p = tmp_path_factory.mktemp("report_cli") / "big.tflite"
    p.write_bytes(fm.dense_model(129, 1000))
    return p


def test_report_writes_json_md_png_and_passes(toy, tmp_path, capsys):
    j, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    rc = main(["report", str(toy), "--target", "nrf52840", "--no-vela", "--threads", "2",
               "--json", str(j), "--md", str(md), "--png", str(png), "--require", "dcase", "--require",
               "target:nrf52840"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "DCASE 2022-2025" in out and "measured" in out and "estimate" in out
    d = json.loads(j.read_text())
    assert d["graph"]["macs"] == fm.TOY_MACS
    host = next(t for t in d["targets"] if t["key"] == "host")
    assert host["provenance"] == "measured" and host["threads"] == 2 and host["latency_s"] > 0
    assert set(d["host"]["seconds"]) == {"1", "2"}
    assert md.read_text().startswith("## edge-asc report")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_require_unmet_budget_exits_3_after_writing(too_big, tmp_path, capsys):
    j = tmp_path / "r.json"
    rc = main(["report", str(too_big), "--no-tflm", "--no-vela", "--no-measure", "--target", "rpi4",
               "--json", str(j), "--require", "dcase2022"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "dcase2022-params" in err and "1,000 bytes over" in err
    d = json.loads(j.read_text())  # outputs are written before the verdict
    b = {x["key"]: x for x in d["budgets"]}
    assert b["dcase2022-params"]["margin"] == -1000 and b["dcase2021-params"]["passed"] is True
    assert main(["report", str(too_big), "--no-tflm", "--no-vela", "--no-measure", "--target", "rpi4",
                 "--require", "dcase2021"]) == 0


def test_require_target_that_does_not_fit_exits_3(toy, tmp_path, capsys):
    t = tmp_path / "t.toml"
    t.write_text('[[target]]\nkey = "speck"\nname = "speck"\nkind = "mcu"\nclock_hz = 1e6\nram_bytes = 1024\n'
                 'cycles_per_mac = 1.0\nsource = "a 1 KB toy target"\n')
    rc = main(["report", str(toy), "--targets-file", str(t), "--target", "speck", "--no-vela", "--no-measure",
               "--require", "target:speck"])
    assert rc == 3
    assert "target:speck" in capsys.readouterr().err


def test_json_to_stdout(toy, capsys):
    assert main(["report", str(toy), "--json", "-", "--no-tflm", "--no-vela", "--no-measure", "--target",
                 "stm32h7"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["targets"][0]["key"] == "stm32h7" and d["targets"][0]["provenance"] == "estimate"


@pytest.mark.parametrize("argv, code, text", [
    (["--target", "nope"], 1, "unknown target"),
    (["--require", "dcase2099"], 1, "unknown budget"),
    (["--hop", "0"], 2, "--hop must be > 0"),
])
def test_bad_options_are_one_line_errors(toy, capsys, argv, code, text):
    rc = main(["report", str(toy), "--no-tflm", "--no-vela", "--no-measure", *argv])
    err = capsys.readouterr().err
    assert rc == code and text in err and len(err.strip().splitlines()) == 1


def test_missing_model(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.tflite")]) == 1
    assert "no such model file" in capsys.readouterr().err
