"""Knowledge distillation: a student trained against the averaged logits of an ensemble of our own trained runs.

Loss (Hinton et al. 2015; CP-JKU's DCASE recipe):
``(1 - W) * CE(student, mixed targets) + W * T^2 * KL(softmax(teacher / T) || softmax(student / T))``, with the
teacher logits averaged over the ensemble. The ``T^2`` keeps the soft term's gradient scale independent of ``T``.

The teachers see the student's batch after every augmentation (crop, DIR, Freq-MixStyle, shifts, masks, mixup), so
their targets are consistent with what the student is asked to fit, with no per-clip cache to keep in step with
mixup. Each teacher gets that batch in its OWN normalisation: the batch is normalised with the student's training
statistics, and an affine per-channel map ``x_t = (x * std_s + mean_s - mean_t) / std_t`` turns it into the
teacher's (the map commutes with mixup, and a mask value stays the same dB level). Teachers whose un-normalised
features differ (another front end, mel count or channel count) or whose window length differs cannot run on that
batch: they are clip teachers (:class:`TeacherEnsemble`), whose logits of each un-augmented training clip are
computed once in their own features and mixed with the batch's mixup weight and partner.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..spec import FrontendSpec


@dataclass(frozen=True, kw_only=True)
class TeacherRef:
    """One teacher: a run directory and what identifies its weights (checked when the teacher is loaded)."""

    path: str
    """absolute path of the run directory."""
    run_id: str
    weights_sha256: str
    preset: str = ""


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Knowledge distillation settings of a run (part of its TrainConfig, so ``--resume`` requires the same)."""

    teachers: tuple[TeacherRef, ...]
    """the ensemble; logits are averaged over it."""
    temperature: float = 2.0
    """softmax temperature T of both distributions in the KL term (CP-JKU: 2)."""
    weight: float = 0.5
    """W: weight of the KL term, (1 - W) that of the cross-entropy on the (mixed) labels; 0 = plain training."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "teachers", tuple(self.teachers))
        if not self.teachers:
            raise ConfigError("distillation needs at least one teacher run")
        if not (self.temperature > 0):
            raise ConfigError(f"kd temperature must be > 0, got {self.temperature!r}")
        if not (0.0 <= self.weight <= 1.0):
            raise ConfigError(f"kd weight must be in [0, 1], got {self.weight!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"teachers": [vars(t).copy() for t in self.teachers], "temperature": self.temperature,
                "weight": self.weight}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        kw = dict(d)
        kw["teachers"] = tuple(TeacherRef(**t) for t in kw["teachers"])
        return cls(**kw)


def teacher_refs(runs: Sequence[str | os.PathLike]) -> tuple[TeacherRef, ...]:
    """:class:`TeacherRef` of each run directory (from its ``checkpoint.json``; no torch needed).

    Raises:
        ModelContractError: a path that is not a completed training run.
    """
    from .checkpoint import read_meta, resolve_run_dir

    refs = []
    for r in runs:
        meta = read_meta(r)
        refs.append(TeacherRef(path=str(resolve_run_dir(r).resolve()), run_id=meta.run_id,
                               weights_sha256=meta.weights_sha256, preset=meta.preset))
    return tuple(refs)


def kd_loss(student_logits, targets, teacher_logits, temperature: float, weight: float):
    """``(1 - W) * CE + W * T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch-mean, as a torch scalar.

    Args:
        student_logits: float[B, K] (with grad).
        targets: float[B, K] soft labels (mixup-mixed one-hot), rows summing to 1.
        teacher_logits: float[B, K] or None (then, as with ``weight == 0``, exactly the plain soft-label CE).
    """
    import torch.nn.functional as F

    ce = -(targets * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
    if teacher_logits is None or weight == 0:
        return ce
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return (1.0 - weight) * ce + weight * t * t * kl


def _spec_mismatch(teacher: FrontendSpec, student: FrontendSpec) -> str | None:
    if teacher.feature_hash() == student.feature_hash():
        return None
    td, sd = teacher.to_dict(), student.to_dict()
    diff = [f"{k} {td[k]!r} vs {sd[k]!r}" for k in sorted(td) if k not in ("norm_mean", "norm_std")
            and td[k] != sd.get(k)]
    return ", ".join(diff) or "feature hash"


class TeacherEnsemble:
    """The loaded teachers of a :class:`DistillConfig`, in eval mode on ``device``; ``logits(x)`` is their mean.

    Two kinds of teacher:

    * **batch teachers** (the student's features and window): run on the student's augmented batch (mixup
      included), in their own normalisation;
    * **clip teachers** (another front end or window, e.g. ``paper`` teaching ``micro``): their features cannot be
      derived from the student's batch, so each training clip's logits are computed once, un-augmented, from the
      teacher's own features (:meth:`cache_clip_logits`: mean logits over the clip's windows), and a batch takes
      its clips' rows, mixed with the batch's mixup weight and partner: ``lam * z[i] + (1 - lam) * z[perm[i]]``.

    The ensemble's logits are the mean over all teachers.
    """

    def __init__(self, config: DistillConfig, *, student_spec: FrontendSpec, labels: Sequence[str],
                 window_frames: int, device: Any = "cpu") -> None:
        """Load and check every teacher against the student.

        Args:
            student_spec: the student's front end WITH its training normalisation (the batch's normalisation).

        Raises:
            ConfigError: a teacher whose weights changed since the run recorded it or whose labels differ from the
                student's (one line naming the mismatch).
            ModelContractError: a missing or corrupt teacher checkpoint.
        """
        from .checkpoint import load_checkpoint

        self.config = config
        self.models, self.maps = [], []
        self.clip_teachers: list[tuple[Any, Any]] = []
        self.clip_logits: np.ndarray | None = None
        c = student_spec.channels
        mean_s = np.broadcast_to(np.asarray(student_spec.norm_mean, np.float32), (c,))
        std_s = np.broadcast_to(np.asarray(student_spec.norm_std, np.float32), (c,))
        for ref in config.teachers:
            model, meta = load_checkpoint(ref.path)
            name = f"teacher {ref.path!r}"
            if meta.weights_sha256 != ref.weights_sha256:
                raise ConfigError(f"{name} was retrained or changed since this run recorded it (weights sha256 "
                                  f"{meta.weights_sha256[:12]} != {ref.weights_sha256[:12]}): start a new run")
            if tuple(meta.labels) != tuple(labels):
                raise ConfigError(f"{name} has labels {list(meta.labels)} but the dataset has {list(labels)}: "
                                  "teachers must be trained on the same label set")
            if _spec_mismatch(meta.frontend, student_spec) is not None or meta.window_frames != window_frames:
                self.clip_teachers.append((model.to(device).eval(), meta))
                continue
            mean_t = np.broadcast_to(np.asarray(meta.frontend.norm_mean, np.float32), (c,))
            std_t = np.broadcast_to(np.asarray(meta.frontend.norm_std, np.float32), (c,))
            scale = (std_s / std_t).reshape(1, c, 1, 1).astype(np.float32)
            shift = ((mean_s - mean_t) / std_t).reshape(1, c, 1, 1).astype(np.float32)
            self.models.append(model.to(device).eval())
            self.maps.append((scale, shift))
        self.device = device

    def cache_clip_logits(self, features_for: Callable[[Any], Sequence[np.ndarray]]) -> None:
        """Compute the clip teachers' logits of every training clip: ``features_for(spec)`` gives the training
        clips' un-normalised features for a front end (e.g. a feature cache built with it); each clip is cut into the
        teacher's windows (:func:`edge_asc.frontend.windows`) and its logits averaged over them
        (:func:`edge_asc.train.evaluate.predict_clips`)."""
        from .evaluate import predict_clips

        total = None
        for model, meta in self.clip_teachers:
            z = predict_clips(model, features_for(meta.frontend), meta.frontend, meta.window_frames,
                              average="logits").astype(np.float64)
            total = z if total is None else total + z
        if total is not None:
            self.clip_logits = (total / len(self.clip_teachers)).astype(np.float32)

    def logits(self, x: np.ndarray, idx: np.ndarray | None = None, mix: tuple[float, np.ndarray] | None = None):
        """Mean teacher logits ``torch.float32[B, K]`` on the ensemble's device for a batch ``x``
        (``float32[B, C, n_mels, W]``, normalised with the student's statistics) made of training clips ``idx``,
        mixed as ``mix`` = (lam, perm) (None: no mixup). ``idx`` is needed only with clip teachers."""
        import torch

        out = None
        with torch.no_grad():
            for model, (scale, shift) in zip(self.models, self.maps):
                xt = torch.from_numpy(np.ascontiguousarray(x * scale + shift, dtype=np.float32)).to(self.device)
                z = model(xt).float()
                out = z if out is None else out + z
        if self.clip_teachers:
            if self.clip_logits is None or idx is None:
                raise ConfigError("teachers with another front end need their clip logits (cache_clip_logits) "
                                  "and the batch's clip indices")
            zc = self.clip_logits[np.asarray(idx)]
            if mix is not None:
                lam, perm = mix
                zc = lam * zc + (1.0 - lam) * zc[perm]
            z = torch.from_numpy(np.ascontiguousarray(zc, np.float32)).to(self.device) * len(self.clip_teachers)
            out = z if out is None else out + z
        return out / (len(self.models) + len(self.clip_teachers))

    def loss(self, student_logits, targets, x: np.ndarray, idx: np.ndarray | None = None,
             mix: tuple[float, np.ndarray] | None = None):
        """:func:`kd_loss` of the student's logits against this ensemble on batch ``x`` (clips ``idx``, mixup
        ``mix``: see :meth:`logits`)."""
        cfg = self.config
        teacher = None if cfg.weight == 0 else self.logits(x, idx, mix)
        return kd_loss(student_logits, targets, teacher, cfg.temperature, cfg.weight)


def describe(config: DistillConfig) -> str:
    """One line for the training log."""
    names = ", ".join(f"{Path(t.path).name} ({t.preset or '?'})" for t in config.teachers)
    return f"distilling from {len(config.teachers)} teacher(s): {names}; T={config.temperature:g} W={config.weight:g}"
