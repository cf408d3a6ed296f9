"""firmware_bench: counts read off real int8 .tflite files equal hand counts; budgets flip at the exact limits;
TFLite Micro and Vela figures come from real runs on small models."""

from __future__ import annotations

import json
import math

import firmware_models as fm
import pytest
from conftest import require

from edge_asc.errors import ConfigError, ModelContractError
from edge_asc.firmware_bench.budgets import (
    DCASE2021_MAX_NONZERO_PARAM_BYTES,
    DCASE2022_MAX_MACS_PER_SECOND,
    DCASE2022_MAX_PARAM_BYTES,
    BudgetCheck,
    dcase_checks,
)
from edge_asc.firmware_bench.graph import Layer, read_graph
from edge_asc.firmware_bench.targets import OpCosts, Target, estimate_latency, load_targets


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Small int8 models built once per session with TensorFlow (~10 s)."""
    require("tensorflow")
    d = tmp_path_factory.mktemp("fw_models")
    out = {}
    out["toy"] = d / "toy.tflite"
    out["toy"].write_bytes(fm.toy_model())
    out["topk"] = d / "topk.tflite"
    out["topk"].write_bytes(fm.topk_model())
    out["dense"] = d / "dense.tflite"
    out["dense"].write_bytes(fm.dense_model(128, 1000))
    bn, expected = fm.bn_model()
    out["bn"] = d / "bn.tflite"
    out["bn"].write_bytes(bn)
    out["bn_expected"] = expected
    return out


# ---- the FlatBuffer walker ---------------------------------------------------------------------------------------
def test_toy_counts_equal_hand_count(models):
    g = read_graph(models["toy"])
    assert [x.op for x in g.layers] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED"]
    assert [x.macs for x in g.layers] == [3600, 5400, 0, 0, 12]
    assert g.macs == fm.TOY_MACS
    assert g.params == fm.TOY_PARAMS
    assert g.param_bytes == fm.TOY_PARAM_BYTES
    assert g.nonzero_params == fm.TOY_NONZERO  # the 6 zero conv weights are stored as int8 0
    assert g.other_ops == fm.TOY_OTHER_POOL_MEAN
    by = g.param_bytes_by_dtype
    assert by["int8"]["bytes"] == 24 + 36 + 12 and by["int32"]["bytes"] == 4 * (4 + 4 + 3)
    roles = sorted((p.role, p.dtype) for p in g.param_tensors)
    assert roles.count(("bias", "int32")) == 3 and roles.count(("weight", "int8")) == 3
    assert g.input_shapes == ((1, 16, 12, 1),) and g.input_dtypes == ("int8",)
    # the MEAN axes are a structural constant, not a parameter
    assert g.structural_constant_bytes > 0


def test_activation_profile_is_live_tensor_bytes(models):
    g = read_graph(models["toy"])
    conv = g.layers[0]
    # while the first conv runs: its int8 input 16*12 and output 15*10*4 are live
    assert conv.activation_bytes == 16 * 12 + 15 * 10 * 4
    assert g.layers[1].activation_bytes == 2 * 15 * 10 * 4
    assert g.peak_activation_bytes == 2 * 15 * 10 * 4


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """The hand-built graph of firmware_models (no TensorFlow needed)."""
    require("ai_edge_litert")
    p = tmp_path_factory.mktemp("hand") / "hand.tflite"
    p.write_bytes(fm.hand_model())
    return p


def test_activation_timeline_of_a_hand_built_graph(hand):
    g = read_graph(hand)
    a = g.activations
    assert [x.op for x in g.layers] == [op for op, _, _ in fm.HAND_OPS]
    assert a.live_bytes == fm.HAND_LIVE
    assert a.peak_index == fm.HAND_PEAK_INDEX and a.peak_bytes == max(fm.HAND_LIVE)
    # one computation: the per-layer figure and the report's peak are read off the timeline
    assert tuple(x.activation_bytes for x in g.layers) == a.live_bytes
    assert g.peak_activation_bytes == a.peak_bytes == 1808
    peak = a.peak_tensors
    assert tuple(t.name for t in peak) == fm.HAND_PEAK_SET
    assert [(t.shape, t.dtype, t.bytes) for t in peak] == [fm.HAND_TENSORS[n] for n in fm.HAND_PEAK_SET]
    assert sum(t.bytes for t in peak) == a.peak_bytes
    ranges = {t.name: (t.first, t.last) for t in a.tensors}
    # graph input from the first op to its last reader; graph output 'm' to the last op; constants never
    assert ranges == {"x": (0, 3), "a": (0, 2), "m": (1, 4), "b": (2, 3), "y": (3, 4), "z": (4, 4)}
    d = g.to_dict()["activations"]
    assert d["live_bytes"] == list(fm.HAND_LIVE) and d["peak_index"] == 3 and d["peak_bytes"] == 1808
    assert [t["name"] for t in d["peak_tensors"]] == list(fm.HAND_PEAK_SET)


def test_work_elements_and_broadcast_flags(hand):
    g = read_graph(hand)
    # MEAN counts its 256 input elements (output 4); the rest their 256 output elements
    assert [x.elements for x in g.layers] == [256] * 5
    # MUL a[1,8,8,4] * m[1,1,1,4] and SUB y - c[4] broadcast; ADD b + x (same shapes) does not
    assert [x.broadcast for x in g.layers] == [False, False, True, False, True]


def test_report_shows_the_activation_timeline(hand, tmp_path):
    from edge_asc.firmware_bench.render import to_markdown, to_text, write_png
    from edge_asc.firmware_bench.report import build_report

    r = build_report(hand, run_tflm=False, run_vela=False, measure=False, target_keys=["nrf52840"])
    d = json.loads(r.to_json())
    assert d["graph"]["activations"]["live_bytes"] == list(fm.HAND_LIVE)
    assert d["graph"]["peak_activation_bytes"] == 1808
    # x, a int8; m float32; b, z int16; y int32 (axes and c are constants)
    assert d["graph"]["activations"]["dtypes"] == {"float32": 1, "int16": 2, "int32": 1, "int8": 2}
    md = to_markdown(r)
    assert "| activation dtypes | float32 x1, int16 x2, int32 x1, int8 x2 (NOT full int8 inside) |" in md
    assert "### Activation memory per op" in md
    assert "| # | op | out | live act. B | peak |" in md
    assert "| 3 | ADD | 1x8x8x4 | 1,808 | <- peak |" in md
    assert "| 2 | MUL | 1x8x8x4 | 1,040 |  |" in md
    assert md.count("<- peak") == 1
    assert ("peak set by: op 3 ADD, 1,808 B = `y` 1x8x8x4 int32 1,024 B + `b` 1x8x8x4 int16 512 B + "
            "`x` 1x8x8x4 int8 256 B + `m` 1x1x1x4 float32 16 B") in md
    assert "peak 1,808 bytes live at op 3 (ADD)" in md and "peak set by: op 3 ADD" in to_text(r)
    png = tmp_path / "hand.png"
    write_png(r, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_norm_is_folded_into_the_conv(models):
    g = read_graph(models["bn"])
    assert g.op_counts.get("CONV_2D") == 1 and "MUL" not in g.op_counts and "ADD" not in g.op_counts
    assert g.params == models["bn_expected"]  # weights + one bias per channel; BN's 4 x 5 values are gone


def test_not_a_model_is_a_contract_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelContractError, match="not a TFLite model"):
        read_graph(bad)
    with pytest.raises(ModelContractError, match="no such model file"):
        read_graph(tmp_path / "missing.tflite")


# ---- budgets -----------------------------------------------------------------------------------------------------
def test_budget_constants_are_the_rules():
    assert DCASE2022_MAX_PARAM_BYTES == 128_000
    assert DCASE2022_MAX_MACS_PER_SECOND == 30_000_000
    assert DCASE2021_MAX_NONZERO_PARAM_BYTES == 131_072


@pytest.mark.parametrize("limit", [DCASE2021_MAX_NONZERO_PARAM_BYTES, DCASE2022_MAX_PARAM_BYTES,
                                   DCASE2022_MAX_MACS_PER_SECOND])
def test_verdict_flips_at_the_exact_limit(limit):
    at = BudgetCheck(key="k", rule="r", value=limit, limit=limit, unit="u")
    over = BudgetCheck(key="k", rule="r", value=limit + 1, limit=limit, unit="u")
    assert at.passed and at.margin == 0 and at.verdict().startswith("PASS")
    assert not over.passed and over.margin == -1 and over.verdict().startswith("FAIL (1 u over")


def test_dcase_checks_flip_independently():
    def verdicts(nz, p, m):
        return [c.passed for c in dcase_checks(nonzero_param_bytes=nz, param_bytes=p, macs_per_second=m)]

    assert verdicts(131_072, 128_000, 30_000_000) == [True, True, True]
    assert verdicts(131_073, 128_000, 30_000_000) == [False, True, True]
    assert verdicts(131_072, 128_001, 30_000_000) == [True, False, True]
    assert verdicts(131_072, 128_000, 30_000_001) == [True, True, False]


def test_dense_model_exactly_at_the_2022_limit(models):
    """128 x 1000 bias-free int8 dense layer: 128,000 stored bytes -> passes 2022 with 0 margin."""
    from edge_asc.firmware_bench.report import build_report

    r = build_report(models["dense"], run_tflm=False, run_vela=False, measure=False, target_keys=["nrf52840"])
    b = r.budget("dcase2022-params")
    assert b.value == 128_000 and b.passed and b.margin == 0
    assert r.check(["dcase2022-params"]) == []


# ---- TFLite Micro and Vela (real runs) ---------------------------------------------------------------------------
def test_tflm_arena_is_measured_and_exact(models):
    from edge_asc.firmware_bench.tflm import _run_child, measure_arena

    g = read_graph(models["toy"])
    res = measure_arena(models["toy"], op_names=list(g.op_counts))
    assert res.runs and res.confirmed is True and res.unsupported_ops == ()
    assert res.arena_bytes == res.head_bytes + res.tail_bytes
    assert res.head_bytes >= g.peak_activation_bytes  # the planner cannot beat the live-tensor lower bound
    ok, _ = _run_child(str(models["toy"]), res.arena_bytes - 16, 1, 60)
    assert ok["ok"] is False  # 16 bytes less (one alignment step) and TFLM refuses: the figure is the minimum


def test_tflm_arena_upper_bound_is_capped_below_the_interpreters_crash(models):
    # tflite-micro's interpreter segfaults while loading with an arena above 2 GiB; the report once asked for 3 GB
    # for the paper model and printed "CANNOT RUN" for a model TFLM runs in 20.8 MB
    from edge_asc.firmware_bench.tflm import MAX_ARENA_BYTES, measure_arena

    assert MAX_ARENA_BYTES <= 2**31
    res = measure_arena(models["toy"], upper_bound=3_035_478_232, confirm=False)
    assert res.runs, res.error


def test_tflm_greedy_planner_model_matches_tflm(models):
    # edge_asc.export.schedule.greedy_arena_bytes reproduces TFLite Micro's planned head on a real file
    from edge_asc.export.schedule import greedy_arena_bytes
    from edge_asc.firmware_bench.tflm import measure_arena

    ts = read_graph(models["toy"]).activations.tensors
    res = measure_arena(models["toy"], confirm=False)
    assert greedy_arena_bytes([t.bytes for t in ts], [t.first for t in ts], [t.last for t in ts]) == res.head_bytes


def test_tflm_reports_ops_it_cannot_run(models):
    from edge_asc.firmware_bench.tflm import measure_arena, supported_builtin_ops

    assert {"CONV_2D", "FULLY_CONNECTED", "MEAN"} <= supported_builtin_ops()
    res = measure_arena(models["topk"], op_names=list(read_graph(models["topk"]).op_counts))
    assert not res.runs and res.arena_bytes is None
    assert "TOPK_V2" in res.unsupported_ops and "TOPK_V2" in res.error


def test_vela_summary_parsed_from_a_real_run(models):
    from edge_asc.firmware_bench.vela import run_vela

    g = read_graph(models["toy"])
    v = run_vela(models["toy"])
    assert v.accelerator == "ethos-u55-128" and v.clock_hz == 500e6
    assert v.cycles > 0 and math.isclose(v.inference_seconds, v.cycles / v.clock_hz, rel_tol=1e-3)
    assert v.nn_macs >= g.macs  # Vela adds reductions (MEAN) to its MAC count
    assert v.sram_bytes > 0 and v.flash_bytes > 0 and v.cpu_ops == ()
    t = run_vela(models["topk"])
    ops = {o.op: o.reason for o in t.cpu_ops}
    assert ops["TOPK_V2"] == "Unsupported opType"


# ---- targets -----------------------------------------------------------------------------------------------------
def test_packaged_targets_cover_the_issue_and_cite_sources():
    ts = load_targets()
    assert {"rpi4", "rpi5", "coral", "nrf52840", "stm32h7", "m55-u55"} <= set(ts)
    nrf = ts["nrf52840"]
    assert nrf.clock_hz == 64e6 and nrf.ram_bytes == 256 * 1024 and nrf.flash_bytes == 1024 * 1024
    assert all(t.source for t in ts.values())
    assert ts["m55-u55"].kind == "ethos-u" and ts["m55-u55"].vela_accelerator == "ethos-u55-128"


def test_user_targets_file_extends_and_validates(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[[target]]\nkey = "tiny"\nname = "tiny"\nkind = "mcu"\nclock_hz = 1e6\nram_bytes = 1000\n'
                 'cycles_per_mac = 1.0\nsource = "made up"\n')
    ts = load_targets(p)
    assert ts["tiny"].ram_bytes == 1000 and "rpi4" in ts
    p.write_text('[[target]]\nkey = "bad"\nname = "b"\nkind = "gpu"\nclock_hz = 1e6\nram_bytes = 1\n'
                 'cycles_per_mac = 1.0\nsource = "x"\n')
    with pytest.raises(ConfigError, match="kind"):
        load_targets(p)


def _layer(op: str, *, elements: int = 0, macs: int = 0, broadcast: bool = False, index: int = 0) -> Layer:
    return Layer(index=index, op=op, name=f"{op}_{index}", input_shapes=(), output_shapes=(), params=0,
                 param_bytes=0, nonzero_params=0, macs=macs, other_ops=0, elements=elements, broadcast=broadcast,
                 activation_bytes=0)


def test_estimate_formula_uniform():
    t = Target(key="k", name="k", clock_hz=1e6, ram_bytes=1, cycles_per_mac=2.0, cycles_per_other_op=1.0,
               cycles_per_layer=100.0, overhead_s=0.5, source="s")
    layers = [_layer("CONV_2D", macs=1000), _layer("ADD", elements=200), _layer("MEAN", elements=100),
              _layer("PAD", elements=150), _layer("RESHAPE", elements=50)]
    e = t.estimate(layers)
    assert e.op_costs == "uniform" and e.macs == 1000 and e.elements == 500 and e.other_op_count == 4
    assert e.seconds == pytest.approx((2000 + 500 + 5 * 100) / 1e6 + 0.5)


def test_estimate_formula_with_an_op_cost_table():
    table = OpCosts(key="t", source="made up", per_element={"MEAN": 10.0, "ADD:broadcast": 7.0, "ADD": 3.0},
                    default=2.0)
    layers = [_layer("FULLY_CONNECTED", macs=100), _layer("MEAN", elements=100),
              _layer("ADD", elements=10, broadcast=True), _layer("ADD", elements=10), _layer("PAD", elements=5),
              _layer("SUB", elements=1, broadcast=True)]  # no SUB:broadcast or SUB: the default
    e = estimate_latency(layers, clock_hz=1e3, cycles_per_mac=4.0, op_costs=table, cpi=2.0)
    instructions = 100 * 10 + 10 * 7 + 10 * 3 + 5 * 2 + 1 * 2
    assert e.cycles == pytest.approx(100 * 4 + instructions * 2.0)
    assert e.seconds == pytest.approx(e.cycles / 1e3)
    assert dict(e.op_cycles) == {"MEAN": 2000, "ADD:broadcast": 140, "ADD": 60, "PAD": 20, "SUB": 4}
    assert e.defaulted == ("PAD", "SUB")
    text = e.describe()
    assert "conv/FC MACs" in text and "table t" in text and "CPI 2" in text


def test_element_wise_only_graph_costs_time_and_scales_with_elements(hand):
    """The MCU estimate no longer ignores element-wise and reduction ops: a graph without MACs costs time."""
    from dataclasses import replace

    nrf = load_targets()["nrf52840"]
    g = read_graph(hand)
    assert g.macs == 0
    one = nrf.estimate(g.layers)
    two = nrf.estimate([replace(x, elements=2 * x.elements) for x in g.layers])
    assert one.seconds > 0 and one.other_cycles > 0
    assert two.other_cycles == pytest.approx(2 * one.other_cycles)
    assert two.seconds == pytest.approx(2 * one.seconds)  # nrf52840: no per-op or per-inference constant


#: the 127-op quick `edge` model measured with TFLM + CMSIS-NN on a Cortex-M4 (QEMU icount): its conv/FC MACs and the
#: work elements per op type (read from the file with read_graph), and the measured instructions.
QUICK_MEASURED_TOTAL = 186.3e6
QUICK_MEASURED = {"CONV_2D": 48.7e6, "MEAN": 48e6, "ADD:broadcast": 22e6, "SUB": 20e6, "MUL": 16e6,
                  "REDUCE_MAX": 7.6e6, "ABS": 6.2e6}
QUICK_OPS = [("CONV_2D", 0, 19_167_232), ("FULLY_CONNECTED", 0, 11_840), ("MEAN", 375_808, 0),
             ("ADD:broadcast", 207_904, 0), ("ADD", 96, 0), ("SUB", 207_984, 0), ("MUL", 353_488, 0),
             ("REDUCE_MAX", 62_528, 0), ("ABS", 124_928, 0), ("MAX_POOL_2D", 82_944, 0),
             ("RESIZE_NEAREST_NEIGHBOR", 141_312, 0), ("PAD", 145_408, 0), ("MINIMUM", 82_944, 0),
             ("RELU", 82_944, 0), ("TRANSPOSE", 124_928, 0), ("EQUAL", 62_528, 0), ("CAST", 125_056, 0),
             ("QUANTIZE", 125_056, 0), ("LESS", 62_528, 0), ("REDUCE_MIN", 64, 0), ("CONCATENATION", 136, 0),
             ("RESHAPE", 1_152, 0), ("MAXIMUM", 32, 0), ("DIV", 32, 0)]


def test_op_costs_reproduce_the_measured_instruction_count():
    """Instructions (CPI 1) of the packaged table on the quick model's op list: the measured 186.3 M within 15%,
    and each measured op type within 1% (the table is that measurement divided by the element counts)."""
    table = load_targets()["nrf52840"].op_costs
    assert table is not None and table.key == "tflm-cmsis-nn-armv7em" and "QEMU icount" in table.source
    layers = [_layer(op.split(":")[0], elements=n, macs=macs, broadcast=op.endswith(":broadcast"), index=i)
              for i, (op, n, macs) in enumerate(QUICK_OPS)]
    e = estimate_latency(layers, clock_hz=1.0, cycles_per_mac=table.instructions_per_mac, op_costs=table, cpi=1.0)
    assert e.cycles == pytest.approx(QUICK_MEASURED_TOTAL, rel=0.15)
    assert e.cycles == pytest.approx(QUICK_MEASURED_TOTAL, rel=0.01)  # by construction of the default
    conv = 19_167_232 * table.instructions_per_mac
    assert conv == pytest.approx(QUICK_MEASURED["CONV_2D"], rel=0.01)
    for op, measured in QUICK_MEASURED.items():
        if op != "CONV_2D":
            assert e.op_cycles[op] == pytest.approx(measured, rel=0.01), op


def test_mcu_cycles_per_mac_follow_the_measured_instructions():
    ts = load_targets()
    for key in ("nrf52840", "stm32h7"):
        t = ts[key]
        assert t.op_costs is not None and t.cycles_per_layer == 0
        assert t.cycles_per_mac == pytest.approx(t.op_costs.instructions_per_mac * t.cpi, rel=0.01)
    assert ts["rpi4"].op_costs is None and ts["coral"].op_costs is None  # uniform: no Cortex-M table


def test_user_op_cost_tables_and_their_errors(tmp_path):
    p = tmp_path / "t.toml"
    base = 'name = "x"\nkind = "mcu"\nclock_hz = 1e6\nram_bytes = 1000\ncycles_per_mac = 1.0\nsource = "s"\n'
    p.write_text('[op_costs.mine]\nsource = "my board"\ndefault = 3.0\nper_element = { MEAN = 9.0 }\n'
                 f'[[target]]\nkey = "a"\n{base}op_costs = "mine"\n[[target]]\nkey = "b"\n{base}')
    ts = load_targets(p)
    assert ts["a"].op_costs.per_element == {"MEAN": 9.0} and ts["a"].op_costs.default == 3.0
    assert ts["b"].op_costs.key == "tflm-cmsis-nn-armv7em"  # an mcu without op_costs gets the measured table
    p.write_text(f'[[target]]\nkey = "a"\n{base}op_costs = "nope"\n')
    with pytest.raises(ConfigError, match="no op costs 'nope'"):
        load_targets(p)
    p.write_text('[op_costs.bad]\nsource = "s"\ndefault = 1.0\nper_element = { CONV_2D = 2.0 }\n')
    with pytest.raises(ConfigError, match="MAC ops"):
        load_targets(p)


# ---- the whole report --------------------------------------------------------------------------------------------
def test_report_on_toy_model(models, tmp_path):
    from edge_asc.firmware_bench.render import to_markdown, to_text, write_png
    from edge_asc.firmware_bench.report import build_report

    r = build_report(models["toy"], measure=False, target_keys=["nrf52840", "m55-u55", "rpi4"], hop_seconds=0.048)
    assert r.window_frames == 12 and r.hop_seconds == pytest.approx(3 * 256 / 16000)
    # 16 kHz / hop 256: 1 s of audio is 61 frames, the window 12, so the 1-s MACs scale by 61/12
    assert r.macs_per_second_1s == pytest.approx(fm.TOY_MACS * 61 / 12)
    nrf = r.target("nrf52840")
    assert nrf.provenance == "estimate" and nrf.ram_source.startswith("TFLM arena")
    assert nrf.ram_needed_bytes == r.tflm.arena_bytes + load_targets()["nrf52840"].reserved_ram_bytes
    assert nrf.duty_cycle == pytest.approx(nrf.latency_s / r.hop_seconds)
    u55 = r.target("m55-u55")
    assert u55.provenance == "vela" and u55.latency_s == pytest.approx(r.vela["ethos-u55-128"].inference_seconds)
    d = json.loads(r.to_json())
    assert d["graph"]["macs"] == fm.TOY_MACS and d["graph"]["param_bytes"] == fm.TOY_PARAM_BYTES
    assert [b["passed"] for b in d["budgets"]] == [True, True, True]
    assert d["tflm"]["arena_bytes"] == r.tflm.arena_bytes
    md = to_markdown(r)
    assert "| DCASE 2022-2025 Task 1: <= 128,000 bytes" in md and "estimate" in md and "vela" in md
    assert "CONV_2D" in to_text(r)
    png = tmp_path / "r.png"
    write_png(r, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_a_model_tflm_cannot_run(models):
    from edge_asc.firmware_bench.report import build_report

    r = build_report(models["topk"], run_vela=False, measure=False, target_keys=["nrf52840"])
    t = r.target("nrf52840")
    assert not t.runs and not t.fits and "TOPK_V2" in t.notes[0]
    assert any("window length unknown" in w for w in r.warnings)  # no model card
    assert r.check(["target:nrf52840"]) and r.check(["dcase"]) == []
