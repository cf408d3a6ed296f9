"""The paper's training recipe: SGD (momentum 0.9, batch 64), warm restarts (max lr 0.1, cosine to 1e-5, T0 = 10,
Tmult = 2: restarts after 10, 30, 70, 150, 310 epochs), soft-label cross-entropy on mixup (alpha 0.3), SpecAugment,
random time crop and random time/frequency shifts (see :mod:`edge_asc.train.augment`).

Reproducibility: the model is initialised from ``seed``; epoch ``e`` draws every random number (shuffle, crops,
shifts, masks, mixup) from ``numpy.random.default_rng([seed, e])`` and dropout from ``torch.manual_seed`` derived
from (seed, e); the learning rate is a pure function of (epoch, batch). A checkpoint after each epoch stores weights,
BN statistics and SGD momentum, so ``resume`` continues exactly as an uninterrupted run would (same thread count).

Many processes (torchrun, DDP): a :class:`~edge_asc.train.distributed.DistContext` shards every global batch over
the ranks and synchronises BatchNorm; see :mod:`edge_asc.train.distributed`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import append_jsonl
from ..errors import ConfigError, DatasetError, ModelContractError
from ..spec import FrontendSpec, frontend_for_model, frontend_preset
from .augment import AugmentConfig, apply_dir, crop, dir_gain_bank, freq_mixstyle, mixup, random_shift, spec_augment
from .cache import FeatureStore, build_cache
from .checkpoint import HISTORY_FILE, META_FILE, CheckpointMeta, load_optimizer_state, read_meta, save_checkpoint
from .device import Compute, resolve_device
from .distill import DistillConfig, TeacherEnsemble, describe
from .distributed import DistContext
from .evaluate import compute_report, predict_clips
from .splits import SplitData, resolve_split


def sgdr_lr(t: float, *, lr_max: float = 0.1, lr_min: float = 1e-5, t0: float = 10, t_mult: float = 2) -> float:
    """SGDR learning rate at fractional epoch ``t`` (Loshchilov & Hutter): cycles of length t0, t0*t_mult, ...;
    within a cycle ``lr_min + (lr_max - lr_min) * (1 + cos(pi * t_cur / T_i)) / 2``."""
    start, length = 0.0, float(t0)
    while t >= start + length:
        start += length
        length *= t_mult
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * (t - start) / length))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run's settings (stored in the checkpoint; ``--resume`` requires the same ones)."""

    preset: str = "edge"
    """model preset ``NAME[:field=value,...]`` (:func:`edge_asc.model.resolve_preset`, e.g. the ``to train:`` line of
    ``edge-asc fit``); NAME's front-end preset, adapted to the config's n_mels / in_channels, makes the features."""
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    """MiniSegNetConfig fields replacing the preset's (e.g. ``{"norm": "bn", "head": "gap"}``)."""
    epochs: int = 10
    batch_size: int = 64
    lr_max: float = 0.1
    lr_min: float = 1e-5
    t0: int = 10
    """epochs of the first SGDR cycle."""
    t_mult: int = 2
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    augment: AugmentConfig | None = None
    """None: the paper's recipe scaled to the preset (``AugmentConfig.for_window``)."""
    val_every: int = 1
    """evaluate on the dataset's 'evaluate' split every N epochs (0 = never)."""
    distill: DistillConfig | None = None
    """knowledge distillation from teacher runs (:mod:`edge_asc.train.distill`); None = plain training."""

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 2):
            raise ConfigError(f"batch_size must be an integer >= 2, got {self.batch_size!r}")
        if not (0 < self.lr_min <= self.lr_max):
            raise ConfigError(f"need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        if not (self.t0 >= 1 and self.t_mult >= 1):
            raise ConfigError(f"need t0 >= 1 and t_mult >= 1, got {self.t0}, {self.t_mult}")
        if not (0 <= self.momentum < 1) or self.weight_decay < 0:
            raise ConfigError("momentum must be in [0, 1) and weight_decay >= 0")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.val_every < 0:
            raise ConfigError(f"val_every must be >= 0, got {self.val_every}")
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augment"] = None if self.augment is None else self.augment.to_dict()
        d["model_overrides"] = dict(self.model_overrides)
        d["distill"] = None if self.distill is None else self.distill.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        kw = dict(d)
        if kw.get("augment") is not None:
            kw["augment"] = AugmentConfig.from_dict(kw["augment"])
        if kw.get("distill") is not None:
            kw["distill"] = DistillConfig.from_dict(kw["distill"])
        return cls(**kw)


def _progress(total: int, desc: str, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the train extra
        return None
    return tqdm(total=total, desc=desc, unit="clip", leave=False, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def make_batch(store: FeatureStore, idx: np.ndarray, y: np.ndarray, n_classes: int, window_frames: int,
               mean: np.ndarray, std: np.ndarray, aug: AugmentConfig,
               rng: np.random.Generator, *, dir_gains: np.ndarray | None = None,
               floor_db: float = -100.0, mixed: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One training batch: (features float32[B, C, n_mels, W] normalised + augmented, targets float32[B, K]).
    ``dir_gains``: the DIR bank (:func:`edge_asc.train.augment.dir_gain_bank`) when ``aug.dir > 0``; ``floor_db``:
    the front end's log floor in dB; ``mixed``: a dict that receives mixup's ``lam`` and ``perm`` when it mixes."""
    crop_rng = rng if aug.random_crop else None
    x = np.stack([crop(store[int(i)], window_frames, crop_rng) for i in idx]).astype(np.float32)
    if aug.dir > 0:
        if dir_gains is None:
            raise ConfigError("DIR augmentation is on but no impulse-response bank was given")
        x = apply_dir(x, dir_gains, aug.dir, rng, floor_db)
    x = (x - mean) / std
    if aug.freq_mixstyle > 0:
        x = freq_mixstyle(x, aug.freq_mixstyle, aug.freq_mixstyle_alpha, rng)
    if aug.shift_time or aug.shift_freq:
        x = random_shift(x, aug.shift_time, aug.shift_freq, rng)
    if aug.specaugment:
        x = spec_augment(x, aug, rng)
    t = np.eye(n_classes, dtype=np.float32)[y[idx]]
    if aug.mixup_alpha > 0:
        x, t, _ = mixup(x, t, aug.mixup_alpha, rng, drawn=mixed)
    return np.ascontiguousarray(x, dtype=np.float32), t


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    run_dir: Path
    meta: CheckpointMeta
    history: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """What a run trains, resolved from the config and the dataset."""

    config: TrainConfig
    """with ``augment`` filled in."""
    model_config: Any
    """the MiniSegNetConfig, ``n_classes`` = the dataset's label count."""
    preset_string: str
    labels: tuple[str, ...]
    spec: FrontendSpec
    """the front end, not yet normalised."""
    window: int
    """frames per model window."""


@dataclass(frozen=True, kw_only=True)
class _Data:
    """The run's splits and their cached features."""

    train: SplitData
    train_store: FeatureStore
    val: SplitData | None
    val_store: FeatureStore | None
    spec: FrontendSpec
    """the front end with the training features' per-channel normalisation."""
    mean: np.ndarray
    std: np.ndarray
    """float32[1, C, 1, 1] normalisation of a batch."""
    dir_gains: np.ndarray | None = None
    """the DIR bank, dB float32[K, n_mels] (None: DIR off)."""
    teachers: TeacherEnsemble | None = None
    """the distillation teachers (None: plain training)."""


def _plan(dataset, config: TrainConfig) -> _Plan:
    from ..model import format_preset, resolve_preset, split_preset

    preset = resolve_preset(config.preset)
    cfg = preset.config.replace(**config.model_overrides) if config.model_overrides else preset.config
    labels = tuple(dataset.labels)
    if len(labels) < 2:
        raise DatasetError(f"the dataset has {len(labels)} label(s); a classifier needs at least 2")
    given = split_preset(config.preset)[1].get("n_classes")
    if given is not None and given != len(labels):
        raise ConfigError(f"model preset {config.preset!r} sets n_classes={given} but the dataset has {len(labels)} "
                          "labels: leave n_classes out (it follows the dataset)")
    cfg = cfg.replace(n_classes=len(labels))
    # what the checkpoint and model card record: the preset string of this model, --norm etc. included, without the
    # class count the dataset implies
    preset_string = format_preset(preset.name, cfg.replace(n_classes=preset.config.n_classes))
    spec = frontend_for_model(frontend_preset(preset.frontend), n_mels=cfg.n_mels, channels=cfg.in_channels)
    aug = config.augment or AugmentConfig.for_window(cfg.n_mels, cfg.n_frames)
    return _Plan(config=dataclasses.replace(config, augment=aug), model_config=cfg, preset_string=preset_string,
                 labels=labels, spec=spec, window=cfg.n_frames)


def _prior_run(out: Path, plan: _Plan, resume: bool) -> CheckpointMeta | None:
    """The checkpoint to resume from (None for a new run), checked against the plan."""
    if not (out / META_FILE).exists():
        if resume:
            raise ModelContractError(f"nothing to resume: {str(out)!r} has no {META_FILE}")
        return None
    if not resume:
        raise ConfigError(f"{str(out)!r} already holds a training run: pass --resume to continue it "
                          "or choose another --out")
    prior = read_meta(out)
    if prior.qat is not None:
        raise ConfigError(f"{str(out)!r} holds quantisation-aware fine-tuned weights (edge-asc qat): --resume would "
                          "train them on in float and drop that record; resume the base run it names instead")
    if prior.labels != plan.labels:
        raise DatasetError(f"the dataset's labels {list(plan.labels)} differ from the checkpoint's "
                           f"{list(prior.labels)}: resume on the same dataset")
    old = TrainConfig.from_dict(prior.train_config)
    if dataclasses.replace(old, epochs=plan.config.epochs) != plan.config:
        raise ConfigError("--resume needs the same settings as the original run (preset, seed, batch, "
                          "augmentation...); only --epochs may change")
    return prior


def _load_data(dataset, plan: _Plan, cache: Path, prior: CheckpointMeta | None, progress: bool,
               log: Callable[[str], None]) -> _Data:
    """Resolve the splits, build (or reuse) their feature caches, and take the normalisation from the training one."""
    train_split = resolve_split(dataset, "train", plan.labels)
    if not train_split.paths:
        raise DatasetError("the dataset's 'train' split is empty: check the dataset folder (edge-asc data check)")
    val_split = resolve_split(dataset, "evaluate", plan.labels) if plan.config.val_every else None

    def cached(split: SplitData, what: str) -> FeatureStore:
        bar = _progress(len(split.paths), f"features ({what})", progress)
        t = time.perf_counter()
        store = build_cache(split.paths, split.clip_ids, plan.spec, cache,
                            on_clip=(lambda d, n: bar.update(1)) if bar is not None else None)
        if bar is not None:
            bar.close()
        log(f"features ({what}): {len(store)} clips in {time.perf_counter() - t:.1f} s -> {store.path}")
        return store

    train_store = cached(train_split, "train")
    val_store = cached(val_split, "evaluate") if val_split is not None and val_split.paths else None
    mean_t, std_t = train_store.channel_stats()
    spec_n = plan.spec.replace(norm_mean=mean_t, norm_std=std_t)
    if prior is not None and prior.frontend != spec_n:
        raise ConfigError("the training features changed since the run started (different audio or front end): "
                          "start a new run")
    return _Data(train=train_split, train_store=train_store, val=val_split, val_store=val_store, spec=spec_n,
                 mean=np.asarray(mean_t, np.float32).reshape(1, -1, 1, 1),
                 std=np.asarray(std_t, np.float32).reshape(1, -1, 1, 1))


def _setup_model(plan: _Plan, out: Path, prior: CheckpointMeta | None, log: Callable[[str], None],
                 compute: Compute):
    """Model and SGD optimiser, seeded, on ``compute.device``; on resume, their state from the checkpoint (CPU
    tensors, moved to the device: a run may resume on another device than the one it started on).

    Returns ``(model, optimizer, start_epoch, run_id, history)``.
    """
    import torch

    from ..model import build_model

    config = plan.config
    torch.manual_seed(config.seed)
    model = build_model(plan.model_config)
    if prior is not None:
        from .checkpoint import WEIGHTS_FILE, _read_tensors

        model.load_state_dict(_read_tensors(out / WEIGHTS_FILE, prior.weights_sha256, "weights"))
    model.to(compute.device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr_max, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    if prior is None:
        run_id = f"{out.name}-{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"
        return model, opt, 0, run_id, []
    ostate = load_optimizer_state(out, prior)
    if ostate is not None:
        opt.load_state_dict(ostate)  # casts the momentum buffers to the parameters' device
    log(f"resuming {prior.run_id} after epoch {prior.epoch}")
    return model, opt, prior.epoch, prior.run_id, _read_history(out)[:prior.epoch]


def _train_epoch(model, opt, plan: _Plan, data: _Data, epoch: int, progress: bool, compute: Compute,
                 scaler=None, dist: DistContext | None = None, steps: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    """One pass over the shuffled training clips on ``compute.device`` in ``compute.precision`` (``scaler``: the
    fp16 gradient scaler); returns the epoch's training metrics (summed over the ranks of ``dist``). ``steps``:
    a list to which one ``{"epoch", "step", "lr", "loss", "clips"}`` per optimizer step is appended (``loss``: the
    global batch's mean loss, ``clips``: the global batch's size)."""
    import torch
    import torch.nn.functional as F

    dist = dist or DistContext()
    config, aug, y = plan.config, plan.config.augment, data.train.y
    rng = np.random.default_rng([config.seed, epoch])  # the shuffle: the same on every rank
    aug_rng = dist.rank_rng([config.seed, epoch], rng)
    torch.manual_seed(dist.rank_seed(config.seed * 1_000_003 + epoch + 1))
    model.train()
    n = len(data.train_store)
    nb = max(1, math.ceil(n / config.batch_size))
    order = rng.permutation(n)
    step_rows: list[tuple[int, float, int, float]] = []  # (batch, lr, global clips, local loss sum)
    bar = _progress(n, f"epoch {epoch + 1}/{config.epochs}", progress)
    t_start = time.perf_counter()
    loss_sum = correct = seen = 0.0
    lr = config.lr_max
    for b in range(nb):
        batch = order[b * config.batch_size:(b + 1) * config.batch_size]
        if len(batch) < max(2, dist.world_size):  # BatchNorm needs two samples, every rank one: leftovers wait
            continue
        idx = dist.shard(batch)
        mixed: dict = {}
        x, t = make_batch(data.train_store, idx, y, len(plan.labels), plan.window, data.mean, data.std, aug,
                          aug_rng, dir_gains=data.dir_gains, floor_db=10.0 * math.log10(data.spec.amin),
                          mixed=mixed)
        lr = sgdr_lr(epoch + b / nb, lr_max=config.lr_max, lr_min=config.lr_min, t0=config.t0,
                     t_mult=config.t_mult)
        for g in opt.param_groups:
            g["lr"] = lr
        with compute.autocast():
            logits = model(compute.to_device(x))
        logits = logits.float()  # the loss in float32 whatever the forward precision
        if data.teachers is None:
            loss = -(compute.to_device(t) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        else:
            loss = data.teachers.loss(logits, compute.to_device(t), x, idx,
                                      (mixed["lam"], mixed["perm"]) if mixed else None)
        opt.zero_grad(set_to_none=True)
        k = len(idx)
        step_loss = dist.scale_loss(loss, k, len(batch))
        if scaler is None:
            step_loss.backward()
            opt.step()
        else:
            scaler.scale(step_loss).backward()
            scaler.step(opt)
            scaler.update()
        step_rows.append((b, lr, len(batch), float(loss.detach()) * k))
        loss_sum += step_rows[-1][3]
        correct += float((logits.detach().argmax(1).cpu().numpy() == y[idx]).sum())
        seen += k
        if bar is not None:
            bar.update(len(batch))
            el = time.perf_counter() - t_start
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}",
                            clips_s=f"{seen / max(el, 1e-9):.0f}", refresh=False)
    if bar is not None:
        bar.close()
    totals = dist.sum([loss_sum, correct, seen] + [r[3] for r in step_rows], compute.device)
    loss_sum, correct, seen = (float(v) for v in totals[:3])
    if steps is not None:
        steps.extend({"epoch": epoch + 1, "step": r[0], "lr": r[1], "loss": float(s) / r[2], "clips": r[2]}
                     for r, s in zip(step_rows, totals[3:]))
    secs = time.perf_counter() - t_start
    return {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "lr": lr, "seconds": secs, "clips_per_s": seen / max(secs, 1e-9)}


class _Picked:
    """``store[idx[k]]`` as a sequence read lazily (one clip at a time), for :func:`predict_clips`."""

    def __init__(self, store: FeatureStore, idx: np.ndarray) -> None:
        self._store, self._idx = store, idx

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, k: int) -> np.ndarray:
        return self._store[int(self._idx[k])]


def _validate(model, plan: _Plan, data: _Data, dist: DistContext | None = None) -> dict[str, Any]:
    """Clip-level scores on the 'evaluate' split (windows of :mod:`edge_asc.frontend.windows`, default hop); under
    DDP each rank predicts its share of the clips and every rank gets the same scores."""
    dist = dist or DistContext()
    store = data.val_store
    mine = dist.shard(np.arange(len(store)))
    parts = dist.gather(predict_clips(model, _Picked(store, mine), data.spec, plan.window))
    probs = np.concatenate([p for p in parts if len(p)])
    rep = compute_report(probs, data.val.y, plan.labels, data.val.devices, split="evaluate")
    metrics: dict[str, Any] = {"val_macro_acc": rep.overall.macro_accuracy, "val_acc": rep.overall.accuracy,
                               "val_log_loss": rep.overall.log_loss}
    for gname, gs in rep.groups.items():
        metrics[f"val_{gname}_macro_acc"] = gs.macro_accuracy
    return metrics


def train(dataset, out_dir: str | os.PathLike, config: TrainConfig, *, resume: bool = False,
          cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
          log: Callable[[str], None] | None = None, device: str = "cpu", precision: str = "fp32",
          dist: DistContext | None = None, step_log: str | os.PathLike | None = None) -> TrainResult:
    """Train (or resume) a Mini-SegNet run in ``out_dir`` on ``dataset`` (an :mod:`edge_asc.data` Dataset: ``.labels``,
    ``.split('train' | 'evaluate')`` of clips with ``path, label, device, clip_id``).

    Writes ``model.safetensors``, ``optimizer.safetensors``, ``checkpoint.json`` after every epoch and appends
    a line per epoch to ``history.jsonl``: ``train_loss`` (soft-label cross-entropy on the augmented, mixed batches),
    ``train_acc`` (argmax vs each clip's own label on those mixed batches: a rough signal, low under mixup), ``lr``,
    ``clips_per_s``, and with validation ``val_macro_acc`` / ``val_log_loss`` / ``val_{seen,unseen}_macro_acc``.
    With ``config.distill`` the loss is :func:`edge_asc.train.distill.kd_loss` against the teachers' mean logits (on
    the same augmented batch, or a clip teacher's cached clip logits mixed like the batch), and ``train_loss``
    reports it.
    Features are cached under ``cache_dir`` (default ``<out_dir>/../feature-cache``).

    ``device`` (``auto``, ``cpu``, ``cuda``, ``mps``; :func:`edge_asc.train.device.resolve_device`) and ``precision``
    (``fp32``, ``bf16``: CUDA or CPU autocast, ``fp16``: CUDA autocast + gradient scaler) are recorded in the
    checkpoint's ``compute`` but are not part of the run's settings: ``resume`` may continue on another device or in
    another precision. Bit-exact resume holds for fp32 on the same device and thread count.

    ``dist`` (:func:`edge_asc.train.distributed.init_from_env`): this process's rank in a torchrun job; every rank
    calls ``train`` with the same arguments. ``config.batch_size`` is the global batch, split over the ranks; rank 0
    alone logs and writes files; the checkpoint is the one a single process writes. ``None``: a single process.

    ``step_log``: a JSON-lines file to which rank 0 appends one line per optimizer step after each epoch's checkpoint
    (``epoch``, ``step`` within the epoch, ``lr``, ``loss`` = the global batch's mean loss, ``clips``), e.g. to
    compare a DDP run with a single-process one step by step.

    Raises:
        DatasetError: empty training split, or labels outside the dataset's label set.
        ConfigError: ``out_dir`` already holds a run and ``resume`` is False, or the resumed run used other settings;
            a batch size that the world size of ``dist`` does not divide;
            a malformed preset string, one whose ``n_classes`` contradicts the dataset, or an ``in_channels`` no
            front end gives (1 or 3); a device this machine cannot use, or a precision that device does not support;
            a teacher that does not fit the student or changed since the run recorded it; a bad DIR folder.
        ModelContractError: a corrupt checkpoint on resume.
    """
    compute = Compute(device=resolve_device(device), precision=precision)
    dist = dist or DistContext()
    if config.batch_size % dist.world_size:
        raise ConfigError(f"the batch size {config.batch_size} is global and must split evenly over "
                          f"{dist.world_size} processes: choose a multiple of {dist.world_size}")
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    progress = sys.stderr.isatty() if progress is None else progress
    if not dist.is_main:
        log, progress = (lambda s: None), False
    out = Path(out_dir)
    plan = _plan(dataset, config)
    config = plan.config
    prior = _prior_run(out, plan, resume)
    cache = Path(cache_dir) if cache_dir is not None else out.parent / "feature-cache"
    data = dist.main_first(lambda: _load_data(dataset, plan, cache, prior, progress, log))
    data = _with_extras(data, plan, compute, log, cache, dist)
    model, opt, start_epoch, run_id, history = _setup_model(plan, out, prior, log, compute)
    net = dist.wrap(model, compute.device)  # DDP around ``model`` (which checkpoints and validation use)
    scaler = _restored_scaler(compute.grad_scaler(), prior)
    meta = prior
    for epoch in range(start_epoch, config.epochs):
        steps: list[dict[str, Any]] | None = [] if step_log is not None else None
        metrics = _train_epoch(net, opt, plan, data, epoch, progress, compute, scaler, dist, steps)
        if data.val_store is not None and config.val_every and ((epoch + 1) % config.val_every == 0
                                                                or epoch + 1 == config.epochs):
            metrics.update(_validate(model, plan, data, dist))
        history.append(metrics)
        if not dist.is_main:
            continue
        meta = save_checkpoint(out, model, CheckpointMeta(
            model_config=plan.model_config, frontend=data.spec, labels=plan.labels, window_frames=plan.window,
            epoch=epoch + 1, metrics=metrics, run_id=run_id, preset=plan.preset_string,
            train_config=config.to_dict(), compute={**compute.describe(), **dist.describe(), **_scaler_state(scaler)}),
            opt)
        append_jsonl(out / HISTORY_FILE, metrics)
        for row in steps or ():
            append_jsonl(step_log, row)
        log(_summary(metrics, config.epochs))
    dist.barrier()  # the other ranks return once rank 0 has written the last checkpoint
    if meta is None or not dist.is_main:  # resumed a run that had already reached --epochs, or not rank 0
        meta = read_meta(out)
    return TrainResult(run_dir=out, meta=meta, history=tuple(history))


def _scaler_state(scaler) -> dict[str, Any]:
    """The fp16 gradient scaler's state (loss scale, growth tracker) for the checkpoint's ``compute``; {} without."""
    return {"grad_scaler": dict(scaler.state_dict())} if scaler is not None else {}


def _restored_scaler(scaler, prior: CheckpointMeta | None):
    """``scaler`` with the loss scale a resumed fp16 run had reached (a fresh scaler would restart at 2**16 and skip
    steps until it has backed off again)."""
    state = (prior.compute or {}).get("grad_scaler") if prior is not None else None
    if scaler is not None and state:
        scaler.load_state_dict(dict(state))
    return scaler


def _with_extras(data: _Data, plan: _Plan, compute: Compute, log: Callable[[str], None], cache: Path,
                 dist: DistContext) -> _Data:
    """``data`` with the DIR bank and the distillation teachers the config asks for (teachers with another front
    end get the training clips' features in theirs, cached like the student's, and score every clip once)."""
    config = plan.config
    teachers = None
    if config.distill is not None:
        teachers = TeacherEnsemble(config.distill, student_spec=data.spec, labels=plan.labels,
                                   window_frames=plan.window, device=compute.device)
        log(describe(config.distill))
        if teachers.clip_teachers:
            def features_for(spec: FrontendSpec) -> FeatureStore:
                return dist.main_first(lambda: build_cache(data.train.paths, data.train.clip_ids, spec, cache))

            t0 = time.perf_counter()
            teachers.cache_clip_logits(features_for)
            log(f"teachers with another front end: {len(teachers.clip_teachers)}, logits of "
                f"{len(data.train.paths)} training clips in {time.perf_counter() - t0:.1f} s")
    return dataclasses.replace(data, dir_gains=dir_gain_bank(config.augment, data.spec), teachers=teachers)


def _summary(m: Mapping[str, Any], epochs: int) -> str:
    s = (f"epoch {m['epoch']}/{epochs}  loss {m['train_loss']:.4f}  acc {m['train_acc']:.3f}  lr {m['lr']:.2e}  "
         f"{m['clips_per_s']:.0f} clips/s")
    if "val_macro_acc" in m:
        s += f"  val macro-acc {m['val_macro_acc']:.3f}  log-loss {m['val_log_loss']:.3f}"
        for g in ("seen", "unseen"):
            if f"val_{g}_macro_acc" in m:
                s += f"  {g} {m[f'val_{g}_macro_acc']:.3f}"
    return s


def _read_history(out: Path) -> list[dict[str, Any]]:
    import json

    p = out / HISTORY_FILE
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
