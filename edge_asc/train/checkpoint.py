"""Checkpoints: weights as safetensors + a JSON sidecar (model config, FrontendSpec with normalisation, labels...).

A run directory holds::

    model.safetensors      model state_dict (weights + BN running statistics), float32
    optimizer.safetensors  SGD momentum buffers (for --resume)
    checkpoint.json        CheckpointMeta (+ sha256 of both tensor files); written last = the commit point
    history.jsonl          one line of metrics per epoch

Every file is written atomically (temp file + rename). Loading verifies the sha256 of the weights, so a torn or
corrupt checkpoint is a :class:`ModelContractError`, never a silently wrong model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes, atomic_write_text
from ..errors import ConfigError, ModelContractError
from ..model.config import MiniSegNetConfig
from ..spec import FrontendSpec

CHECKPOINT_SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "checkpoint.json"
HISTORY_FILE = "history.jsonl"


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What a checkpoint says about itself."""

    model_config: MiniSegNetConfig
    frontend: FrontendSpec
    """the front end incl. the training set's per-channel norm_mean / norm_std (dB)."""
    labels: tuple[str, ...]
    """class names in output order."""
    window_frames: int
    """model input width in front-end frames (== model_config.n_frames)."""
    epoch: int = 0
    """completed training epochs."""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """metrics of the last completed epoch (train_loss, train_acc, val_macro_acc, ...)."""
    run_id: str = ""
    preset: str = ""
    """the preset string of ``model_config`` (:func:`edge_asc.model.format_preset`: ``edge`` or
    ``edge:n_mels=32,width=0.5``, train's --norm/--head/... overrides included, ``n_classes`` only if the preset
    string set it; provenance only, ``model_config`` is the model), or '' for a custom config."""
    train_config: Mapping[str, Any] = field(default_factory=dict)
    """the TrainConfig the run used (for --resume and provenance)."""
    weights_sha256: str = ""
    optimizer_sha256: str = ""
    qat: Mapping[str, Any] | None = None
    """set when the weights were quantisation-aware fine-tuned (``edge-asc qat``, :mod:`edge_asc.train.qat`): base
    run, settings and float / simulated-int8 metrics before and after; None for a plain training run."""
    compute: Mapping[str, Any] | None = None
    """where the last epoch was trained: ``{"device": "cpu" | "cuda" | "mps", "precision": "fp32" | "bf16" | "fp16"}``
    (+ ``device_name`` on CUDA); informational, the tensors are device-neutral. None when not recorded."""
    schema_version: int = CHECKPOINT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) != self.model_config.n_classes:
            raise ConfigError(f"checkpoint has {len(self.labels)} labels but the model has "
                              f"{self.model_config.n_classes} outputs")
        if self.window_frames != self.model_config.n_frames:
            raise ConfigError(f"window_frames {self.window_frames} != model n_frames {self.model_config.n_frames}")
        if self.frontend.channels != self.model_config.in_channels or self.frontend.n_mels != self.model_config.n_mels:
            raise ConfigError(
                f"front end gives {self.frontend.channels}x{self.frontend.n_mels} features but the model expects "
                f"{self.model_config.in_channels}x{self.model_config.n_mels}")

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema_version": self.schema_version,
            "model_config": self.model_config.to_dict(),
            "frontend": self.frontend.to_dict(),
            "labels": list(self.labels),
            "window_frames": self.window_frames,
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
            "run_id": self.run_id,
            "preset": self.preset,
            "train_config": dict(self.train_config),
            "weights_sha256": self.weights_sha256,
            "optimizer_sha256": self.optimizer_sha256,
        }
        if self.qat is not None:  # plain runs keep the keys they always had
            d["qat"] = dict(self.qat)
        if self.compute is not None:
            d["compute"] = dict(self.compute)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointMeta:
        if not isinstance(d, Mapping):
            raise ConfigError("checkpoint metadata must be a JSON object")
        if d.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
            raise ConfigError(f"checkpoint schema {d.get('schema_version')!r} is not supported "
                              f"(expected {CHECKPOINT_SCHEMA_VERSION}): retrain with this edge-asc")
        kw = dict(d)
        try:
            kw["model_config"] = MiniSegNetConfig.from_dict(kw["model_config"])
            kw["frontend"] = FrontendSpec.from_dict(kw["frontend"])
            return cls(**kw)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"checkpoint metadata is incomplete or malformed: {exc}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_run_dir(path: str | os.PathLike) -> Path:
    """The run directory for a run dir, its checkpoint.json or its model.safetensors."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.name in (META_FILE, WEIGHTS_FILE, OPTIMIZER_FILE):
        return p.parent
    if not p.exists():
        raise ModelContractError(
            f"checkpoint {str(p)!r} does not exist: pass a run directory written by 'edge-asc train'"
        )
    raise ModelContractError(f"{str(p)!r} is not a checkpoint: pass the run directory or its {META_FILE}")


def _canonical(data: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted.

    safetensors writes the header from a hash map, so the same tensors and metadata give different bytes (and a
    different ``weights_sha256``) in different processes. Only the header is rewritten: tensor data and offsets do
    not depend on the header's key order. The header is padded with spaces to a multiple of 8 bytes, as safetensors
    does.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def save_checkpoint(run_dir: str | os.PathLike, model, meta: CheckpointMeta, optimizer=None) -> CheckpointMeta:
    """Write weights (+ optimizer momentum) and then the JSON sidecar, each atomically. Returns the meta as written.

    Tensors are written from CPU copies, whatever device the model and optimizer are on, so the files load on any
    machine (:func:`load_checkpoint` reads them to the CPU)."""
    import torch
    from safetensors.torch import save

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    wbytes = _canonical(save(state, metadata={"format": "pt", "edge_asc": "weights"}))
    atomic_write_bytes(run / WEIGHTS_FILE, wbytes)
    osha = ""
    if optimizer is not None:
        osd = optimizer.state_dict()
        tensors = {f"{i}.{name}": t.detach().to("cpu").contiguous().clone()
                   for i, st in osd["state"].items() for name, t in st.items() if isinstance(t, torch.Tensor)}
        obytes = _canonical(save(tensors, metadata={"format": "pt", "edge_asc": "optimizer",
                                                    "param_groups": json.dumps(osd["param_groups"])}))
        atomic_write_bytes(run / OPTIMIZER_FILE, obytes)
        osha = _sha256(obytes)
    meta = dataclasses.replace(meta, weights_sha256=_sha256(wbytes), optimizer_sha256=osha)
    atomic_write_text(run / META_FILE, json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
    return meta


def read_meta(path: str | os.PathLike) -> CheckpointMeta:
    """Read and validate ``checkpoint.json`` of a run (no torch needed).

    Raises:
        ModelContractError: missing, unreadable, not JSON, or invalid metadata.
    """
    run = resolve_run_dir(path)
    mp = run / META_FILE
    try:
        text = mp.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelContractError(f"no {META_FILE} in {str(run)!r}: not a training run directory "
                                 "(or training never completed an epoch)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelContractError(f"cannot read {str(mp)!r}: {exc}") from None
    try:
        return CheckpointMeta.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ModelContractError(f"{str(mp)!r} is corrupt (not JSON: {exc}): re-run training") from None
    except ConfigError as exc:
        raise ModelContractError(f"{str(mp)!r} is invalid: {exc}") from None


def _read_tensors(path: Path, expected_sha: str, what: str):
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelContractError(f"{what} file {str(path)!r} is missing: the checkpoint is incomplete") from None
    if expected_sha and _sha256(data) != expected_sha:
        raise ModelContractError(f"{what} file {str(path)!r} does not match its sha256 in {META_FILE}: "
                                 "the checkpoint is corrupt or was interrupted while writing; re-run training")
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelContractError(f"{what} file {str(path)!r} is corrupt: {exc}") from None


def load_checkpoint(path: str | os.PathLike):
    """Load a trained model.

    Args:
        path: a run directory, or its ``checkpoint.json`` / ``model.safetensors``.

    Returns:
        (model, meta): the :class:`~edge_asc.model.segnet.MiniSegNet` in eval mode on CPU (input: normalised features
        float32[N, C, n_mels, window_frames], normalise with ``edge_asc.frontend.normalize(x, meta.frontend)``),
        and its :class:`CheckpointMeta`.

    Raises:
        ModelContractError: missing or corrupt files, or weights that do not fit the model config.
        MissingExtraError: torch / safetensors not installed.
    """
    from ..errors import require

    require("torch", "train", "loading checkpoints")
    require("safetensors", "train", "loading checkpoints")
    from ..model import build_model

    meta = read_meta(path)
    run = resolve_run_dir(path)
    state = _read_tensors(run / WEIGHTS_FILE, meta.weights_sha256, "weights")
    model = build_model(meta.model_config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelContractError(f"weights in {str(run)!r} do not fit the model config: {first}") from None
    model.eval()
    return model, meta


def load_optimizer_state(run_dir: str | os.PathLike, meta: CheckpointMeta) -> dict[str, Any] | None:
    """The SGD ``state_dict`` saved with the checkpoint, or None if the run saved none."""
    run = resolve_run_dir(run_dir)
    if not meta.optimizer_sha256:
        return None
    tensors = _read_tensors(run / OPTIMIZER_FILE, meta.optimizer_sha256, "optimizer state")
    from safetensors import safe_open

    with safe_open(str(run / OPTIMIZER_FILE), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = t
    return {"state": state, "param_groups": groups}
