"""The firmware's front end (edge_asc/firmware_bench/codegen/frontend.py, c/ek_frontend.c, c/ek_app.c): int16 audio
through the generated C program (ring buffer -> streaming log-mel -> int8 input tensor) against edge_asc.frontend
(log-mel within 0.01 dB) and Classifier.input_tensor (int8 equal in >= 99.9% of the elements, the rest within one
step), on seeded signals from silence to full scale; under QEMU on the Cortex-M4, the instructions per hop, flash and
RAM of front end + model, and the link that fails when the front end does not fit.

The tiny model of tests/runtime_models.py carries the 'edge' front end (16 kHz, n_fft 512, hop 256, 64 mels) in its
card (with a non-trivial normalisation). The conv model of tests/firmware_codegen_models.py (13 x 11 x 3 input)
covers two more: the edge spec at 13 mels with deltas, and the 'micro' spec (hop = n_fft = 512) the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from apt_tools import require_binary, skip_or_fail
from conftest import require

from edge_asc.audio import to_float32
from edge_asc.errors import ConfigError, ModelContractError
from edge_asc.frontend import offline, windows

LOGMEL_DB = 0.01


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def signals(sr: int, seconds: float) -> dict[str, np.ndarray]:
    """Seeded int16 test signals: silence, full-scale tone and square wave, full-scale clipped noise, a chirp, noise
    a few steps above zero."""
    n = round(sr * seconds)
    t = np.arange(n) / sr
    rng = np.random.default_rng(7)
    return {
        "silence": np.zeros(n, np.int16),
        "full-scale tone": _int16(32767 * np.sin(2 * np.pi * 1000.3 * t)),
        "full-scale square": _int16(32767 * np.sign(np.sin(2 * np.pi * 440 * t))),
        "full-scale clipped noise": _int16(rng.standard_normal(n) * 30000),
        "chirp": _int16(20000 * np.sin(2 * np.pi * (100 * t + 0.2 * sr * t * t / seconds))),
        "quiet noise": _int16(rng.standard_normal(n) * 3),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """'edge': tests/runtime_models.py's tiny model with its card (edge spec, norm -50/20 dB); 'deltas': the conv model
    of tests/firmware_codegen_models.py with a card giving it the edge spec at 13 mels with deltas (3 channels)."""
    require("tensorflow")
    require("ai_edge_litert")
    from firmware_codegen_models import conv_model
    from runtime_models import build_model

    from edge_asc.artifact import read_artifact
    from edge_asc.spec import PRESETS, ModelCard, QuantParams, frontend_for_model
    from edge_asc.tflite_meta import embed_model_card

    d = tmp_path_factory.mktemp("fw_frontend_models")
    edge, _ = build_model()
    raw = conv_model()
    art = read_artifact(raw)
    i, o = art.tensors[art.inputs[0]], art.tensors[art.outputs[0]]
    spec = frontend_for_model(PRESETS["edge"], n_mels=13, channels=3).replace(
        norm_mean=(-40.0, 0.0, 0.0), norm_std=(20.0, 2.0, 1.0))

    def qp(t):
        s, z = t.quantization.per_tensor
        return QuantParams(dtype="int8", scale=s, zero_point=z)

    card = ModelCard(labels=("a", "b", "c", "d"), frontend=spec, window_frames=11, input_quant=qp(i),
                     output_quant=qp(o), model_preset="test-conv")
    # the micro spec: frames side by side (hop = n_fft = 512), so no sample is in two STFT frames
    micro = dataclasses.replace(card, frontend=frontend_for_model(PRESETS["micro"], n_mels=13, channels=3).replace(
        norm_mean=(-40.0, 0.0, 0.0), norm_std=(20.0, 2.0, 1.0)))
    out = {"edge": d / "edge.tflite", "deltas": d / "deltas.tflite", "micro-hop": d / "micro.tflite",
           "nocard": d / "nocard.tflite"}
    out["edge"].write_bytes(edge)
    out["deltas"].write_bytes(embed_model_card(raw, card))
    out["micro-hop"].write_bytes(embed_model_card(raw, micro))
    out["nocard"].write_bytes(raw)
    return out


@pytest.fixture(scope="module")
def host_cc() -> None:
    require_binary("gcc", "cc")
    require_binary("make", "make")


@pytest.fixture(scope="module")
def arm_toolchain() -> None:
    from edge_asc.firmware_bench.codegen import install_arm_toolchain
    from edge_asc.firmware_bench.codegen.runner import APT_PACKAGES

    if not install_arm_toolchain():
        skip_or_fail(f"arm-none-eabi-gcc with newlib or qemu-system-arm not found and could not be installed: run "
                     f"'sudo apt-get install {' '.join(APT_PACKAGES)}'")


@pytest.mark.usefixtures("host_cc")
@pytest.mark.parametrize("name", ["edge", "deltas", "micro-hop"])
def test_host_build_matches_the_python_front_end_and_the_classifier(name, models, tmp_path):
    from edge_asc.firmware_bench.codegen import generate
    from edge_asc.firmware_bench.codegen.runner import run_app_host
    from edge_asc.runtime import Classifier

    data = models[name].read_bytes()
    project = generate(data, "nrf52840", tmp_path / "fw", frontend="card")
    clf = Classifier(data)
    spec, frames = clf.card.frontend, clf.card.window_frames
    assert project.frontend.source == "model card" and project.frontend.spec == spec
    worst, n_el, n_eq = 0.0, 0, 0
    for what, audio in signals(spec.sample_rate, 1.6).items():
        run = run_app_host(project, audio)
        ref = offline(to_float32(audio), spec)                            # float32[C, n_mels, T] dB
        got = run.features.transpose(1, 2, 0)
        assert got.shape == ref.shape, what
        err = float(np.abs(got - ref).max())
        assert err <= LOGMEL_DB, f"{what}: log-mel differs by {err:.4f} dB"
        worst = max(worst, err)
        want = np.stack([clf.input_tensor(w).reshape(-1) for w in windows(ref, frames)])
        assert run.inputs.shape == want.shape, what                      # same windows (starts 0, H, 2H, ...)
        diff = np.abs(run.inputs.astype(int) - want.astype(int))
        assert diff.max() <= 1, f"{what}: an int8 element differs by {diff.max()} steps"
        n_el += diff.size
        n_eq += int((diff == 0).sum())
        assert run.overrun_samples == 0
    assert n_eq >= 0.999 * n_el, f"int8 input tensors equal in {n_eq}/{n_el} elements"
    # silence is exact: every band sits on the log floor (and its deltas are 0)
    silent = run_app_host(project, np.zeros(spec.samples_for_frames(frames), np.int16)).features
    assert np.all(silent[:, 0] == np.float32(10 * np.log10(spec.amin))) and np.abs(silent[:, 1:]).max(initial=0) < 1e-5


def test_plan_errors_are_one_line(models):
    from firmware_codegen_models import elementwise_model

    from edge_asc.firmware_bench.codegen.frontend import plan_frontend
    from edge_asc.firmware_bench.codegen.graph import read_model

    raw = models["nocard"].read_bytes()
    with pytest.raises(ConfigError, match="no model card"):
        plan_frontend(read_model(raw))
    plan = plan_frontend(read_model(raw), preset="edge")                 # fitted to the 13 x 11 x 3 input
    assert (plan.spec.n_mels, plan.spec.deltas, plan.window_frames, plan.hop_frames) == (13, 2, 11, 5)
    with pytest.raises(ModelContractError, match="int8 input tensor; the model's input is float32"):
        plan_frontend(read_model(elementwise_model()), preset="edge")
    from edge_asc.artifact import read_artifact

    card = read_artifact(models["deltas"].read_bytes()).card
    odd = dataclasses.replace(card, frontend=card.frontend.replace(n_fft=480, win_length=480))
    with pytest.raises(ConfigError, match="power-of-two n_fft") as e:
        plan_frontend(read_model(raw), card=odd)
    assert "\n" not in str(e.value)


def test_qemu_m4_measures_the_front_end_per_hop_and_links_it(arm_toolchain, models, tmp_path):
    from edge_asc.firmware_bench.codegen import firmware
    from edge_asc.firmware_bench.report import build_report

    rep = firmware(models["edge"], "nrf52840", tmp_path / "fw", run=True, n_verify=2, frontend="card")
    fe = rep.frontend
    assert rep.bit_exact
    # int16 audio -> int8 input tensors on the emulated M4 agree with the Python front end
    assert fe["int8_equal"] >= 0.999 * fe["int8_elements"] > 0 and fe["int8_max_step"] <= 1
    lo, hi = fe["hop_instructions_range"]
    assert 10_000 < lo <= fe["hop_instructions"] <= hi < 1.05 * lo   # one STFT frame costs the same every hop
    assert fe["flash_bytes"] > rep.flash_bytes and fe["ram_bytes"] > rep.ram_bytes
    # the symbols the model-only firmware lacks: at least the window + twiddle tables, and the audio ring, the FFT
    # buffer and the int8 feature ring of the edge spec (1024 x int16, 512 x int64, 61 x 64 x int8)
    assert 4 * (512 + 512) < fe["flash_added_bytes"] < fe["flash_bytes"]
    assert 2 * 1024 + 8 * 512 + 61 * 64 <= fe["ram_added_bytes"] < fe["ram_bytes"]
    s = rep.cpi / rep.clock_hz
    assert fe["audio_to_label_ms"] == pytest.approx(
        (fe["hop_instructions"] + fe["window_instructions"] + fe["model_instructions"]) * s * 1e3)
    assert fe["duty_cycle"] == pytest.approx(
        (30 * fe["hop_instructions"] + fe["window_instructions"] + fe["model_instructions"]) * s / (30 * 0.016))
    r = build_report(models["edge"], target_keys=["nrf52840"], run_tflm=False, run_vela=False, measure=False,
                     firmware=(tmp_path / "fw",))
    t = r.target("nrf52840")
    assert t.frontend["hop_instructions"] == fe["hop_instructions"]
    # the target's duty cycle counts the front end: its hops per window stride on top of the model
    assert t.duty_cycle == pytest.approx(t.frontend["duty_cycle"])
    assert t.duty_cycle > t.latency_s / r.hop_seconds + 0.05
    assert t.ram_needed_bytes == fe["ram_bytes"] + 65_536 and t.flash_needed_bytes == fe["flash_bytes"] + 262_144
    assert any("front end on the device" in n for n in t.notes)


def test_a_front_end_that_does_not_fit_fails_the_link(arm_toolchain, models, tmp_path):
    from edge_asc.firmware_bench.codegen import LinkOverflowError, generate, get_chip
    from edge_asc.firmware_bench.codegen.runner import build, run_app_qemu

    data = models["edge"].read_bytes()
    alone = generate(data, "nrf52840", tmp_path / "alone")
    model_ram = sum(v for k, v in _sizes(build(alone, "arm")).items() if k in (".data", ".bss")) + 4096
    tight = dataclasses.replace(get_chip("nrf52840"), ram_bytes=model_ram + 1024)  # the model alone fits
    project = generate(data, tight, tmp_path / "tight", frontend="card")
    with pytest.raises(LinkOverflowError) as e:
        run_app_qemu(project, np.zeros(16_000, np.int16))
    assert e.value.region == "RAM" and e.value.overflow_bytes > 0
    assert str(e.value).startswith("the firmware with its front end does not fit")


def _sizes(elf):
    from edge_asc.firmware_bench.codegen.runner import section_sizes

    return section_sizes(elf)


@pytest.mark.usefixtures("host_cc")
def test_cli_host_build_with_the_front_end_reports_its_parity(models, tmp_path, capsys):
    import json

    from edge_asc.cli import main

    out = tmp_path / "fw"
    assert main(["firmware", str(models["edge"]), "--target", "stm32h7", "--out", str(out), "--host", "--frontend",
                 "--verify", "0"]) == 0
    assert "front end, host build on seeded audio: log-mel within" in capsys.readouterr().out
    fp = json.loads((out / "firmware_report.json").read_text())["frontend_parity"]
    assert fp["frames"] == 91 and fp["max_db"] <= LOGMEL_DB and fp["windows"] == 2   # 61 + 30 frames: two windows
    assert fp["int8_equal"] >= 0.999 * fp["int8_elements"] == 0.999 * 2 * 64 * 61 and fp["int8_max_step"] <= 1
