"""Verification of an exported model: the PyTorch float model and the exported ``.tflite`` on the held-out split.

The exported model is run through the device runtime (:class:`edge_asc.runtime.Classifier` and
:func:`edge_asc.runtime.classify_audio`, the path ``edge-asc classify`` takes), so the numbers here are the numbers a
user of the artifact gets. The float model sees the offline front end's windows at the same starts (window ``k``
covers frames ``[k*hop, k*hop + window_frames)``; the streaming and offline front ends are equal by construction).

Window-level metrics compare the two models on identical inputs; clip-level macro accuracy averages window
posteriors per clip, as :mod:`edge_asc.train.evaluate` and the runtime do.

Stages of :func:`verify_export`: :func:`held_out_clips` -> :func:`run_exported` (:class:`ExportedRun`) ->
:func:`run_float` (:class:`FloatRun`) -> :func:`compare` (:class:`VerificationReport`). What the float model's
event block does is read through :func:`edge_asc.model.verification_probe`; the exported model is fed through
:class:`edge_asc.runtime.Classifier`'s public methods. Whether the numbers are good enough is decided by
:mod:`edge_asc.export.gate`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..metrics import macro_accuracy, softmax

REPORT_SCHEMA_VERSION = 2

#: Float top-2 logit margin above which a window counts as one the float model is sure of (probability ratio of the
#: top two classes >= e^0.5 = 1.65) in :attr:`VerificationReport.confident_top1_agreement`.
CONFIDENT_MARGIN = 0.5


@dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """Float (PyTorch) vs exported (TFLite via the runtime) on held-out clips. Fractions are in [0, 1].

    Measurements only: :func:`edge_asc.export.gate.check_gate` decides from them whether the export passes."""

    mode: str
    split: str
    n_clips: int
    n_windows: int
    hop_frames: int
    window_top1_agreement: float
    """fraction of windows where argmax(float logits) == argmax(exported logits)."""
    clip_top1_agreement: float
    """fraction of clips whose clip labels (mean window posterior) agree."""
    float_macro_accuracy: float
    """clip-level macro accuracy (mean of per-class recalls) of the PyTorch float model."""
    exported_macro_accuracy: float
    """the same for the exported model, from :func:`edge_asc.runtime.classify_audio`."""
    max_logit_error: float
    """max |float logit - exported logit| over windows and classes."""
    mean_logit_error: float
    events_topk_set_agreement: float | None = None
    """event head: fraction of windows whose k event indices are the same set in both models (None: no event head
    or its tensor was not found in the exported graph)."""
    events_top1_agreement: float | None = None
    """event head: fraction of windows whose most frequent event index agrees."""
    output_grid_agreement: float | None = None
    """agreement of the float model with *its own logits rounded to the exported output's int8 grid* (scale,
    zero point, saturation; ties to the lowest class, as argmax over int8 values): the ceiling that quantising the
    output alone puts on ``window_top1_agreement`` (None for a float output)."""
    confident_fraction: float = 0.0
    """fraction of windows whose float top-2 logit margin is at least ``CONFIDENT_MARGIN``."""
    confident_top1_agreement: float | None = None
    """top-1 agreement on those windows only (None when there are none)."""
    events_count_grid_set_agreement: float | None = None
    """event head: the top-k set agreement that the int8 *count* tensor's grid alone allows: the float model's
    per-channel cell counts (fractions of H*W) rounded to that tensor's quantisation, ranked as the block ranks them,
    against the exact ranking (None when the tensor was not found)."""
    events_count_grid_top1_agreement: float | None = None
    """the same for the most frequent index."""
    input_grid_agreement: float | None = None
    """top-1 agreement of the float model with *itself on its inputs rounded to the exported input's int8 grid*:
    what quantising the input alone (every full-int8 file does) costs. Not a bound on ``window_top1_agreement``
    (errors elsewhere can cancel), but the scale of what an int8 export can reach on this model: windows whose
    decision flips under a one-step input change (None for a float input)."""
    events_input_grid_set_agreement: float | None = None
    """event head: the top-k set agreement of the float model with itself on the int8-rounded inputs."""
    stream_offline_max_prob_diff: float = 0.0
    """max |posterior| difference between classify_audio's windows and the offline windows run through the same
    Classifier (0 when the streaming path equals the offline one)."""
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def macro_accuracy_drop(self) -> float:
        """float - exported macro accuracy, in accuracy points x 100 (percentage points)."""
        return 100.0 * (self.float_macro_accuracy - self.exported_macro_accuracy)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        d["macro_accuracy_drop_points"] = self.macro_accuracy_drop
        d["schema_version"] = REPORT_SCHEMA_VERSION
        return d

    def summary(self) -> str:
        ev = ""
        if self.events_topk_set_agreement is not None:
            ev = (f", events top-k set {self.events_topk_set_agreement:.3f} / top-1 "
                  f"{self.events_top1_agreement:.3f}")
        if self.events_count_grid_set_agreement is not None:
            ev += (f" (count grid allows {self.events_count_grid_set_agreement:.3f} / "
                   f"{self.events_count_grid_top1_agreement:.3f})")
        if self.output_grid_agreement is not None:
            ev += f", output-grid ceiling {self.output_grid_agreement:.3f}"
        if self.input_grid_agreement is not None:
            ev += f", input-grid floor {self.input_grid_agreement:.3f}"
            if self.events_input_grid_set_agreement is not None:
                ev += f" (events {self.events_input_grid_set_agreement:.3f})"
        if self.confident_top1_agreement is not None:
            ev += (f", {self.confident_top1_agreement:.3f} on the {100 * self.confident_fraction:.0f}% windows with "
                   f"margin >= {CONFIDENT_MARGIN}")
        return (f"{self.mode}: top-1 agreement {self.window_top1_agreement:.4f} on {self.n_windows} windows "
                f"({self.n_clips} clips), macro acc float {self.float_macro_accuracy:.4f} vs exported "
                f"{self.exported_macro_accuracy:.4f} (drop {self.macro_accuracy_drop:+.2f} points), logit error max "
                f"{self.max_logit_error:.4f} mean {self.mean_logit_error:.4f}{ev}")


def output_grid_top1(logits: np.ndarray, quant: Any) -> np.ndarray | None:
    """Top-1 class of float ``logits`` [N, K] after rounding them to an integer output's grid.

    ``quant``: a :class:`edge_asc.spec.QuantParams` (``real = scale * (q - zero_point)``). Values are rounded to the
    nearest step and saturated to the dtype's range; tied steps go to the lowest class, as argmax over the integer
    output does. None for a float output.
    """
    if quant.dtype not in ("int8", "uint8", "int16"):
        return None
    return np.argmax(_to_grid(logits, quant.scale, quant.zero_point, quant.dtype), axis=1)


def input_grid_run(torch_model: Any, windows: np.ndarray, quant: Any, *, batch_size: int = 64) -> FloatRun | None:
    """:func:`run_float` on ``windows`` (normalised float32[N, C, n_mels, W]) rounded to the grid of an integer
    input ``quant`` (:class:`edge_asc.spec.QuantParams`) and back: the float model with only its input quantised.
    None for a float input."""
    if quant.dtype not in ("int8", "uint8", "int16"):
        return None
    g = (_to_grid(windows, quant.scale, quant.zero_point, quant.dtype) - quant.zero_point) * quant.scale
    return run_float(torch_model, g.astype(np.float32), batch_size=batch_size)


def grid_agreement(fl: FloatRun, other: FloatRun) -> tuple[float, float | None]:
    """(top-1 agreement, event top-k set agreement or None) of two float runs on the same windows."""
    top1 = float(np.mean(np.argmax(other.logits, 1) == np.argmax(fl.logits, 1)))
    ev = _event_agreement(fl.events, other.events)[0] if fl.events is not None and other.events is not None else None
    return top1, ev


def held_out_windows(spec: Any, window_frames: int, dataset: Any, clips: Sequence[Any],
                     hop_seconds: float | None = None) -> np.ndarray:
    """float32[N, C, n_mels, W]: the normalised windows of ``clips`` that :func:`run_exported` gives the float model
    of an export with front end ``spec`` and ``window_frames`` (same starts and order), without an exported model."""
    from ..audio import load_audio
    from ..calibration import clip_path
    from ..frontend import hop_frames, normalize, offline, windows

    hop = hop_frames(spec, window_frames, hop_seconds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short clip is tiled to one window, as in run_exported
        return np.concatenate([normalize(windows(offline(load_audio(clip_path(dataset, c), spec.sample_rate)[0],
                                                         spec), window_frames, hop), spec) for c in clips])


def _to_grid(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """The integer codes (as float64) that ``x`` quantises to: rounded to the nearest step, saturated to ``dtype``."""
    info = np.iinfo(np.dtype(dtype))
    return np.clip(np.rint(np.asarray(x, np.float64) / scale) + zero_point, info.min, info.max)


def event_ranking(counts: np.ndarray, k: int) -> np.ndarray:
    """int64[N, k]: the event block's ranking of per-channel counts [N, C] (count descending, index ascending)."""
    idx = np.arange(counts.shape[1])
    return np.stack([np.lexsort((idx, -row))[:k] for row in counts])


