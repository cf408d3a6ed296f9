"""``--device`` / ``--precision`` and device-neutral checkpoints, without a GPU: CUDA and MPS are reported
unavailable (monkeypatched) so the tests behave the same on any machine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import require

torch = require("torch")
require("soundfile")

from test_train import FAST, QUIET, make_toy

from edge_asc.cli import main
from edge_asc.errors import ConfigError
from edge_asc.train.checkpoint import load_checkpoint, load_optimizer_state, read_meta, save_checkpoint
from edge_asc.train.device import Compute, resolve_device
from edge_asc.train.evaluate import evaluate_checkpoint
from edge_asc.train.loop import TrainConfig, train


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


def _weights(run) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- device and precision resolution -----------------------------------------------------------------------------
def test_resolve_device_without_a_gpu():
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=r"'cuda' is not available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="'mps' is not available"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="device must be one of"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="fp16 needs --device cuda"):
        Compute(device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        Compute(device="cpu", precision="int8")
    assert Compute(device="cpu", precision="bf16").grad_scaler() is None
    assert not Compute(device="cpu").pin_memory and Compute(device="cuda").pin_memory


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "cuda"], "'cuda' is not available"),
    (["--device", "mps"], "'mps' is not available"),
    (["--precision", "fp16"], "fp16 needs --device cuda"),  # auto resolves to the CPU here
])
def test_cli_unavailable_device_is_a_one_line_usage_error(argv, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path), "--epochs", "1", "--out", str(out), "--no-progress", *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not out.exists()


# ---- training on the resolved device -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpu_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("dev") / "cpu"
    train(toy, out, TrainConfig(epochs=1, seed=3, **FAST), device="cpu", **QUIET)
    return out


def test_auto_trains_like_cpu(toy, cpu_run, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = train(toy, tmp_path / "auto", TrainConfig(epochs=1, seed=3, **FAST), device="auto", **QUIET)
    assert res.meta.compute == {"device": "cpu", "precision": "fp32"}
    assert read_meta(cpu_run).compute == {"device": "cpu", "precision": "fp32"}
    assert _same(_weights(tmp_path / "auto"), _weights(cpu_run))
    assert res.meta.metrics["train_loss"] == read_meta(cpu_run).metrics["train_loss"]


def test_bf16_on_cpu_trains(toy, cpu_run, tmp_path):
    res = train(toy, tmp_path / "bf16", TrainConfig(epochs=1, seed=3, **FAST), device="cpu", precision="bf16",
                **QUIET)
    assert res.meta.compute == {"device": "cpu", "precision": "bf16"}
    assert np.isfinite(res.history[0]["train_loss"]) and res.history[0]["train_loss"] > 0
    w = _weights(tmp_path / "bf16")
    floats = [t for t in w.values() if t.is_floating_point()]  # (BN's num_batches_tracked is an integer)
    assert floats and all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in floats)  # float32 masters
    assert not _same(w, _weights(cpu_run))  # the forward pass really ran in bfloat16


def test_resume_on_another_device_and_precision(toy, cpu_run, tmp_path):
    """A run recorded as trained on CUDA in fp16 resumes here on the CPU in fp32; the device is not a setting."""
    run = tmp_path / "moved"
    shutil.copytree(cpu_run, run)
    meta = json.loads((run / "checkpoint.json").read_text())
    meta["compute"] = {"device": "cuda", "precision": "fp16", "device_name": "NVIDIA H200"}
    (run / "checkpoint.json").write_text(json.dumps(meta))
    res = train(toy, run, TrainConfig(epochs=2, seed=3, **FAST), resume=True, device="cpu", **QUIET)
    assert res.meta.epoch == 2 and res.meta.compute == {"device": "cpu", "precision": "fp32"}
    whole = train(toy, tmp_path / "whole", TrainConfig(epochs=2, seed=3, **FAST), device="cpu", **QUIET)
    assert _same(_weights(run), _weights(tmp_path / "whole"))
    assert whole.meta.metrics["train_loss"] == res.meta.metrics["train_loss"]


# ---- device-neutral checkpoints ----------------------------------------------------------------------------------
class _GpuTensor(torch.Tensor):
    """A tensor that claims to live on a CUDA device and refuses to be read except through ``.to('cpu')``."""

    copied_to_cpu = 0

    @property
    def device(self):
        return torch.device("cuda", 0)

    def to(self, *args, **kwargs):
        target = torch.device(args[0] if args else kwargs["device"])
        if target.type != "cpu":
            raise RuntimeError(f"unexpected move to {target}")
        type(self).copied_to_cpu += 1
        return self.as_subclass(torch.Tensor).clone()

    def cpu(self):
        return self.to("cpu")

    def numpy(self, *args, **kwargs):
        raise RuntimeError("can't convert cuda:0 device type tensor to numpy: use .cpu() first")


class _OnGpu:
    """A model or optimizer whose ``state_dict`` tensors are :class:`_GpuTensor`."""

    def __init__(self, inner):
        self.inner = inner

    def state_dict(self):
        sd = self.inner.state_dict()
        if "state" in sd:  # an optimizer
            return {"state": {i: {k: v.as_subclass(_GpuTensor) if isinstance(v, torch.Tensor) else v
                                  for k, v in st.items()} for i, st in sd["state"].items()},
                    "param_groups": sd["param_groups"]}
        return {k: v.as_subclass(_GpuTensor) for k, v in sd.items()}


def test_checkpoint_from_a_gpu_loads_and_evaluates_on_cpu(cpu_run, toy, tmp_path):
    model, meta = load_checkpoint(cpu_run)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.load_state_dict(load_optimizer_state(cpu_run, meta))
    _GpuTensor.copied_to_cpu = 0
    out = tmp_path / "from-gpu"
    save_checkpoint(out, _OnGpu(model), meta, _OnGpu(opt))
    n_tensors = len(model.state_dict()) + sum(len(s) for s in opt.state_dict()["state"].values())
    assert _GpuTensor.copied_to_cpu == n_tensors  # every tensor was written from a CPU copy

    assert not torch.cuda.is_available()
    loaded, lmeta = load_checkpoint(out)
    assert all(t.device.type == "cpu" and type(t) is torch.Tensor for t in loaded.state_dict().values())
    assert _same(loaded.state_dict(), model.state_dict())
    ostate = load_optimizer_state(out, lmeta)
    assert all(t.device.type == "cpu" for st in ostate["state"].values() for t in st.values())
    rep = evaluate_checkpoint(str(out), toy, cache_dir=str(tmp_path / "cache"))
    ref = evaluate_checkpoint(str(cpu_run), toy, cache_dir=str(tmp_path / "cache"))
    assert rep.overall.n_clips == len(toy.split("evaluate")) > 0
    assert rep.overall.log_loss == ref.overall.log_loss and rep.confusion == ref.confusion


def test_fp16_loss_scale_survives_a_checkpoint(cpu_run):
    """An fp16 run (CUDA) keeps its gradient scaler's state in checkpoint.json's ``compute``; a resume restores it.
    Exercised with a CPU GradScaler (no GPU here) through the loop's own save / restore helpers and the JSON."""
    import dataclasses

    import torch

    from edge_asc.train.loop import _restored_scaler, _scaler_state

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    for v in (1.0, float("inf"), 1.0):  # an overflow backs the scale off; the tracker counts good steps
        opt.zero_grad()
        scaler.scale((w * v).sum()).backward()
        scaler.step(opt)
        scaler.update()
    meta = read_meta(cpu_run)
    saved = dataclasses.replace(meta, compute={**(meta.compute or {}), **_scaler_state(scaler)})
    again = type(meta).from_dict(json.loads(json.dumps(saved.to_dict())))
    fresh = _restored_scaler(torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3), again)
    assert fresh.get_scale() == scaler.get_scale() == 2.0**15
    assert fresh.state_dict() == scaler.state_dict()
    assert _restored_scaler(None, again) is None and _scaler_state(None) == {}
