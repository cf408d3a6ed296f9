"""DCASE-style evaluation: macro-average class accuracy, log loss, per-device table with seen/unseen groups,
confusion matrix. Metrics are plain numpy on clip posteriors (:mod:`edge_asc.metrics`).

Clip posterior = mean of the softmax posteriors of the clip's windows, cut by the one window rule
(:mod:`edge_asc.frontend.windows`: half-window hop by default, no end-aligned window, a short clip tiled). Two
models can be scored:

- a training checkpoint (:func:`evaluate_checkpoint`): the PyTorch float model on cached offline features
  (:func:`predict_clips`, needs torch);
- an exported ``.tflite`` (:func:`evaluate_tflite`): every clip through :func:`edge_asc.runtime.classify_audio`,
  the path ``edge-asc classify`` and ``edge-asc listen`` take, so its clip labels are ``classify``'s (no torch).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..frontend import hop_frames, normalize, windows
from ..metrics import macro_accuracy, softmax
from .splits import check_labels, resolve_split

#: seen / unseen device groups of TAU Urban Acoustic Scenes 2020 Mobile (overridden by edge_asc.data if present).
DEFAULT_SEEN = ("a", "b", "c", "s1", "s2", "s3")
DEFAULT_UNSEEN = ("s4", "s5", "s6")


def device_groups() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(seen, unseen) device ids, lower-case; from :mod:`edge_asc.data` when it defines them."""
    try:
        from ..data import SEEN_DEVICES, UNSEEN_DEVICES

        return tuple(d.lower() for d in SEEN_DEVICES), tuple(d.lower() for d in UNSEEN_DEVICES)
    except ImportError:
        return DEFAULT_SEEN, DEFAULT_UNSEEN


@dataclass(frozen=True, kw_only=True)
class GroupScore:
    """Scores of a subset of clips. Accuracies in [0, 1]; ``macro_accuracy`` averages the classes present."""

    n_clips: int
    accuracy: float
    macro_accuracy: float
    log_loss: float


@dataclass(frozen=True, kw_only=True)
class ClipPrediction:
    """One scored clip: its id, file, device, true and predicted label, and the clip posterior (float, sums to 1)."""

    clip_id: str
    file: str
    device: str
    label: str
    predicted: str
    probs: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"clip_id": self.clip_id, "file": self.file, "device": self.device, "label": self.label,
                "predicted": self.predicted, "probs": [round(p, 6) for p in self.probs]}


@dataclass(frozen=True, kw_only=True)
class EvalReport:
    """Everything ``edge-asc evaluate`` reports. ``confusion[i][j]`` counts clips of true class i predicted as j;
    ``clips`` lists each clip's prediction (in the split's order) when the clip ids were given."""

    labels: tuple[str, ...]
    overall: GroupScore
    per_class_accuracy: Mapping[str, float]
    per_device: Mapping[str, GroupScore]
    groups: Mapping[str, GroupScore]
    """'seen' / 'unseen' (only groups with clips)."""
    confusion: tuple[tuple[int, ...], ...]
    split: str = ""
    checkpoint: str = ""
    clips: tuple[ClipPrediction, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def macro_accuracy(self) -> float:
        """The DCASE metric."""
        return self.overall.macro_accuracy

    def to_dict(self) -> dict[str, Any]:
        def g(s: GroupScore) -> dict[str, Any]:
            return {"n_clips": s.n_clips, "accuracy": s.accuracy, "macro_accuracy": s.macro_accuracy,
                    "log_loss": s.log_loss}

        return {
            "split": self.split, "checkpoint": self.checkpoint, "labels": list(self.labels),
            "macro_accuracy": self.overall.macro_accuracy, "accuracy": self.overall.accuracy,
            "log_loss": self.overall.log_loss, "n_clips": self.overall.n_clips,
            "per_class_accuracy": dict(self.per_class_accuracy),
            "per_device": {d: g(s) for d, s in self.per_device.items()},
            "groups": {k: g(s) for k, s in self.groups.items()},
            "confusion": [list(r) for r in self.confusion], **dict(self.extra),
            "clips": [c.to_dict() for c in self.clips],
        }

    def render_text(self) -> str:
        """A terminal table."""
        head = (f"macro accuracy {self.overall.macro_accuracy:.3f}  accuracy {self.overall.accuracy:.3f}  "
                f"log loss {self.overall.log_loss:.3f}  ({self.overall.n_clips} clips, split '{self.split}')")
        lines = [head, "", f"{'device':10s} {'clips':>6s} {'acc':>6s} {'macro':>6s} {'logloss':>8s}"]
        rows = list(self.per_device.items()) + [(f"[{k}]", v) for k, v in self.groups.items()]
        for name, s in rows:
            lines.append(f"{name:10s} {s.n_clips:6d} {s.accuracy:6.3f} {s.macro_accuracy:6.3f} {s.log_loss:8.3f}")
        lines += ["", f"{'class':20s} {'acc':>6s}"]
        lines += [f"{c:20s} {a:6.3f}" for c, a in self.per_class_accuracy.items()]
        return "\n".join(lines)


def _score(probs: np.ndarray, y: np.ndarray, n_classes: int) -> GroupScore:
    pred = probs.argmax(axis=1)
    correct = pred == y
    macro = macro_accuracy(pred, y, n_classes)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)
    return GroupScore(n_clips=len(y), accuracy=float(correct.mean()) if len(y) else math.nan,
                      macro_accuracy=macro, log_loss=float(-np.log(p_true).mean()) if len(y) else math.nan)