def _event_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(fraction of rows of two int[N, k] event rankings with the same set, fraction with the same first index)."""
    same_set = [set(x) == set(y) for x, y in zip(a.tolist(), b.tolist())]
    return float(np.mean(same_set)), float(np.mean(a[:, 0] == b[:, 0]))


def _count_grid(model: bytes, channels: int, interp: Any) -> tuple[float, int] | None:
    """(scale, zero point) of the event block's count tensor, the MEAN from [1, H, W, C] to [1, C], read from
    ``interp`` (a LiteRT interpreter of ``model``); None when there is no single such tensor or it is float."""
    from .convert import tflite_ops

    outs = [op.outputs[0] for op in tflite_ops(model) if op.name == "MEAN" and op.output_shapes
            and tuple(op.output_shapes[0]) == (1, channels) and len(op.input_shapes[0]) == 4]
    if len(outs) != 1:
        return None
    scale, zp = next(t for t in interp.get_tensor_details() if t["index"] == outs[0])["quantization"]
    return (float(scale), int(zp)) if scale else None


class EventsProbe:
    """Reads the event block's output tensor ([1, k] of index / C) out of an exported model.

    The tensor is found structurally: the input of shape [1, k] of the CONCATENATION that joins it to the pooled
    features [1, pooled]. ``find`` returns None when the graph has no such op (head 'gap').
    """

    def __init__(self, model: bytes, tensor_index: int, channels: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": that is what this is
            self.interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
        self.interp.allocate_tensors()
        self.index, self.channels = tensor_index, channels
        self.in_index = self.interp.get_input_details()[0]["index"]
        det = next(t for t in self.interp.get_tensor_details() if t["index"] == tensor_index)
        self.scale, self.zp = det["quantization"]

    @classmethod
    def find(cls, model: bytes, events: Any) -> EventsProbe | None:
        """The probe of ``model``'s event tensor for a block of geometry ``events``
        (:class:`edge_asc.model.probe.EventBlockSpec`), or None when the graph has no such tensor."""
        from .convert import tflite_ops

        for op in tflite_ops(model):
            if op.name != "CONCATENATION":
                continue
            shapes = [tuple(s) for s in op.input_shapes]
            if (1, events.pooled_features) in shapes and (1, events.topk) in shapes:
                return cls(model, op.inputs[shapes.index((1, events.topk))], events.channels)
        return None

    def indices(self, x_input: np.ndarray) -> np.ndarray:
        """int64[k] event channel indices for one model input tensor (:meth:`edge_asc.runtime.Classifier.input_tensor`:
        normalised, laid out and quantised as the card says)."""
        self.interp.set_tensor(self.in_index, x_input)
        self.interp.invoke()
        v = self.interp.get_tensor(self.index).astype(np.float64).reshape(-1)
        if self.scale:
            v = (v - self.zp) * self.scale
        return np.rint(v * self.channels).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class ExportedRun:
    """What :func:`run_exported` measured on the held-out clips (N windows in clip order, n clips, K classes)."""

    windows: np.ndarray
    """float32[N, C, n_mels, window_frames]: the normalised windows (NCHW), as the float model takes them."""
    owners: np.ndarray
    """int64[N]: index of the clip each window belongs to."""
    logits: np.ndarray
    """float32[N, K]: the exported model's dequantised logits, window by window through the Classifier."""
    clip_probs: np.ndarray
    """float32[n, K]: :func:`edge_asc.runtime.classify_audio`'s clip posteriors (what a user of the file gets)."""
    y: np.ndarray
    """int64[n]: the clips' true label indices."""
    events: np.ndarray | None
    """int64[N, k]: the exported event block's indices (None when not read)."""
    stream_offline_max_prob_diff: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class FloatRun:
    """What :func:`run_float` computed for the same windows."""

    logits: np.ndarray
    """float32[N, K]: the PyTorch model's logits."""
    events: np.ndarray | None
    """int64[N, k]: its event block's indices (None without an event block)."""
    counts: np.ndarray | None
    """float64[N, C]: the per-channel cell counts its event block ranks (fractions of the cells)."""


