"""How to export, verify and gate a checkpoint: :class:`ExportConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .convert import MODES
from .gate import (
    MAX_ACCURACY_DROP_POINTS,
    MAX_GRID_GAP,
    MIN_AGREEMENT,
    MIN_CONFIDENT_AGREEMENT,
    MIN_EVENT_SET_AGREEMENT,
)


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """How to export, verify and gate a checkpoint (``edge-asc export``'s options)."""

    mode: str = "int8"
    """'float' (float32 TFLite), 'dynamic-range' (int8 weights, float activations), 'int8' (full integer: int8
    input and output, per-channel int8 weights, int8 activations) or 'edgetpu' (int8 + Edge TPU op check/compile)."""
    calib_size: int = 300
    """windows drawn when the calibration set is built on the fly (no --calib)."""
    calib_seed: int = 0
    calib_strategy: str = "stratified"
    verify_split: str = "evaluate"
    verify_max_clips: int | None = None
    """verify on at most this many held-out clips (round-robin over classes); None: all of them."""
    hop_seconds: float | None = None
    """verification window hop in seconds (default: half a window, like ``edge-asc classify``)."""
    onnx2tf_timeout_s: float = 900.0
    keep_workdir: str | None = None
    """copy the intermediate files (ONNX, onnx2tf log and outputs) to this folder."""

    # -- the gate (:mod:`edge_asc.export.gate`): a failing clause fails the export, model and report kept --
    gate: bool = True
    """False: the gate's clauses are computed and reported, but a failing one does not fail the export."""
    max_accuracy_drop: float = MAX_ACCURACY_DROP_POINTS
    """most clip-level macro accuracy (float minus exported, percentage points, >= 0) the export may lose."""
    min_agreement: float = MIN_AGREEMENT
    """window top-1 agreement (float vs exported, in [0, 1]) asked for when the output grid allows it: the export
    needs ``min(min_agreement, output-grid ceiling - max_grid_gap)``; 0 switches the clause off."""
    max_grid_gap: float = MAX_GRID_GAP
    """how far (fraction of windows, in [0, 1]) top-1 agreement may stay below the output-grid ceiling."""
    min_confident_agreement: float = MIN_CONFIDENT_AGREEMENT
    """top-1 agreement, in [0, 1], on the windows whose float top-2 logit margin is >= ``CONFIDENT_MARGIN``."""
    min_event_set_agreement: float = MIN_EVENT_SET_AGREEMENT
    """agreement, in [0, 1], of the event block's top-k index sets (models with an event head)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"export mode must be one of {MODES}, got {self.mode!r}")
        for name in ("min_agreement", "max_grid_gap", "min_confident_agreement", "min_event_set_agreement"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v!r}")
        d = self.max_accuracy_drop
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= float(d) <= 100.0:
            raise ConfigError(f"max_accuracy_drop must be in [0, 100] percentage points, got {d!r}")
        if not isinstance(self.calib_size, int) or self.calib_size < 1:
            raise ConfigError(f"calib_size must be a positive integer, got {self.calib_size!r}")
        if self.verify_max_clips is not None and self.verify_max_clips < 1:
            raise ConfigError(f"verify_max_clips must be >= 1, got {self.verify_max_clips!r}")

    @property
    def quantised(self) -> bool:
        return self.mode != "float"

    @property
    def needs_calibration(self) -> bool:
        """Full-integer modes calibrate activation ranges on the representative dataset."""
        return self.mode in ("int8", "edgetpu")
