"""The int8 simulation of edge_asc.train.qat against LiteRT, op by op, and the QAT checkpoint.

Each op-level test builds the same small graph twice: in torch from the simulation's own pieces (Quantiser, block
functions), and in TensorFlow (NHWC), converted to full int8 by the TFLite converter with the same representative
windows. The simulation must give the converter's quantisation parameters and the int8 outputs within one step.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from conftest import require

torch = require("torch")
F = torch.nn.functional
require("ai_edge_litert.interpreter")

from edge_asc.errors import ConfigError
from edge_asc.train.qat import (
    Quantiser,
    QuantSim,
    activation_qparams,
    fq_weight,
    q_conv_block,
    q_recip,
    q_unpool,
)


# ---- helpers ----------------------------------------------------------------------------------------------------
def _convert(fn, shape, calib):
    """Full-int8 TFLite of the tf function ``fn`` (one float32 input of ``shape``), calibrated on ``calib``."""
    import tensorflow as tf

    cf = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1].astype(np.float32)] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def _run(model: bytes, xs: np.ndarray):
    """int8 output codes of ``model`` for each row of ``xs`` (float, quantised with the input's parameters), and the
    output's (scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    si, zi = i["quantization"]
    out = []
    for x in xs:
        it.set_tensor(i["index"], np.clip(np.rint(x[None] / si) + zi, -128, 127).astype(np.int8))
        it.invoke()
        out.append(it.get_tensor(o["index"])[0].astype(np.int64))
    return np.stack(out), o["quantization"]


def _op_output_quant(model: bytes, op_name: str) -> list[tuple[float, int]]:
    """(scale, zero point) of the output of every ``op_name`` op, in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_asc.export.convert import tflite_ops

    q = {t["index"]: t["quantization"] for t in Interpreter(model_content=model).get_tensor_details()}
    return [q[op.outputs[0]] for op in tflite_ops(model) if op.name == op_name]


def _sim(q: Quantiser, fn, calib, xs):
    """Observe ``fn`` on ``calib`` (as the converter calibrates), then run it fake-quantised on ``xs``."""
    q.observe(fn, [torch.from_numpy(calib)])
    q.mode = "quant"
    with torch.no_grad():
        return fn(torch.from_numpy(xs)).numpy()


def _codes(y: np.ndarray, qp: tuple[float, int]) -> np.ndarray:
    return np.clip(np.rint(y / qp[0]) + qp[1], -128, 127).astype(np.int64)


def _same_qparams(a, b):
    assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-4), (a, b)


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def tf():
    return require("tensorflow")


# ---- quantisation parameters ---------------------------------------------------------------------------------------
def test_activation_qparams_like_the_converter():
    assert activation_qparams(0.0, 6.0) == (pytest.approx(6 / 255), -128)
    assert activation_qparams(-6.0, 0.0) == (pytest.approx(6 / 255), 127)
    s, zp = activation_qparams(0.5, 3.0)  # a range is widened to include 0
    assert zp == -128 and s == pytest.approx(3 / 255)
    s, zp = activation_qparams(-1.0, 3.0)
    assert -128 <= zp <= 127 and abs((zp + 128) * s - 1.0) < s / 2  # 0 is a grid point: -1 = (-128 - zp) * s


def test_weights_per_channel_symmetric():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.01, 0.02, -0.04]])
    q = fq_weight(w)
    s = w.abs().amax(1, keepdim=True) / 127
    codes = torch.round(q / s)
    assert torch.all(codes.abs().amax(1) == 127) and torch.all(codes.abs() <= 127)
    assert torch.allclose(q, codes * s)


# ---- single ops against LiteRT -----------------------------------------------------------------------------------
def test_conv_bn_relu6_folded_per_channel(tf, rng):
    from edge_asc.model.layers import SamePadConv2d

    torch.manual_seed(0)
    conv = SamePadConv2d(3, 5, (2, 3))
    bn = torch.nn.BatchNorm2d(5).eval()
    bn.running_mean.copy_(torch.randn(5) * 0.3)
    bn.running_var.copy_(torch.rand(5) + 0.5)
    bn.weight.data.copy_(torch.rand(5) + 0.5)
    bn.bias.data.copy_(torch.randn(5) * 0.2)
    blk = types.SimpleNamespace(conv=conv, norm=bn, act=torch.nn.Hardtanh(0.0, 6.0))
    calib = rng.standard_normal((32, 8, 9, 3)).astype(np.float32)
    xs = rng.standard_normal((8, 8, 9, 3)).astype(np.float32)
    w = conv.conv.weight.detach().numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
    b = conv.conv.bias.detach().numpy()
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()

    def tf_fn(x):
        y = tf.nn.conv2d(x, w, strides=1, padding="SAME") + b
        return tf.nn.relu6(tf.nn.batch_normalization(y, mean, var, beta, gamma, bn.eps))

    model = _convert(tf_fn, (1, 8, 9, 3), calib)
    q = Quantiser()
    y = _sim(q, lambda x: q_conv_block(q, "conv", blk, q.a("input", x)), nchw(calib), nchw(xs))
    codes, oq = _run(model, xs)
    _same_qparams(q.quant_params()["conv"], oq)
    assert np.abs(_codes(y, oq).transpose(0, 2, 3, 1) - codes).max() <= 1


def test_fully_connected(tf, rng):
    w = rng.standard_normal((8, 16)).astype(np.float32) * np.linspace(0.05, 1, 8, dtype=np.float32)[:, None]
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    calib = rng.standard_normal((32, 16)).astype(np.float32)
    xs = rng.standard_normal((16, 16)).astype(np.float32)
    model = _convert(lambda x: tf.matmul(x, w.T) + b, (1, 16), calib)
    q = Quantiser()
    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    y = _sim(q, lambda x: q.a("out", F.linear(q.a("input", x), q.w(wt), bt)), calib, xs)
    codes, oq = _run(model, xs)
    _same_qparams(q.quant_params()["out"], oq)
    assert np.abs(_codes(y, oq) - codes).max() <= 1


def test_sub_mul_relu6_in_place_range(tf, rng):
    """MEAN, SUB (broadcast), MUL by a scalar with fused RELU6, MAX_POOL_2D. The SUB's only consumer is that MUL,
    which LiteRT runs in the SUB's buffer, so the calibrated SUB range also covers the MUL's output (``merge``). (Not
    when the MUL writes a graph output: those get their own buffer; hence the pooling.)"""
    calib = rng.standard_normal((32, 6, 7, 4)).astype(np.float32)
    xs = rng.standard_normal((8, 6, 7, 4)).astype(np.float32)

    def tf_fn(x):
        y = tf.nn.relu6((x - tf.reduce_mean(x, axis=(1, 2), keepdims=True)) * 4.0)
        return tf.nn.max_pool2d(y, 2, 2, "VALID")

    model = _convert(tf_fn, (1, 6, 7, 4), calib)
    q = Quantiser()

    def fn(x):
        x = q.a("input", x)
        d = q.a("d", x - q.a("mu", x.mean(dim=(2, 3), keepdim=True)), merge="out")
        return F.max_pool2d(q.a("out", F.relu6(d * 4.0)), 2, 2)

    y = _sim(q, fn, nchw(calib), nchw(xs))
    _same_qparams(q.quant_params()["d"], _op_output_quant(model, "SUB")[0])
    hi = q.range_of("d")[1]
    assert hi >= 6.0 - 1e-6 > q.observed["d"][1]  # the merge widened it to the MUL's [0, 6]
    codes, oq = _run(model, xs)
    _same_qparams(q.quant_params()["out"], oq)
    assert np.abs(_codes(y, oq).transpose(0, 2, 3, 1) - codes).max() <= 1


def test_mul_add_constants(tf, rng):
    """MUL by a constant vector (quantised per tensor) then ADD of a scalar, in place; MUL (broadcast) by the
    result: the MixupNorm's ``a = r * (1 - lam) w + lam`` and ``d * a``."""
    c = (rng.random(4) + 0.3).astype(np.float32)
    calib = (rng.standard_normal((32, 5, 6, 4)) + 1.0).astype(np.float32)
    xs = (rng.standard_normal((8, 5, 6, 4)) + 1.0).astype(np.float32)

    def tf_fn(x):
        a = tf.reduce_mean(x, axis=(1, 2), keepdims=True) * c + 0.1
        return x * a

    model = _convert(tf_fn, (1, 5, 6, 4), calib)
    q = Quantiser()
    ct = torch.from_numpy(c).view(1, -1, 1, 1)

    def fn(x):
        x = q.a("input", x)
        r = q.a("mu", x.mean(dim=(2, 3), keepdim=True))
        a = q.a("a", q.a("rw", r * q.c(ct), merge="a") + 0.1)
        return q.a("out", x * a)

    y = _sim(q, fn, nchw(calib), nchw(xs))
    _same_qparams(q.quant_params()["rw"], _op_output_quant(model, "MUL")[0])
    codes, oq = _run(model, xs)
    _same_qparams(q.quant_params()["out"], oq)
    assert np.abs(_codes(y, oq).transpose(0, 2, 3, 1) - codes).max() <= 1


# ---- int8-native blocks against LiteRT ---------------------------------------------------------------------------
def test_piecewise_reciprocal(tf, rng):
    from edge_asc.model.layers import MAD_TO_STD, PiecewiseReciprocal

    recip = PiecewiseReciprocal(input_scale=2.0 * MAD_TO_STD)
    w1, b1 = recip.w1.numpy(), recip.b1.numpy()
    w2, b2 = recip.w2.numpy(), recip.b2.numpy()
    calib = rng.uniform(0.02, 3.0, (64, 1)).astype(np.float32)
    xs = rng.uniform(0.02, 3.0, (64, 1)).astype(np.float32)

    def tf_fn(s):
        return tf.matmul(tf.nn.relu6(tf.matmul(s, w1.T) + b1), w2.T) + b2

    model = _convert(tf_fn, (1, 1), calib)
    q = Quantiser()
    y = _sim(q, lambda s: q_recip(q, "n", q.a("input", s), recip), calib, xs)
    codes, oq = _run(model, xs)
    _same_qparams(q.quant_params()["n.recip2"], oq)
    assert np.abs(_codes(y, oq) - codes).max() <= 1


def test_soft_unpool(tf, rng):
    """The int8-native soft unpooling (pool 2x3 with a zero-padded remainder, as the 'edge' preset's). The ramp
    multiplies by 24: one step of its input is ~47 steps of the mask, so rounding ties inside LiteRT's fixed-point
    SUB may move a few cells by one input step; the test allows that on at most 1% of values."""
    cfg = types.SimpleNamespace(unpool="soft", unpool_softness=4.0, pool=(2, 3))
    h, w, c = 9, 10, 4

    def pre_windows(n):  # ReLU6-like activations with near-ties inside the pooling windows
        x = rng.uniform(0, 6, (n, h, w, c)).astype(np.float32)
        x[:, ::2, ::3] = np.minimum(6.0, x[:, ::2, ::3] + rng.uniform(-0.3, 0.3, x[:, ::2, ::3].shape))
        return np.clip(x, 0, 6).astype(np.float32)

    calib, xs = pre_windows(32), pre_windows(8)

    def up(t):
        t = tf.image.resize(t, (8, 9), method="nearest")
        return tf.pad(t, [[0, 0], [0, 1], [0, 1], [0, 0]])

    def tf_fn(pre):
        pooled = tf.nn.max_pool2d(pre, (2, 3), (2, 3), "VALID")
        mask6 = tf.nn.relu6((pre - up(pooled - 0.25)) * 24.0)
        return up(pooled * (1.0 / 6.0)) * mask6

    model = _convert(tf_fn, (1, h, w, c), calib)
    q = Quantiser()

    def fn(pre):
        pre = q.a("input", pre)
        pooled = F.max_pool2d(pre, kernel_size=(2, 3), stride=(2, 3))
        return q_unpool(q, "u", pooled, pre, pooled, cfg)

    y = _sim(q, fn, nchw(calib), nchw(xs))
    muls = _op_output_quant(model, "MUL")
    subs = _op_output_quant(model, "SUB")
    qp = q.quant_params()
    _same_qparams(qp["u.diff"], subs[-1])  # pre - up(...): widened to the mask's [0, 6] (in place)
    _same_qparams(qp["u.shift"], subs[0])
    assert any(abs(s - qp["u.values"][0]) < 1e-4 * s and z == qp["u.values"][1] for s, z in muls)
    codes, oq = _run(model, xs)
    _same_qparams(qp["u"], oq)
    diff = np.abs(_codes(y, oq).transpose(0, 2, 3, 1) - codes)
    assert np.mean(diff <= 1) >= 0.99


# ---- the whole model ---------------------------------------------------------------------------------------------
def _tiny_model(preset: str, seed: int = 0):
    from edge_asc.model import build_model, model_preset

    torch.manual_seed(seed)
    cfg = model_preset(preset).replace(n_mels=32, n_frames=24)
    m = build_model(cfg).eval()
    for mod in m.modules():  # BN statistics and norm affines away from their initial values
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("preset", ["micro", "edge"])
def test_float_mode_is_the_model(preset, rng):
    m = _tiny_model(preset)
    sim = QuantSim(m).eval()
    x = torch.from_numpy(rng.standard_normal((4, *m.config.input_shape[1:])).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(sim(x), m(x), atol=1e-4)
    # its event block output is the model's: the indices the verifier reads off both
    from edge_asc.model import verification_probe

    with verification_probe(m).recording() as rec, torch.no_grad():
        m(x)
    c = m.config.channels[0]
    assert np.array_equal(np.rint(sim.events_out.numpy() * c).astype(np.int64), rec.indices())


def test_quant_mode_needs_calibration(rng):
    sim = QuantSim(_tiny_model("micro")).eval()
    sim.q.mode = "quant"
    with pytest.raises(ConfigError, match="calibrat"):
        sim(torch.zeros((1, *sim.model.config.input_shape[1:])))


def test_reference_formulation_is_refused():
    from edge_asc.model import build_model, model_preset

    with pytest.raises(ConfigError, match="int8-native"):
        QuantSim(build_model(model_preset("edge-gap")))
    with pytest.raises(ConfigError, match="act_bound"):
        QuantSim(build_model(model_preset("micro").replace(act_bound=4.0)))


def test_training_through_the_simulation_moves_the_model_weights(rng):
    m = _tiny_model("micro")
    sim = QuantSim(m)
    x = rng.standard_normal((6, *m.config.input_shape[1:])).astype(np.float32)
    sim.calibrate(x)
    sim.q.mode = "quant"
    sim.train()
    before = m.enc2a.conv.conv.weight.detach().clone()
    bn_mean = m.enc2a.norm.running_mean.clone()
    loss = F.cross_entropy(sim(torch.from_numpy(x)), torch.zeros(6, dtype=torch.long))
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert not torch.equal(before, m.enc2a.conv.conv.weight)
    assert m.enc1.norm.inorm.weight.grad is not None
    assert torch.equal(bn_mean, m.enc2a.norm.running_mean)  # BN statistics stay frozen


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["micro", "edge"])
def test_whole_model_against_the_export_path(preset, tmp_path, rng):
    """A seeded random model through the project's export path (dynamo ONNX -> onnx2tf -> TFLite converter): every
    output quantisation parameter, and the int8 logits (ramps amplify single-step rounding differences inside the
    graph, so this checks agreement, not one step everywhere)."""
    require("onnx2tf")
    from edge_asc.export.convert import run_onnx2tf, to_onnx

    m = _tiny_model(preset, seed=3)
    shape = m.config.input_shape[1:]
    calib = rng.standard_normal((48, *shape)).astype(np.float32)
    xs = rng.standard_normal((24, *shape)).astype(np.float32)
    to_onnx(m, calib[:1], tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", calib.transpose(0, 2, 3, 1))
    model = run_onnx2tf(tmp_path / "m.onnx", tmp_path, "int8", calib_npy=tmp_path / "calib.npy").read_bytes()
    sim = QuantSim(m).eval()
    sim.calibrate(calib)
    sim.q.mode = "quant"
    with torch.no_grad():
        y = sim(torch.from_numpy(xs)).numpy()
    codes, oq = _run(model, xs.transpose(0, 2, 3, 1))
    _same_qparams(sim.q.quant_params()["logits"], oq)
    sc = _codes(y, oq)
    assert np.median(np.abs(sc - codes)) <= 1
    assert np.mean(sc.argmax(1) == codes.argmax(1)) >= 0.9


# ---- the command and the checkpoint ------------------------------------------------------------------------------
@pytest.mark.slow
def test_qat_command_writes_a_qat_checkpoint_that_loads(tiny_dataset, tmp_path, capsys):
    import json

    from edge_asc.cli import main
    from edge_asc.train.checkpoint import load_checkpoint, read_meta

    run = tmp_path / "micro"
    assert main(["train", "--data", str(tiny_dataset), "--preset", "micro:n_frames=24", "--epochs", "1",
                 "--out", str(run), "--val-every", "0", "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    assert "qat" not in json.loads((run / "checkpoint.json").read_text())  # plain runs: unchanged keys
    assert main(["qat", str(run), "--data", str(tiny_dataset), "--epochs", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    qrun = tmp_path / "micro-qat"
    assert str(qrun) in out and "simulated int8 agreement" in out
    meta = read_meta(qrun)
    base = read_meta(run)
    assert meta.qat["base_weights_sha256"] == base.weights_sha256 and meta.qat["config"]["epochs"] == 1
    assert set(meta.qat["after"]) >= {"float_macro_acc", "sim_int8_macro_acc", "sim_top1_agreement"}
    assert meta.labels == base.labels and meta.frontend == base.frontend and meta.epoch == base.epoch
    model, _ = load_checkpoint(qrun)  # an ordinary run: export / evaluate / classify take it as it is
    assert model.config == base.model_config
    assert len((qrun / "history.jsonl").read_text().splitlines()) == 1
    # the output folder now holds a run: refused, exit 1, one line
    assert main(["qat", str(run), "--data", str(tiny_dataset), "--epochs", "1"]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(["qat", str(run), "--data", str(tiny_dataset), "--epochs", "0"]) == 2
    # plain training must not continue a QAT run (it would drop the record): refused, one line, weights kept
    before = (qrun / "checkpoint.json").read_bytes()
    assert main(["train", "--data", str(tiny_dataset), "--preset", "micro:n_frames=24", "--epochs", "2",
                 "--out", str(qrun), "--resume", "--val-every", "0", "--no-progress", "--threads", "1"]) != 0
    assert "quantisation-aware" in capsys.readouterr().err
    assert (qrun / "checkpoint.json").read_bytes() == before


def test_qat_config_rejects_bad_values():
    from edge_asc.train.qat import QatConfig

    for bad in ({"epochs": 0}, {"lr": 0.0}, {"optimizer": "rmsprop"}, {"ranges": "learned"}, {"batch_size": 1},
                {"mixup_alpha": -1.0}, {"margin_weight": -1.0}, {"event_margin_steps": 0.0}, {"tie_weight": -1}):
        with pytest.raises(ConfigError):
            QatConfig(**bad)
    assert QatConfig().to_dict()["ranges"] == "calibration"