def held_out_clips(dataset: Any, labels: Sequence[str], split: str = "evaluate",
                   max_clips: int | None = None) -> list[Any]:
    """The clips of ``dataset.split(split)`` whose label is one of ``labels``; with ``max_clips``, at most that many,
    round-robin over labels (so a cap keeps every class).

    Raises:
        DatasetError: no clip of the split has one of the labels.
    """
    index = set(labels)
    clips = [c for c in dataset.split(split) if c.label in index]
    if max_clips is not None:
        clips = _spread(clips, max_clips)
    if not clips:
        raise DatasetError(f"the dataset's {split!r} split has no clips with the model's labels: nothing to verify "
                           "the export on (check --data)")
    return clips


def run_exported(clf: Any, dataset: Any, clips: Sequence[Any], labels: Sequence[str], *,
                 hop_seconds: float | None = None, events: EventsProbe | None = None) -> ExportedRun:
    """Run the exported model (a :class:`edge_asc.runtime.Classifier`) on ``clips``: through
    :func:`edge_asc.runtime.classify_audio` (clip posteriors) and window by window on the offline front end's windows
    at the same starts (window ``k`` covers frames ``[k*hop, k*hop + window_frames)``).

    Raises:
        AudioInputError: a clip cannot be read.
        ModelContractError: the interpreter failed on a window.
    """
    from ..audio import load_audio
    from ..calibration import clip_path
    from ..frontend import normalize, offline, windows
    from ..runtime import classify_audio, hop_frames_for

    card = clf.card
    spec, w = card.frontend, card.window_frames
    hop = hop_frames_for(card, hop_seconds)
    index = {name: i for i, name in enumerate(labels)}
    notes: list[str] = []
    y, q_clip, owners = [], [], []
    all_wins, q_logits, q_events = [], [], []
    prob_diff = 0.0
    for ci, c in enumerate(clips):
        audio, _ = load_audio(clip_path(dataset, c), spec.sample_rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a short clip is tiled to one window, by windows() below too
            res = classify_audio(clf, audio, hop_seconds=hop_seconds)
        wins = windows(offline(audio, spec), w, hop)
        ql = np.stack([clf.logits(x) for x in wins])
        if ql.shape[0] == res.window_probs.shape[0]:
            prob_diff = max(prob_diff, float(np.max(np.abs(softmax(ql) - res.window_probs))))
        else:
            notes.append(f"clip {c.clip_id}: classify_audio gave {res.window_probs.shape[0]} windows, offline "
                         f"{ql.shape[0]}")
        xn = normalize(wins, spec)
        if events is not None:
            q_events.append(np.stack([events.indices(clf.input_tensor(x)) for x in wins]))
        all_wins.append(xn)
        q_logits.append(ql)
        q_clip.append(res.clip_probs)
        owners.extend([ci] * len(xn))
        y.append(index[c.label])
    return ExportedRun(windows=np.concatenate(all_wins), owners=np.asarray(owners, np.int64),
                       logits=np.concatenate(q_logits), clip_probs=np.stack(q_clip), y=np.asarray(y, np.int64),
                       events=np.concatenate(q_events) if q_events else None,
                       stream_offline_max_prob_diff=prob_diff, notes=tuple(notes))


def run_float(torch_model: Any, windows: np.ndarray, *, batch_size: int = 64) -> FloatRun:
    """Run ``torch_model`` (a Mini-SegNet, put in eval mode) on normalised windows float32[N, C, n_mels, W],
    recording its event block through :func:`edge_asc.model.verification_probe`."""
    import torch

    from ..model import verification_probe

    probe = verification_probe(torch_model)
    # bound the float model's activation memory (~4 full-resolution tensors of c1 x H x W floats per window alive)
    batch_size = max(1, min(batch_size, int(2e7 // (probe.activation_channels * windows.shape[2] * windows.shape[3]))))
    torch_model.eval()
    with probe.recording() as rec, torch.no_grad():
        logits = np.concatenate([torch_model(torch.from_numpy(np.ascontiguousarray(windows[s:s + batch_size])))
                                 .numpy() for s in range(0, len(windows), batch_size)])
    return FloatRun(logits=logits, events=rec.indices(), counts=rec.counts())


def compare(exported: ExportedRun, fl: FloatRun, *, card: Any, n_labels: int, mode: str, split: str, hop: int,
            topk: int | None = None, count_units: float = 1.0, count_grid: tuple[float, int] | None = None,
            input_grid: FloatRun | None = None, notes: Sequence[str] = (), seconds: float = 0.0
            ) -> VerificationReport:
    """The :class:`VerificationReport` of a float and an exported run on the same windows.

    Args:
        card: the exported model's :class:`~edge_asc.spec.ModelCard` (its output quantisation gives the grid ceiling).
        n_labels: K, the number of classes (for the macro accuracy).
        topk, count_units: the event block's k and count units (:class:`edge_asc.model.probe.EventBlockSpec`).
        count_grid: (scale, zero point) of the exported count tensor, or None when it was not found.
        input_grid: the float model on the same windows rounded to the exported input's grid
            (:func:`input_grid_run`), or None.
    """
    fl_all, ql_all = fl.logits, exported.logits
    own = exported.owners
    n_clips = len(exported.y)
    fp = softmax(fl_all)
    f_clip = [fp[own == i].mean(axis=0) for i in range(n_clips)]
    yv = exported.y
    fpred, qpred = np.argmax(np.stack(f_clip), 1), np.argmax(exported.clip_probs, 1)
    err = np.abs(fl_all.astype(np.float64) - ql_all)
    fl_top, q_top = np.argmax(fl_all, 1), np.argmax(ql_all, 1)
    agree = float(np.mean(fl_top == q_top))
    grid_top = output_grid_top1(fl_all, card.output_quant)
    out_grid = None if grid_top is None else float(np.mean(grid_top == fl_top))
    top2 = np.sort(fl_all, axis=1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) >= CONFIDENT_MARGIN
    ev_set = ev_top1 = cg_set = cg_top1 = None
    if exported.events is not None and fl.events is not None:
        ev_set, ev_top1 = _event_agreement(fl.events, exported.events)
    if count_grid is not None and fl.counts is not None and topk is not None:
        exact = fl.counts
        cg_set, cg_top1 = _event_agreement(event_ranking(exact, topk),
                                           event_ranking(_to_grid(exact * count_units, *count_grid), topk))
    ig_top, ig_ev = grid_agreement(fl, input_grid) if input_grid is not None else (None, None)
    return VerificationReport(
        mode=mode, split=split, n_clips=n_clips, n_windows=int(fl_all.shape[0]), hop_frames=hop,
        window_top1_agreement=agree, clip_top1_agreement=float(np.mean(fpred == qpred)),
        float_macro_accuracy=macro_accuracy(fpred, yv, n_labels),
        exported_macro_accuracy=macro_accuracy(qpred, yv, n_labels),
        max_logit_error=float(err.max()), mean_logit_error=float(err.mean()),
        events_topk_set_agreement=ev_set, events_top1_agreement=ev_top1, events_count_grid_set_agreement=cg_set,
        events_count_grid_top1_agreement=cg_top1, output_grid_agreement=out_grid,
        input_grid_agreement=ig_top, events_input_grid_set_agreement=ig_ev,
        confident_fraction=float(np.mean(sure)),
        confident_top1_agreement=float(np.mean(fl_top[sure] == q_top[sure])) if sure.any() else None,
        stream_offline_max_prob_diff=exported.stream_offline_max_prob_diff,
        seconds=seconds, notes=tuple(list(notes)[:20]),
    )


def verify_export(model_path: str | Path, torch_model: Any, dataset: Any, labels: Sequence[str], *, mode: str,
                  split: str = "evaluate", hop_seconds: float | None = None, max_clips: int | None = None,
                  batch_size: int = 64) -> VerificationReport:
    """Compare ``torch_model`` (float, eval mode) with the exported model at ``model_path`` on ``split``:
    :func:`held_out_clips` -> :func:`run_exported` -> :func:`run_float` -> :func:`compare`.

    Args:
        model_path: the exported ``.tflite`` with its ModelCard.
        torch_model: the Mini-SegNet the file was exported from (NCHW normalised input).
        dataset: :mod:`edge_asc.data` Dataset; its ``split`` clips are read at the card's sample rate.
        labels: the model's labels (clip labels are mapped to their indices; other clips are skipped).
        hop_seconds: window hop (default: half a window, as ``edge-asc classify``).
        max_clips: verify on at most N clips of the split, round-robin over labels.

    Raises:
        DatasetError: no clip of the split has one of the model's labels.
        ModelContractError: the exported model does not honour its card (from the runtime).
    """
    from ..model import verification_probe
    from ..runtime import Classifier, hop_frames_for

    t0 = time.perf_counter()
    clips = held_out_clips(dataset, labels, split, max_clips)
    clf = Classifier(model_path)
    events = verification_probe(torch_model).events
    notes: list[str] = []
    reader = grid = None
    if events is not None:
        model_bytes = Path(model_path).read_bytes()
        reader = EventsProbe.find(model_bytes, events)
        if reader is None:
            notes.append("event head tensor not found in the exported graph: top-k agreement not measured")
        else:
            grid = _count_grid(model_bytes, events.channels, reader.interp)
    exported = run_exported(clf, dataset, clips, labels, hop_seconds=hop_seconds, events=reader)
    fl = run_float(torch_model, exported.windows, batch_size=batch_size)
    ig = input_grid_run(torch_model, exported.windows, clf.card.input_quant, batch_size=batch_size)
    return compare(exported, fl, card=clf.card, n_labels=len(labels), mode=mode, split=split,
                   hop=hop_frames_for(clf.card, hop_seconds), topk=events.topk if events else None,
                   count_units=events.count_units if events else 1.0, count_grid=grid, input_grid=ig,
                   notes=notes + list(exported.notes), seconds=time.perf_counter() - t0)


def _spread(clips: list[Any], n: int) -> list[Any]:
    """At most ``n`` clips, taken round-robin over labels (so a cap keeps every class)."""
    if n >= len(clips):
        return clips
    by: dict[str, list[Any]] = {}
    for c in clips:
        by.setdefault(c.label, []).append(c)
    out: list[Any] = []
    i = 0
    while len(out) < n:
        for k in sorted(by):
            if i < len(by[k]) and len(out) < n:
                out.append(by[k][i])
        i += 1
    return out
