"""Knowledge distillation: a student trained against the averaged logits of an ensemble of our own trained runs.

Loss (Hinton et al. 2015; CP-JKU's DCASE recipe):
``(1 - W) * CE(student, mixed targets) + W * T^2 * KL(softmax(teacher / T) || softmax(student / T))``, with the
teacher logits averaged over the ensemble. The ``T^2`` keeps the soft term's gradient scale independent of ``T``.

The teachers see the student's batch after every augmentation (crop, DIR, Freq-MixStyle, shifts, masks, mixup), so
their targets are consistent with what the student is asked to fit, with no per-clip cache to keep in step with
mixup. Each teacher gets that batch in its OWN normalisation: the batch is normalised with the student's training
statistics, and an affine per-channel map ``x_t = (x * std_s + mean_s - mean_t) / std_t`` turns it into the
teacher's (the map commutes with mixup, and a mask value stays the same dB level). Teachers whose un-normalised
features differ (another front end, mel count or channel count) or whose window length differs are refused: they
would need their own feature cache and a crop/shift/mask replay in their frame grid.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    """The loaded teachers of a :class:`DistillConfig`, in eval mode on ``device``; ``logits(x)`` is their mean."""

    def __init__(self, config: DistillConfig, *, student_spec: FrontendSpec, labels: Sequence[str],
                 window_frames: int, device: Any = "cpu") -> None:
        """Load and check every teacher against the student.

        Args:
            student_spec: the student's front end WITH its training normalisation (the batch's normalisation).

        Raises:
            ConfigError: a teacher whose weights changed since the run recorded it, whose labels, features or window
                differ from the student's (one line naming the mismatch).
            ModelContractError: a missing or corrupt teacher checkpoint.
        """
        from .checkpoint import load_checkpoint

        self.config = config
        self.models, self.maps = [], []
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
            why = _spec_mismatch(meta.frontend, student_spec)
            if why is not None:
                raise ConfigError(f"{name} uses other features than the student ({why}): distillation needs "
                                  "teachers with the student's front end, mel count and channels")
            if meta.window_frames != window_frames:
                raise ConfigError(f"{name} takes {meta.window_frames}-frame windows, the student "
                                  f"{window_frames}: distillation needs the same window length")
            mean_t = np.broadcast_to(np.asarray(meta.frontend.norm_mean, np.float32), (c,))
            std_t = np.broadcast_to(np.asarray(meta.frontend.norm_std, np.float32), (c,))
            scale = (std_s / std_t).reshape(1, c, 1, 1).astype(np.float32)
            shift = ((mean_s - mean_t) / std_t).reshape(1, c, 1, 1).astype(np.float32)
            self.models.append(model.to(device).eval())
            self.maps.append((scale, shift))
        self.device = device

    def logits(self, x: np.ndarray):
        """Mean teacher logits ``torch.float32[B, K]`` on the ensemble's device for a batch ``x``
        (``float32[B, C, n_mels, W]``, normalised with the student's statistics)."""
        import torch

        out = None
        with torch.no_grad():
            for model, (scale, shift) in zip(self.models, self.maps):
                xt = torch.from_numpy(np.ascontiguousarray(x * scale + shift, dtype=np.float32)).to(self.device)
                z = model(xt).float()
                out = z if out is None else out + z
        return out / len(self.models)

    def loss(self, student_logits, targets, x: np.ndarray):
        """:func:`kd_loss` of the student's logits against this ensemble on batch ``x``."""
        cfg = self.config
        teacher = None if cfg.weight == 0 else self.logits(x)
        return kd_loss(student_logits, targets, teacher, cfg.temperature, cfg.weight)


def describe(config: DistillConfig) -> str:
    """One line for the training log."""
    names = ", ".join(f"{Path(t.path).name} ({t.preset or '?'})" for t in config.teachers)
    return f"distilling from {len(config.teachers)} teacher(s): {names}; T={config.temperature:g} W={config.weight:g}"
