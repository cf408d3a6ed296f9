"""`edge-asc fit`: every candidate meets every budget, the largest come first, thresholds are inclusive."""

from __future__ import annotations

import json

import pytest
from conftest import require

from edge_asc.cli import main
from edge_asc.commands.fit import parse_size
from edge_asc.errors import ConfigError
from edge_asc.firmware_bench.fit import (
    TAIL_BASE,
    TAIL_PER_CHANNEL,
    TAIL_PER_OP,
    arena_estimate,
    arena_head_estimate,
    arena_tail_estimate,
    search,
)
from edge_asc.model import count_macs, count_params, model_preset


def test_candidates_meet_every_constraint_and_are_ranked():
    found = search(max_params=128_000, max_macs=30e6, max_ram=256_000, top=50)
    assert len(found) == 50
    for c in found:
        assert c.params <= 128_000 and c.macs_1s <= 30e6 and c.arena_estimate_bytes <= 256_000
        assert c.params == count_params(c.config) and c.macs == count_macs(c.config)
    assert [c.params for c in found] == sorted((c.params for c in found), reverse=True)
    assert found[0].params > count_params(model_preset("edge"))  # the edge preset leaves budget unused


def test_limits_are_inclusive():
    edge = model_preset("edge")
    p, m = count_params(edge), count_macs(edge)  # edge is a 1-s model: MACs per 1 s == MACs per window
    kw = {"widths": [edge.width], "mels": [edge.n_mels], "frames": [edge.n_frames], "pools": [edge.pool]}
    assert [c.config for c in search(max_params=p, max_macs=m, **kw)] == [edge]
    assert search(max_params=p - 1, max_macs=m, **kw) == []
    assert search(max_params=p, max_macs=m - 1, **kw) == []
    a = arena_estimate(edge)
    assert search(max_params=p, max_macs=m, max_ram=a, **kw) and not search(max_params=p, max_macs=m,
                                                                            max_ram=a - 1, **kw)


def test_arena_estimate_hand_count():
    # edge: 1x64x61 input, c1=16, c2=32. In the order export writes (edge_asc.export.schedule) the head peak is the
    # second unpooling: 3 full-resolution int8 tensors (skip, mask, upsampled values) plus the low-resolution values
    # (c1 x 32 x 20) just upsampled. The tail is TAIL_BASE + TAIL_PER_OP * 112 modelled ops + TAIL_PER_CHANNEL *
    # (5 c1 + 3 c2) conv channels.
    edge = model_preset("edge")
    assert arena_head_estimate(edge) == 3 * 16 * 64 * 61 + 16 * 32 * 20
    assert arena_tail_estimate(edge) == round(TAIL_BASE + TAIL_PER_OP * 112 + TAIL_PER_CHANNEL * (5 * 16 + 3 * 32))
    assert arena_estimate(edge) == arena_head_estimate(edge) + arena_tail_estimate(edge)
    # micro (1x40x31 input, c1=8, 2x2 pools: 40x31 -> 20x15 -> 10x7, odd width: a PAD at mid resolution as in edge)
    micro = model_preset("micro")
    assert arena_head_estimate(micro) == 3 * 8 * 40 * 31 + 8 * 20 * 15
    assert arena_tail_estimate(micro) == round(TAIL_BASE + TAIL_PER_OP * 112 + TAIL_PER_CHANNEL * (5 * 8 + 3 * 16))


# TFLite Micro arenas (bytes) of random-init exports of the presets, ops reordered as export writes them:
# `python benchmarks/int8_graph.py` (build_model -> to_onnx -> run_onnx2tf(..., "int8", 64 windows of
# rng(0).standard_normal) -> reorder_for_memory -> tflm.measure_arena), the chain of test_arena_estimate_matches_tflm.
MEASURED_ARENA = {"edge": 230_448, "micro": 55_648}


@pytest.mark.parametrize("name", sorted(MEASURED_ARENA))
def test_arena_estimate_within_15_percent_of_measured(name):
    assert arena_estimate(model_preset(name)) == pytest.approx(MEASURED_ARENA[name], rel=0.15)


@pytest.mark.slow
def test_arena_estimate_matches_tflm(tmp_path):
    require("onnx2tf")
    require("tflite_micro")

    from edge_asc.export import export_untrained_int8
    from edge_asc.firmware_bench.tflm import measure_arena

    cfg = model_preset("micro")
    tfl, _ = export_untrained_int8(cfg, tmp_path)
    res = measure_arena(tfl)
    assert res.runs, res.error
    assert arena_estimate(cfg) == pytest.approx(res.arena_bytes, rel=0.15)
    assert arena_head_estimate(cfg) == pytest.approx(res.head_bytes, rel=0.10)


def test_bad_budget():
    with pytest.raises(ConfigError, match="budgets must be > 0"):
        search(max_params=0, max_macs=1)


@pytest.mark.parametrize("text, value", [("128000", 128000), ("30e6", 30e6), ("256KB", 256000),
                                         ("256KiB", 262144), ("1.5MB", 1.5e6)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_fit_cli_table_and_json(capsys):
    assert main(["fit", "--params", "128000", "--macs", "30e6", "--ram", "256KB", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "to train: edge:" in out and out.count(" edge:") >= 4  # three rows + the line to train (a preset string)
    assert main(["fit", "--params", "60000", "--macs", "10e6", "--json", "--top", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["candidates"]) == 2 and all(c["params"] <= 60000 and c["macs_1s"] <= 10e6 for c in d["candidates"])


def test_fit_cli_nothing_fits_and_bad_size(capsys):
    assert main(["fit", "--params", "10", "--macs", "10"]) == 1
    assert "no configuration meets every budget" in capsys.readouterr().out
    assert main(["fit", "--ram", "lots"]) == 2


def test_confirm_measures_an_exported_model(tmp_path):
    require("tensorflow")
    import firmware_models as fm

    from edge_asc.firmware_bench.fit import confirm
    from edge_asc.firmware_bench.graph import read_graph

    p = tmp_path / "toy.tflite"
    p.write_bytes(fm.toy_model())
    c = confirm(str(p))
    assert c.estimate_bytes is None  # the toy card carries no Mini-SegNet config
    assert c.measured_bytes >= c.graph_peak_bytes == read_graph(p).peak_activation_bytes