def compute_report(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], devices: Sequence[str], *,
                   split: str = "", checkpoint: str = "", clip_ids: Sequence[str] | None = None,
                   files: Sequence[str] | None = None) -> EvalReport:
    """Metrics of clip posteriors float[N, K] against integer labels int[N] with each clip's device id.

    With ``clip_ids`` (and optionally ``files``), the report also lists every clip's prediction.

    Raises:
        DatasetError: no clips.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise DatasetError("nothing to evaluate: the split has no clips")
    k = len(labels)
    dev = np.asarray([str(d).lower() for d in devices])
    pred = probs.argmax(axis=1)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    per_class = {labels[c]: float((pred[y == c] == c).mean()) for c in range(k) if np.any(y == c)}
    per_device = {d: _score(probs[dev == d], y[dev == d], k) for d in sorted(set(dev), key=_device_key)}
    seen, unseen = device_groups()
    groups = {}
    for name, members in (("seen", seen), ("unseen", unseen)):
        m = np.isin(dev, members)
        if m.any():
            groups[name] = _score(probs[m], y[m], k)
    clips = ()
    if clip_ids is not None:
        names = [""] * len(y) if files is None else [str(f) for f in files]
        clips = tuple(ClipPrediction(clip_id=str(c), file=f, device=str(d), label=labels[t], predicted=labels[p],
                                     probs=tuple(float(v) for v in row))
                      for c, f, d, t, p, row in zip(clip_ids, names, devices, y, pred, probs))
    return EvalReport(labels=tuple(labels), overall=_score(probs, y, k), per_class_accuracy=per_class,
                      per_device=per_device, groups=groups, confusion=tuple(tuple(int(v) for v in r) for r in conf),
                      split=split, checkpoint=checkpoint, clips=clips)


def _device_key(d: str) -> tuple[int, str]:
    return (len(d), d)  # a, b, c before s1..s6


def predict_clips(model, clips: Sequence[np.ndarray], spec, window_frames: int, *, hop: int | None = None,
                  batch_size: int = 256, average: str = "softmax") -> np.ndarray:
    """Clip posteriors float32[N, K]: each clip's features float[C, n_mels, T] (un-normalised dB) are normalised
    with ``spec``, cut into windows (:func:`edge_asc.frontend.windows`, ``hop`` frames apart, default half a
    window), run through ``model`` (eval mode, no grad, on the device of its parameters), and the window softmaxes
    averaged (``average="logits"``: the window logits averaged instead, float32[N, K] clip logits).

    ``clips`` is read one clip at a time (a :class:`~edge_asc.train.cache.FeatureStore` can be passed as it is) and
    at most ``batch_size`` windows are held, so memory does not grow with the dataset; batches run across clip
    boundaries, as if all windows were stacked.
    """
    import torch

    if average not in ("softmax", "logits"):
        raise ValueError(f"average must be 'softmax' or 'logits', got {average!r}")
    n = len(clips)
    device = next(model.parameters()).device  # the model's device (a GPU while training on one)
    was_training = model.training
    model.eval()
    sums: np.ndarray | None = None
    counts = np.zeros(n, dtype=np.int64)
    pending: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    held = 0

    def run(k: int) -> None:
        nonlocal sums, pending, owners, held
        allw, own = np.concatenate(pending), np.concatenate(owners)
        x = torch.from_numpy(np.ascontiguousarray(allw[:k], dtype=np.float32)).to(device)
        z = model(x).float().cpu().numpy()
        p = z if average == "logits" else softmax(z)
        if sums is None:
            sums = np.zeros((n, p.shape[1]), dtype=np.float64)
        np.add.at(sums, own[:k], p)
        pending, owners, held = [allw[k:]], [own[k:]], len(allw) - k

    with torch.no_grad():
        for i in range(n):
            w = windows(normalize(np.asarray(clips[i]), spec), window_frames, hop)
            pending.append(w)
            owners.append(np.full(len(w), i, dtype=np.int64))
            counts[i] = len(w)
            held += len(w)
            while held >= batch_size:
                run(batch_size)
        if held:
            run(held)
    model.train(was_training)
    if sums is None:
        return np.zeros((n, 0), dtype=np.float32)
    return (sums / counts[:, None]).astype(np.float32)


def plot_confusion(report: EvalReport, path: str) -> None:
    """Confusion matrix (row-normalised colours, counts printed) as a PNG, written atomically."""
    from .._io import atomic_path
    from ..errors import require

    require("matplotlib", "train", "confusion-matrix plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = np.asarray(report.confusion, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    k = len(report.labels)
    fig = Figure(figsize=(1.0 + 0.7 * k, 1.0 + 0.6 * k))
    FigureCanvasAgg(fig)  # a canvas of its own: no pyplot state, no global backend switch
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), report.labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), report.labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"macro accuracy {report.macro_accuracy:.3f} ({report.overall.n_clips} clips)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _resolve_hop(spec, window_frames: int, hop_seconds: float | None, hop: int | None) -> int:
    if hop_seconds is not None and hop is not None:
        raise ConfigError("give the window hop in seconds or in frames, not both")
    if hop is None:
        return hop_frames(spec, window_frames, hop_seconds)
    if not (isinstance(hop, int) and hop >= 1):
        raise ConfigError(f"hop must be a positive number of frames, got {hop!r}")
    return hop


def evaluate_checkpoint(checkpoint: str, dataset, *, split: str = "evaluate", hop_seconds: float | None = None,
                        hop: int | None = None, cache_dir: str | None = None) -> EvalReport:
    """Evaluate a run directory (or its checkpoint files) on ``dataset.split(split)`` with the float PyTorch model.

    Args:
        hop_seconds / hop: window hop in seconds (rounded to frames, as ``edge-asc classify --hop``) or in frames;
            at most one; default half a window.
        cache_dir: feature cache folder (default ``<run>/../feature-cache``).

    Raises:
        ModelContractError: missing / corrupt checkpoint.
        DatasetError: the dataset's label set differs from the checkpoint's, or the split is empty.
        ConfigError: a bad hop, or both hops given.
    """
    from .cache import build_cache
    from .checkpoint import load_checkpoint, resolve_run_dir

    model, meta = load_checkpoint(checkpoint)
    check_labels(dataset.labels, meta.labels)
    data = resolve_split(dataset, split, meta.labels)
    if not data.paths:
        raise DatasetError(f"the dataset's '{split}' split is empty: nothing to evaluate")
    h = _resolve_hop(meta.frontend, meta.window_frames, hop_seconds, hop)
    run = resolve_run_dir(checkpoint)
    cache = Path(cache_dir) if cache_dir is not None else run.parent / "feature-cache"
    store = build_cache(data.paths, data.clip_ids, meta.frontend, cache)
    probs = predict_clips(model, store, meta.frontend, meta.window_frames, hop=h)
    rep = compute_report(probs, data.y, meta.labels, data.devices, split=split, checkpoint=str(run),
                         clip_ids=data.clip_ids, files=[str(p) for p in data.paths])
    return dataclasses.replace(rep, extra={"epoch": meta.epoch, "run_id": meta.run_id, "preset": meta.preset,
                                           "window_frames": meta.window_frames, "hop_frames": h,
                                           "tiled_clips": int(np.sum(store.frames < meta.window_frames))})


def evaluate_tflite(model_path: str | os.PathLike, dataset, *, split: str = "evaluate",
                    hop_seconds: float | None = None, hop: int | None = None, threads: int = 1) -> EvalReport:
    """Evaluate an exported ``.tflite`` on ``dataset.split(split)`` through the device runtime.

    Each clip is read at the model card's sample rate and classified by :func:`edge_asc.runtime.classify_audio`
    (the :class:`~edge_asc.runtime.Classifier` on the windows of :mod:`edge_asc.frontend.windows`), so the clip
    posteriors are exactly those ``edge-asc classify --hop`` prints. Needs no torch.

    Args:
        hop_seconds / hop: window hop in seconds (as ``classify --hop``) or in frames; at most one; default half a
            window.
        threads: interpreter CPU threads.

    Raises:
        ModelContractError: not a model with an edge-asc model card (from the runtime).
        DatasetError: the dataset's label set differs from the model's, or the split is empty.
        ConfigError: a bad hop, or both hops given.
        AudioInputError: a clip too short for one feature frame.
    """
    from ..audio import AudioWarning, load_audio
    from ..runtime import Classifier, classify_audio

    clf = Classifier(model_path, threads=threads)
    card = clf.card
    spec = card.frontend
    check_labels(dataset.labels, card.labels)
    data = resolve_split(dataset, split, card.labels)
    if not data.paths:
        raise DatasetError(f"the dataset's '{split}' split is empty: nothing to evaluate")
    h = _resolve_hop(spec, card.window_frames, hop_seconds, hop)
    hop_s = h * spec.hop_length / spec.sample_rate  # classify_audio rounds it back to exactly h frames
    need = spec.samples_for_frames(card.window_frames)
    probs = np.zeros((len(data.paths), len(card.labels)), dtype=np.float64)
    tiled = 0
    for i, path in enumerate(data.paths):
        audio, _ = load_audio(path, spec.sample_rate)
        tiled += int(audio.size < need)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*shorter than one model window", category=AudioWarning)
            probs[i] = classify_audio(clf, audio, hop_seconds=hop_s).clip_probs
    rep = compute_report(probs, data.y, card.labels, data.devices, split=split, checkpoint=str(model_path),
                         clip_ids=data.clip_ids, files=[str(p) for p in data.paths])
    return dataclasses.replace(rep, extra={"model_sha256": clf.model_sha256, "preset": card.model_preset,
                                           "backend": clf.backend, "window_frames": card.window_frames,
                                           "hop_frames": h, "tiled_clips": tiled})
