"""Checkpoint -> TFLite: PyTorch -> ONNX (dynamo, opset 18) -> onnx2tf -> float / dynamic-range / full-int8 TFLite
-> operators reordered for a lower activation peak (:mod:`edge_asc.export.schedule`), with the ModelCard embedded,
verified against the float model and gated (:mod:`edge_asc.export.gate`), with a report written beside the model.

The stages and their orchestration are in :mod:`edge_asc.export.pipeline`; this package re-exports the public names.

Outputs (``OUT`` = ``model.tflite``):

``model.tflite``
    the model with its :class:`~edge_asc.spec.ModelCard` (written atomically, only after the converter's file was
    checked and the card embedded; kept when the gate fails);
``model.export.json``
    :class:`ExportReport`: export settings, timings, file size, op summary, the card, the
    :class:`~edge_asc.export.verify.VerificationReport` (float vs exported on held-out clips) and the
    :class:`~edge_asc.export.gate.GateReport` (written atomically, also when the gate fails).
"""

from __future__ import annotations

from .config import ExportConfig
from .convert import MODES
from .gate import GateClause, GateReport, check_gate
from .pipeline import (
    EXPORT_SCHEMA_VERSION,
    ExportReport,
    ExportResult,
    LoadedRun,
    build_card,
    export_checkpoint,
    export_untrained_int8,
    report_path_for,
)

__all__ = [
    "EXPORT_SCHEMA_VERSION",
    "MODES",
    "ExportConfig",
    "ExportReport",
    "ExportResult",
    "GateClause",
    "GateReport",
    "LoadedRun",
    "build_card",
    "check_gate",
    "export_checkpoint",
    "export_untrained_int8",
    "report_path_for",
]
