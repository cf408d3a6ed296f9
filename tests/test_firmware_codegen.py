"""Firmware generator (edge_asc.firmware_bench.codegen): TFLite's set-up arithmetic, the static memory planner, the
int8 kernels against TensorFlow Lite Micro (every op's output, on seeded inputs covering saturation), the first
diverging op, unsupported ops, the linker's overflow, and runs under QEMU on the three emulated cores."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from apt_tools import require_binary, skip_or_fail
from conftest import require

from edge_asc.firmware_bench.codegen.graph import Model, Op, Tensor
from edge_asc.firmware_bench.codegen.lower import UnsupportedOpError, broadcast, check_supported, nearest_index
from edge_asc.firmware_bench.codegen.plan import ALIGN, Buffer, MemoryPlan, check_plan, plan_memory
from edge_asc.firmware_bench.codegen.quant import mbqm, quantize_multiplier, rdbpot, srdhm

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ---- fixtures -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def op_models(tmp_path_factory) -> dict[str, Path]:
    """The three kernel-coverage models of tests/firmware_codegen_models.py, converted once per session."""
    require("tensorflow")
    require("tflite_micro")
    from firmware_codegen_models import MODELS

    d = tmp_path_factory.mktemp("fw_op_models")
    out = {}
    for name, build in MODELS.items():
        out[name] = d / f"{name}.tflite"
        out[name].write_bytes(build())
    return out


@pytest.fixture(scope="session")
def host_cc() -> None:
    """The host C compiler (cc) and make, installed with apt when missing and running as root; without them the
    test is skipped, or fails under CI."""
    require_binary("gcc", "cc")
    require_binary("make", "make")


@pytest.fixture(scope="session")
def arm_toolchain() -> None:
    """arm-none-eabi-gcc + newlib + qemu-system-arm, installed with apt when missing and running as root (what
    ``make firmware-toolchain`` does); without them the test is skipped, or fails under CI."""
    from edge_asc.firmware_bench.codegen import install_arm_toolchain
    from edge_asc.firmware_bench.codegen.runner import APT_PACKAGES

    if not install_arm_toolchain():
        skip_or_fail(f"arm-none-eabi-gcc with newlib or qemu-system-arm not found and could not be installed: run "
                     f"'sudo apt-get install {' '.join(APT_PACKAGES)}' (or 'sudo make firmware-toolchain')")


# ---- TFLite's arithmetic --------------------------------------------------------------------------------------------

def test_quantize_multiplier_matches_frexp_with_round_half_away_and_carry():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.75) == (0x60000000, 0)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -40) == (0, 0)           # shift < -31 flushes to zero
    assert quantize_multiplier(1 - 2.0 ** -40) == (1 << 30, 1)  # rounds up to 2^31: halved, shift + 1
    m, s = quantize_multiplier(0.1)
    assert abs(m * 2.0 ** (s - 31) - 0.1) < 1e-9 and (1 << 30) <= m < (1 << 31)


def test_fixed_point_helpers_on_edge_values():
    assert srdhm(INT32_MIN, INT32_MIN) == INT32_MAX             # the one saturating case
    assert srdhm(1 << 30, 1 << 30) == 1 << 29
    assert srdhm(-(1 << 30), 1 << 30) == -(1 << 29)
    assert rdbpot(5, 1) == 3 and rdbpot(-5, 1) == -3 and rdbpot(4, 1) == 2  # ties away from zero
    assert rdbpot(-7, 2) == -2 and rdbpot(7, 2) == 2
    assert mbqm(1000, 1 << 30, -1) == 250                       # 1000 * 0.5 * 0.5
    assert mbqm(3, 1 << 30, 2) == 6                             # left shift 2, x 0.5


def test_the_kernels_shortcuts_equal_tflites_rounding():
    """The identities the fast C kernels rely on (ek_kernels.h), on random and edge values: SRDHM with a multiplier
    >= 0 is one floor shift; for |a| < 2^30 it is the rounded high word of 2a x m (SMMULR); RoundingDivideByPOT is
    one add and a shift when the add cannot overflow."""
    rng = random.Random(3)
    for _ in range(20_000):
        m = rng.choice([0, 1, (1 << 30), (1 << 31) - 1, rng.randint(1 << 30, (1 << 31) - 1)])
        a = rng.choice([rng.randint(INT32_MIN, INT32_MAX), rng.randint(-(1 << 30) + 1, (1 << 30) - 1),
                        rng.randint(-70000, 70000) << rng.randint(0, 12)])
        a = max(INT32_MIN, min(INT32_MAX, a))
        assert srdhm(a, m) == (a * m + (1 << 30)) >> 31
        if abs(a) < 1 << 30:
            assert srdhm(a, m) == (2 * a * m + (1 << 31)) >> 32
        e = rng.randint(1, 31)
        x = rng.choice([rng.randint(-(1 << 30), (1 << 30)), (rng.randint(-999, 999) << e) + (1 << (e - 1))])
        if abs(x) + (1 << (e - 1)) < 1 << 31:
            assert rdbpot(x, e) == (x + (1 << (e - 1)) + (-1 if x < 0 else 0)) >> e


def test_broadcast_collapses_contiguous_dims_and_zeroes_broadcast_strides():
    b = broadcast((1, 8, 6, 4), (1, 1, 6, 1), (1, 8, 6, 4))
    dims, st1, st2 = b["dims"][:b["nd"]], b["st1"][:b["nd"]], b["st2"][:b["nd"]]
    assert dims == [8, 6, 4] and st1 == [24, 4, 1] and st2 == [0, 1, 0]
    same = broadcast((2, 3), (2, 3), (2, 3))
    assert same["nd"] == 0 and same["size"] == 6
    scalar = broadcast((4, 5), (1,), (4, 5))
    assert scalar["dims"][:scalar["nd"]] == [20] and scalar["st2"][:1] == [0]


def test_nearest_index_half_pixel_and_align_corners():
    assert nearest_index(4, 2, False, True) == [0, 0, 1, 1]
    assert nearest_index(3, 2, False, False) == [0, 0, 1]
    assert nearest_index(3, 2, True, False) == [0, 1, 1]       # round(0.5) = 1 (ties away from zero)


# ---- the memory planner ---------------------------------------------------------------------------------------------

def _random_model(seed: int, n_ops: int = 40) -> Model:
    rng = random.Random(seed)
    tensors = [Tensor(index=0, name="in", shape=(rng.randint(1, 300),), dtype="int8")]
    ops = []
    for k in range(n_ops):
        ins = tuple(rng.sample(range(len(tensors)), k=min(len(tensors), rng.randint(1, 3))))
        name = "RESHAPE" if rng.random() < 0.15 else "ADD"
        size = tensors[ins[0]].size if name == "RESHAPE" else rng.randint(1, 500)
        tensors.append(Tensor(index=len(tensors), name=f"t{k}", shape=(size,), dtype="int8"))
        ops.append(Op(index=k, name=name, custom=False, inputs=ins[:1] if name == "RESHAPE" else ins,
                      outputs=(len(tensors) - 1,), options={}))
    return Model(tensors=tuple(tensors), ops=tuple(ops), inputs=(0,), outputs=(len(tensors) - 1,))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("in_place", [False, True])
def test_planner_never_clobbers_a_tensor_before_its_last_read(seed, in_place):
    """Run the plan: every op first checks that each input's bytes still hold that input's value, then writes its
    outputs. A re-view (RESHAPE) is the same value; an in-place op overwrites an input that dies with it."""
    model = _random_model(seed)
    plan = plan_memory(model, in_place=in_place)
    arena = np.full(plan.arena_bytes, -1, dtype=np.int64)
    value = {0: 0}
    arena[plan.offsets[0]:plan.offsets[0] + model.tensors[0].size] = 0
    for k, op in enumerate(model.ops):
        for i in op.inputs:
            off = plan.offsets[i]
            assert plan.offsets[i] % ALIGN == 0
            assert (arena[off:off + model.tensors[i].size] == value[i]).all(), f"op {k} reads a clobbered tensor {i}"
        o = op.outputs[0]
        value[o] = value[op.inputs[0]] if op.name == "RESHAPE" else 1000 + k
        if op.name == "RESHAPE":
            assert plan.offsets[o] == plan.offsets[op.inputs[0]]
        arena[plan.offsets[o]:plan.offsets[o] + model.tensors[o].size] = value[o]
    out = model.outputs[0]
    assert (arena[plan.offsets[out]:plan.offsets[out] + model.tensors[out].size] == value[out]).all()
    assert plan.arena_bytes >= plan.peak_live_bytes > 0
    if in_place:
        assert plan.arena_bytes <= plan_memory(model, in_place=False).arena_bytes


def test_check_plan_rejects_overlapping_live_buffers():
    a = Buffer(tensors=(1,), size=32, first=0, last=2, offset=0)
    b = Buffer(tensors=(2,), size=32, first=2, last=3, offset=16)
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(MemoryPlan(buffers=(a, b), arena_bytes=48, offsets={1: 0, 2: 16}, peak_live_bytes=64))
    check_plan(MemoryPlan(buffers=(a, dataclasses.replace(b, first=3)), arena_bytes=48, offsets={},
                          peak_live_bytes=32))


def test_unsupported_op_is_one_line_naming_it():
    t = (Tensor(index=0, name="x", shape=(4,), dtype="int8"), Tensor(index=1, name="y", shape=(4,), dtype="int8"))
    model = Model(tensors=t, ops=(Op(index=0, name="HARD_SWISH", custom=False, inputs=(0,), outputs=(1,), options={}),
                                  Op(index=1, name="foo", custom=True, inputs=(1,), outputs=(1,), options={}),
                                  Op(index=2, name="ADD", custom=True, inputs=(1,), outputs=(1,), options={})),
                  inputs=(0,), outputs=(1,))
    with pytest.raises(UnsupportedOpError) as err:
        check_supported(model)
    msg = str(err.value)
    assert "\n" not in msg and "HARD_SWISH" in msg and "CUSTOM:foo" in msg and "CUSTOM:ADD" in msg


# ---- kernels against TFLite Micro -----------------------------------------------------------------------------------

@pytest.mark.usefixtures("host_cc")
@pytest.mark.parametrize("name", ["conv", "elementwise", "movement"])
def test_every_op_output_is_bit_exact_with_tflite_micro(name, op_models, tmp_path):
    from edge_asc.firmware_bench.codegen.project import generate
    from edge_asc.firmware_bench.codegen.verify import compare, first_divergence, seeded_inputs

    path = op_models[name]
    buf = path.read_bytes()
    project = generate(buf, "nrf52840", tmp_path / name)
    x = seeded_inputs(buf, 20, seed=11)
    c = compare(project, path, x)
    assert c.bit_exact, c.divergence
    assert (np.abs(x.astype(int)) >= 127).any()  # saturating inputs are part of the test
    for k in (0, 7):  # every intermediate tensor, not just the output
        assert first_divergence(project, path, x[k], k) is None


def test_a_resize_feeding_a_pad_is_fused_and_its_tensor_never_materialised(op_models):
    from edge_asc.firmware_bench.codegen.graph import read_model
    from edge_asc.firmware_bench.codegen.lower import find_fusions

    model = read_model(op_models["movement"].read_bytes())
    fusions = find_fusions(model)
    assert fusions and all(model.ops[k].name == "RESIZE_NEAREST_NEIGHBOR" and model.ops[k2].name == "PAD"
                           for k, k2 in fusions.items())
    plan = plan_memory(model, fusions=fusions)
    for k in fusions:
        assert model.ops[k].outputs[0] not in plan.offsets
    assert plan.arena_bytes <= plan_memory(model).arena_bytes


@pytest.mark.usefixtures("host_cc")
def test_the_first_diverging_op_is_reported(op_models, tmp_path):
    from edge_asc.firmware_bench.codegen.project import generate
    from edge_asc.firmware_bench.codegen.verify import first_divergence, seeded_inputs

    path = op_models["elementwise"]
    buf = path.read_bytes()
    project = generate(buf, "nrf52840", tmp_path / "broken")
    sub = project.op_names.index("SUB")
    src = (tmp_path / "broken" / "ek_model.c").read_text()
    src, n = re.subn(rf"(static const ek_addsub_t ek_p{sub} = .*?\.out_offset = )(-?\d+)",
                     lambda m: m.group(1) + str(int(m.group(2)) + 3), src, flags=re.S)
    assert n == 1
    (tmp_path / "broken" / "ek_model.c").write_text(src)
    x = seeded_inputs(buf, 4)
    div = first_divergence(project, path, x[1], 1)
    assert div is not None and div.op_index == sub and div.op_name == "SUB" and div.row == 1
    assert 0 < div.n_diff <= div.n_elements and div.max_abs_diff >= 1
    assert str(div).startswith(f"first diverging op: {sub} (SUB)")


@pytest.mark.usefixtures("host_cc")
def test_cli_host_build_reports_bit_exact(op_models, tmp_path, capsys):
    from edge_asc.cli import main

    out = tmp_path / "fw"
    rc = main(["firmware", str(op_models["movement"]), "--target", "stm32h7", "--out", str(out), "--host",
               "--verify", "5", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    assert "host: 5/5 seeded inputs identical to TFLite Micro: bit-exact" in capsys.readouterr().out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["bit_exact"] is True and rep["target"] == "stm32h7" and rep["arena_bytes"] > 0
    assert (out / "Makefile").exists() and (out / "link.ld").exists() and (out / "firmware_report.json").exists()


def test_cli_rejects_bad_options(tmp_path, capsys):
    from edge_asc.cli import main

    assert main(["firmware", "m.tflite", "--target", "esp32", "--out", str(tmp_path)]) == 2
    assert main(["firmware", "m.tflite", "--target", "m55", "--out", str(tmp_path), "--verify", "-1"]) == 2
    assert "--verify must be >= 0" in capsys.readouterr().err


# ---- the chip: linker limits and QEMU -------------------------------------------------------------------------------

def test_link_overflow_names_the_region_and_the_bytes(arm_toolchain, op_models, tmp_path):
    from edge_asc.firmware_bench.codegen import LinkOverflowError, generate, get_chip
    from edge_asc.firmware_bench.codegen.runner import build

    tiny_ram = dataclasses.replace(get_chip("nrf52840"), key="tiny", name="a 2 KiB RAM chip", ram_bytes=2048)
    project = generate(op_models["movement"].read_bytes(), tiny_ram, tmp_path / "ram")
    with pytest.raises(LinkOverflowError) as err:
        build(project, "arm")
    assert err.value.region == "RAM" and err.value.exit_code == 3
    assert err.value.overflow_bytes >= project.arena_bytes + 4096 - 2048 - 64
    assert "region RAM by" in str(err.value)
    tiny_flash = dataclasses.replace(get_chip("nrf52840"), key="tinyf", name="a 2 KiB flash chip", flash_bytes=2048)
    project = generate(op_models["movement"].read_bytes(), tiny_flash, tmp_path / "flash")
    with pytest.raises(LinkOverflowError) as err:
        build(project, "arm")
    assert err.value.region == "FLASH"


@pytest.mark.parametrize("target", ["nrf52840", "stm32h7", "m55"])
def test_qemu_runs_are_bit_exact_and_measured_on_each_core(target, arm_toolchain, op_models, tmp_path):
    from edge_asc.firmware_bench.codegen import firmware

    rep = firmware(op_models["elementwise"], target, tmp_path / target, run=True, n_verify=5)
    assert rep.bit_exact and rep.comparisons[0]["where"] == "qemu"
    assert 0 < rep.flash_bytes < rep.chip_flash_bytes and rep.arena_bytes < rep.ram_bytes < rep.chip_ram_bytes
    assert rep.stack_bytes > 0 and rep.instructions > 1000
    assert sum(c.instructions for c in rep.op_costs) <= rep.instructions * 1.01
    assert rep.est_ms == pytest.approx(rep.instructions * rep.cpi / rep.clock_hz * 1e3)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["micro", "edge"])
def test_exported_preset_runs_bit_exact_on_the_m4(preset, arm_toolchain, tmp_path, capsys):
    require("tflite_micro")
    from edge_asc.cli import main
    from edge_asc.export import export_untrained_int8
    from edge_asc.model import resolve_preset

    (tmp_path / "export").mkdir()
    model, _ = export_untrained_int8(resolve_preset(preset).config, tmp_path / "export")
    out = tmp_path / "fw"
    assert main(["firmware", str(model), "--target", "nrf52840", "--out", str(out), "--run", "--verify", "20"]) == 0
    text = capsys.readouterr().out
    assert "qemu: 20/20 seeded inputs identical to TFLite Micro: bit-exact" in text
    rep = json.loads((out / "firmware_report.json").read_text())
    assert rep["bit_exact"] and rep["instructions"] > rep["macs"] and rep["ram_bytes"] <= 256 * 1024
    assert rep["provenance"]["instructions"].startswith("measured (qemu mps2-an386")


def test_report_uses_a_measured_firmware_run_and_ignores_one_of_another_file(arm_toolchain, op_models, tmp_path):
    from edge_asc.firmware_bench.codegen import firmware
    from edge_asc.firmware_bench.report import build_report

    rep = firmware(op_models["conv"], "nrf52840", tmp_path / "fw", run=True, n_verify=2)
    other = firmware(op_models["movement"], "stm32h7", tmp_path / "other", run=True, n_verify=0)
    r = build_report(op_models["conv"], target_keys=["nrf52840", "stm32h7"], run_tflm=False, run_vela=False,
                     measure=False, firmware=(tmp_path / "fw", tmp_path / "other"))
    nrf, h7 = r.target("nrf52840"), r.target("stm32h7")
    assert nrf.provenance == "firmware (qemu)" and nrf.ram_source.startswith("generated firmware")
    assert nrf.latency_s == pytest.approx(rep.instructions * 1.25 / 64e6)
    assert nrf.ram_needed_bytes == rep.ram_bytes + 65_536 and nrf.flash_needed_bytes == rep.flash_bytes + 262_144
    assert h7.provenance == "estimate" and other.report_target == "stm32h7"
    assert any("another model file" in w for w in r.warnings)
