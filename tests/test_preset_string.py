"""Preset strings ``NAME[:field=value,...]``: one parser (``resolve_preset``), one printer (``format_preset``, what
``edge-asc fit`` prints), exact round trips, one-line ``ConfigError`` for every malformed string, and the front end
that follows a changed ``n_mels`` / ``in_channels``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import require

from edge_asc.cli import main
from edge_asc.errors import ConfigError
from edge_asc.firmware_bench.fit import search
from edge_asc.model import MODEL_PRESETS, MiniSegNetConfig, format_preset, model_preset, resolve_preset, split_preset
from edge_asc.spec import PRESETS, frontend_for_model

SETTABLE = [f.name for f in dataclasses.fields(MiniSegNetConfig) if f.name != "schema_version"]


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_a_bare_name_is_the_preset(name):
    p = resolve_preset(name)
    assert p == MODEL_PRESETS[name]
    assert format_preset(name, MODEL_PRESETS[name].config) == name


def test_the_printed_form():
    cfg = model_preset("edge").replace(width=0.5625, n_mels=32, pool=(4, 4), act_bound=None)
    s = format_preset("edge", cfg)
    assert s == "edge:n_mels=32,width=0.5625,pool=4x4,act_bound=none"  # MiniSegNetConfig field order
    p = resolve_preset(s)
    assert p.config == cfg and p.name == s and p.frontend == "edge"
    # another spelling of the same config resolves to the same config and the same canonical name
    q = resolve_preset(" edge: pool=4x4, act_bound=none ,width=0.56250,n_mels=32,n_frames=61")
    assert q.config == cfg and q.name == s
    assert split_preset(s) == ("edge", {"n_mels": 32, "width": 0.5625, "pool": (4, 4), "act_bound": None})


@pytest.mark.parametrize("budget, base", [
    ({"max_params": 128_000, "max_macs": 30e6}, "edge"),
    ({"max_params": 128_000, "max_macs": 30e6, "max_ram": 64_000}, "edge"),
    ({"max_params": 20_000, "max_macs": 2e6}, "edge"),
    ({"max_params": 60_000, "max_macs": 10e6}, "edge-gap"),
    ({"max_params": 500_000, "max_macs": 1e9}, "paper-half"),
    ({"max_params": 128_000, "max_macs": 30e6}, "edge:norm=bn,dense_units=32x16,act_bound=none"),
])
def test_every_fit_candidate_round_trips(budget, base):
    found = search(**budget, base=base, top=40)
    assert found
    for c in found:
        p = resolve_preset(c.preset_string)
        assert p.config == c.config and p.name == c.preset_string
        assert p.frontend == MODEL_PRESETS[base.partition(":")[0]].frontend


def test_fit_keeps_the_base_strings_changes():
    c = search(max_params=128_000, max_macs=30e6, base="edge:norm=bn,act_bound=none", top=1)[0]
    assert c.config.norm == "bn" and c.config.act_bound is None
    assert "norm=bn" in c.preset_string and "act_bound=none" in c.preset_string


@pytest.mark.parametrize("act_bound", [None, 3.5])
def test_every_settable_field_round_trips(act_bound):
    cfg = MiniSegNetConfig(in_channels=3, n_mels=48, n_frames=40, n_classes=5, width=1 / 3, base_channels=(32, 64),
                           kernel=(3, 3), pool=(2, 2), unpool="nearest", unpool_softness=2.5, norm="bn",
                           mixup_lambda=0.25, norm_stat="std", head="gap", gap_bands=4, topk=2,
                           dense_units=(16, 8), dropout=0.1, act_bound=act_bound, int8_native=False)
    s = format_preset("edge", cfg)
    fields = dict(item.split("=") for item in s.partition(":")[2].split(","))
    assert list(fields) == SETTABLE  # every field differs from 'edge', each printed once, in field order
    assert fields["width"] == repr(1 / 3) and fields["kernel"] == "3x3"
    assert resolve_preset(s).config == cfg
    assert format_preset(s, cfg) == s  # a preset string as base: only its name counts


BAD = [
    ("", "empty model preset"),
    ("huge", "unknown model preset 'huge': choose one of "
             "['edge', 'edge-gap', 'micro', 'micro-64', 'paper', 'paper-half']"),
    ("huge:width=0.5", "unknown model preset 'huge'"),
    ("edge:", "nothing after ':'"),
    ("edge:width", "'width' is not field=value"),
    ("edge:width=", "'width=' is not field=value"),
    ("edge:=0.5", "is not field=value"),
    ("edge:width=0.5,", "'' is not field=value"),
    ("edge:depth=3", "unknown field 'depth': choose from ['in_channels', 'n_mels'"),
    ("edge:schema_version=1", "unknown field 'schema_version'"),
    ("edge:width=0.5,width=0.25", "field 'width' is given twice"),
    ("edge:width=wide", "width='wide' is not a number"),
    ("edge:width=nan", "width='nan' is not a number"),
    ("edge:n_mels=32.0", "n_mels='32.0' is not an integer"),
    ("edge:pool=2", "pool='2' is not integers joined by 'x', e.g. 2x3"),
    ("edge:pool=2x3x4", "pool='2x3x4' is not integers joined by 'x'"),
    ("edge:pool=2,3", "pool='2' is not integers joined by 'x'"),  # the first bad item is named
    ("edge:act_bound=None", "act_bound='None' is not a number, e.g. 0.5 (or none)"),
    ("edge:int8_native=yes", "int8_native='yes' is not true or false"),
    ("edge:unpool=so ft", "unpool='so ft' is not a word"),
    ("edge:unpool=max", "unpool must be 'mask', 'soft' or 'nearest', got 'max'"),
    ("edge:width=9", "width must be in (0, 8]"),
    ("edge:n_mels=4", "gap_bands must be an integer in [1, n_mels=4]"),
    ("edge:n_frames=5", "input 64x5 is too small for two 2x3 poolings"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_malformed_strings_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError) as info:
        resolve_preset(text)
    msg = str(info.value)
    assert message in msg and "\n" not in msg
    if text.startswith("edge:") and text != "edge:":
        assert repr(text) in msg  # the message quotes the string it refuses


def test_format_preset_needs_a_known_name():
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        format_preset("huge", model_preset("edge"))


# ---- the front end follows the config ------------------------------------------------------------------------------
def test_frontend_for_model():
    edge, paper = PRESETS["edge"], PRESETS["paper"]
    assert frontend_for_model(edge, n_mels=64, channels=1) is edge
    assert frontend_for_model(paper, n_mels=256, channels=3) is paper
    s = frontend_for_model(edge, n_mels=32, channels=1)
    assert s == edge.replace(n_mels=32) and s.feature_hash() != edge.feature_hash()
    s3 = frontend_for_model(edge, n_mels=48, channels=3)
    assert (s3.n_mels, s3.channels, s3.deltas, s3.delta_width) == (48, 3, 2, edge.delta_width)
    assert frontend_for_model(paper, n_mels=128, channels=1).channels == 1
    with pytest.raises(ConfigError, match="no front end gives 2 feature channels"):
        frontend_for_model(edge, n_mels=64, channels=2)
    with pytest.raises(ConfigError, match="n_mels must be an integer in"):
        frontend_for_model(edge, n_mels=2000, channels=1)


def test_derived_frontend_makes_the_models_input():
    from edge_asc.frontend import offline

    cfg = resolve_preset("edge:n_mels=32,n_frames=30,width=0.125,pool=2x4").config
    spec = frontend_for_model(PRESETS["edge"], n_mels=cfg.n_mels, channels=cfg.in_channels)
    audio = np.random.default_rng(0).standard_normal(spec.samples_for_frames(cfg.n_frames)).astype(np.float32) * 0.1
    assert offline(audio, spec).shape == (cfg.in_channels, cfg.n_mels, cfg.n_frames)


# ---- the CLI -------------------------------------------------------------------------------------------------------
def test_fit_prints_a_string_that_resolves_to_its_config(capsys):
    assert main(["fit", "--params", "128000", "--macs", "30e6", "--ram", "256KB", "--top", "3"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("to train: "))
    config = json.loads(next(x for x in out.splitlines() if x.startswith("config: "))[len("config: "):])
    assert resolve_preset(line[len("to train: "):]).config.to_dict() == config
    assert main(["fit", "--params", "60000", "--macs", "10e6", "--base", "edge:norm=bn", "--json", "--top", "2"]) == 0
    for c in json.loads(capsys.readouterr().out)["candidates"]:
        assert resolve_preset(c["preset"]).config.to_dict() == c["config"] and c["config"]["norm"] == "bn"


def test_cli_refuses_a_bad_preset_in_one_line(tmp_path, capsys):
    assert main(["fit", "--base", "edge:depth=3"]) == 1
    err = capsys.readouterr().err
    assert "unknown field 'depth'" in err and len(err.strip().splitlines()) == 1
    require("torch")
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", "edge:pool=2", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "pool='2' is not integers joined by 'x'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
