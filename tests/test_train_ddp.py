"""Distributed training (DDP through torchrun) on the CPU with gloo and 2 processes.

The 2-process run must be the single-process run with the work split: with augmentation and dropout off, its
per-step losses equal a single-process run's with the same global batch and seed; a DDP run killed with SIGKILL and
resumed ends with the same weights as one that ran through. Per-rank augmentation streams are checked without
processes (distinct per rank, the same on every call).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

torch = require("torch")
require("safetensors")

import edge_asc
from edge_asc.cli import main
from edge_asc.train.checkpoint import load_checkpoint, read_meta
from edge_asc.train.distributed import DistContext

# BatchNorm in every norm (so SyncBatchNorm carries the whole model), a continuous head, no dropout: smooth enough
# that 20 SGD steps at lr 0.002 stay within float rounding of each other. (With the event head's discrete channel
# ranking, or at lr 0.1, runs whose sums are merely ordered differently, e.g. 1 vs 2 torch threads in one process,
# drift apart by > 1e-4 within 10 steps; see docs/training.md, "Limits".)
SMOOTH = "micro:dropout=0,head=gap,norm=bn,unpool=nearest,int8_native=false"
NO_AUG = ["--no-specaugment", "--no-shift", "--no-random-crop", "--mixup-alpha", "0"]


def _env() -> dict[str, str]:
    """The environment for child processes: this checkout's edge_asc first on the path, one thread each."""
    root = str(Path(edge_asc.__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", EDGE_ASC_TRACEBACK="1")
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "edge_asc", "train", *args]


def _steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """The same 4-epoch run (augmentation and dropout off) in one process (in this one, 1 thread) and in two
    (``edge-asc train --nproc 2``); both write a step log. Returns (folder, the options they share)."""
    d = tmp_path_factory.mktemp("ddp")
    common = ["--data", str(tiny_dataset), "--preset", SMOOTH, "--epochs", "4", "--batch-size", "22",
              "--lr-max", "0.002", "--seed", "1", "--val-every", "4", "--device", "cpu", "--cache-dir",
              str(d / "cache"), "--no-progress", *NO_AUG]
    threads = torch.get_num_threads()
    try:  # one thread like each DDP worker (torchrun sets OMP_NUM_THREADS=1): no oversubscribed cores
        assert main(["train", *common, "--out", str(d / "single"), "--step-log", str(d / "single.jsonl"),
                     "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    r = subprocess.run([sys.executable, "-m", "edge_asc", "train", *common, "--out", str(d / "ddp"),
                        "--step-log", str(d / "ddp.jsonl"), "--nproc", "2"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, common


@pytest.mark.slow
def test_two_processes_equal_one(runs):
    """edge-asc train --nproc 2 == one process with the same global batch: 20 steps' losses within 1e-4."""
    d, _ = runs
    single, ddp = d / "single", d / "ddp"
    s1, s2 = _steps(d / "single.jsonl"), _steps(d / "ddp.jsonl")
    assert len(s1) == len(s2) == 20  # 110 clips / 22 = 5 steps per epoch; rank 0 alone wrote the log
    assert [(s["epoch"], s["step"], s["clips"]) for s in s1] == [(s["epoch"], s["step"], s["clips"]) for s in s2]
    diff = np.abs(np.array([s["loss"] for s in s1]) - np.array([s["loss"] for s in s2]))
    assert diff.max() < 1e-4, diff
    assert len({round(s["loss"], 3) for s in s1}) > 10  # the losses move: the steps train

    # the DDP checkpoint is a plain single-process checkpoint: same tensors, loads without torch.distributed
    w1, w2 = _tensors(single / "model.safetensors"), _tensors(ddp / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:  # to float rounding, amplified over 20 steps
        assert np.abs(w2[k] - w1[k]).max() <= 1e-3 * np.abs(w1[k]).max() + 1e-4, k
    model, meta = load_checkpoint(ddp)
    assert type(model.enc2a.norm) is torch.nn.BatchNorm2d
    assert meta.epoch == 4 and meta.compute["world_size"] == 2 and meta.compute["backend"] == "gloo"
    hist = [json.loads(line) for line in (ddp / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    # validation, sharded over the ranks and gathered, scores the 90 evaluate clips as one process does
    m1, m2 = read_meta(single).metrics, meta.metrics
    assert abs(m1["val_log_loss"] - m2["val_log_loss"]) < 1e-3
    assert abs(m1["train_loss"] - m2["train_loss"]) < 1e-4


@pytest.mark.slow
def test_killed_run_resumes_to_same_weights(runs):
    """SIGKILL the 2-process run (torchrun itself) after its first checkpoint, --resume it: bit for bit the weights
    and momentum of the uninterrupted run."""
    d, common = runs
    killed = d / "killed"
    args = [*common, "--out", str(killed), "--step-log", str(d / "killed.jsonl")]
    proc = subprocess.Popen(_torchrun(args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (killed / "checkpoint.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers: their own session
        proc.wait(timeout=60)
    stopped = read_meta(killed).epoch
    assert 1 <= stopped < 4

    r = subprocess.run(_torchrun([*args, "--resume"]), capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    full = d / "ddp"
    assert read_meta(killed).epoch == 4
    for name in ("model.safetensors", "optimizer.safetensors"):  # tensors (the header's key order may differ)
        t1, t2 = _tensors(full / name), _tensors(killed / name)
        assert t1.keys() == t2.keys() and all(np.array_equal(t1[k], t2[k]) for k in t1), name
    resumed = [s for s in _steps(d / "killed.jsonl") if s["epoch"] > stopped]
    assert resumed == [s for s in _steps(d / "ddp.jsonl") if s["epoch"] > stopped]


def test_shards_cover_the_global_batch():
    batch = np.arange(100, 111)  # 11 clips over 3 ranks
    parts = [DistContext(rank=r, world_size=3).shard(batch) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(parts), batch)
    single = DistContext()
    assert single.shard(batch) is batch and single.rank_seed(7) == 7


def test_rank_streams_differ_and_repeat():
    shared = np.random.default_rng([3, 1])
    assert DistContext().rank_rng([3, 1], shared) is shared
    draws = [DistContext(rank=r, world_size=2).rank_rng([3, 1], shared).random(4) for r in (0, 1, 0)]
    assert not np.allclose(draws[0], draws[1])
    np.testing.assert_array_equal(draws[0], draws[2])
    assert DistContext(rank=0, world_size=2).rank_seed(5) != DistContext(rank=1, world_size=2).rank_seed(5)


def test_scaled_local_losses_give_the_global_gradient():
    """An uneven split (7 clips over 2 ranks: 4 + 3): DDP averages the ranks' gradients, and the scaled local mean
    losses make that average the gradient of the global mean loss."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, generator=g, requires_grad=True)
    x, y = torch.randn(7, 5, generator=g), torch.randn(7, generator=g)

    def loss(rows):
        return ((x[rows] @ w - y[rows]) ** 2).mean()

    (want,) = torch.autograd.grad(loss(np.arange(7)), w)
    grads = []
    for r in range(2):
        d = DistContext(rank=r, world_size=2)
        rows = d.shard(np.arange(7))
        grads.append(torch.autograd.grad(d.scale_loss(loss(rows), len(rows), 7), w)[0])
    torch.testing.assert_close((grads[0] + grads[1]) / 2, want)


def test_cli_checks_before_starting(tiny_dataset, tmp_path, capsys, monkeypatch):
    base = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--nproc", "2", "--batch-size", "15"]) == 2
    assert "global batch" in capsys.readouterr().err
    assert main([*base, "--nproc", "0"]) == 2
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*base, "--nproc", "2"]) == 2
    assert "under torchrun" in capsys.readouterr().err


def test_worker_command_line_keeps_the_options():
    from edge_asc.cli import build_parser
    from edge_asc.commands.train import _worker_argv

    argv = ["train", "--data", "d", "--out", "o", "--preset", "micro:width=0.25", "--epochs", "3", "--resume",
            "--batch-size", "32", "--lr-max", "0.05", "--no-shift", "--mixup-alpha", "0", "--nproc", "4"]
    args = build_parser().parse_args(argv)
    worker = _worker_argv(args)
    assert "--nproc" not in worker
    again = vars(build_parser().parse_args(worker))
    want = vars(args)
    want["nproc"] = None
    assert {k: v for k, v in again.items() if not k.startswith("_")} == \
        {k: v for k, v in want.items() if not k.startswith("_")}
