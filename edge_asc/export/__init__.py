"""Checkpoint -> TFLite: PyTorch -> ONNX (dynamo, opset 18) -> onnx2tf -> float / dynamic-range / full-int8 TFLite
-> operators reordered for a lower activation peak (:mod:`edge_asc.export.schedule`), with the ModelCard embedded
and a verification report written beside the model.

Heavy libraries (torch, onnx, onnx2tf, tensorflow) are imported inside functions; onnx2tf and the TFLite converter
run in child processes (see :mod:`edge_asc.export.convert`).

Outputs (``OUT`` = ``model.tflite``):

``model.tflite``
    the model with its :class:`~edge_asc.spec.ModelCard` (written atomically, only after the converter's file was
    checked and the card embedded);
``model.export.json``
    :class:`ExportReport`: export settings, timings, file size, op summary, the card, and the
    :class:`~edge_asc.export.verify.VerificationReport` (float vs exported on held-out clips).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_json
from ..errors import ConfigError, DatasetError, ExportError, MissingExtraError

MODES = ("float", "dynamic-range", "int8", "edgetpu")
EXPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """How to export and verify a checkpoint."""

    mode: str = "int8"
    """'float' (float32 TFLite), 'dynamic-range' (int8 weights, float activations), 'int8' (full integer: int8
    input and output, per-channel int8 weights, int8 activations) or 'edgetpu' (int8 + Edge TPU op check/compile)."""
    min_agreement: float = 0.97
    """minimum window-level top-1 agreement float vs exported, in [0, 1]; below it the export fails."""
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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"export mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= float(self.min_agreement) <= 1.0:
            raise ConfigError(f"min_agreement must be in [0, 1], got {self.min_agreement!r}")
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


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What ``model.export.json`` holds."""

    model_path: str
    mode: str
    size_bytes: int
    sha256: str
    checkpoint: str
    calibration: dict[str, Any]
    timings_s: dict[str, float]
    ops: dict[str, Any]
    card: dict[str, Any]
    verification: dict[str, Any]
    edgetpu: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    """the operator reordering (:mod:`edge_asc.export.schedule`): activation peak before / after, ops moved."""
    schema_version: int = EXPORT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    model_path: Path
    report_path: Path
    report: ExportReport
    verification: Any  # VerificationReport
    card: Any  # ModelCard
    wall_s: float = field(default=0.0)


def report_path_for(model_path: str | os.PathLike) -> Path:
    """``model.tflite`` -> ``model.export.json`` (beside the model)."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}.export.json")


def _require_export_extras() -> None:
    from ..errors import require

    require("torch", "export", "exporting checkpoints")
    require("onnx", "export", "ONNX export")
    require("onnxscript", "export", "the torch dynamo ONNX exporter")
    if importlib.util.find_spec("onnx2tf") is None:  # not imported here: it changes global state at import
        raise MissingExtraError("onnx2tf", "export", "ONNX -> TFLite conversion")
    if importlib.util.find_spec("tensorflow") is None:
        raise MissingExtraError("tensorflow", "export", "ONNX -> TFLite conversion")
    require("ai_edge_litert", "export", "verifying the exported model")


def _versions() -> dict[str, str]:
    from .. import __version__

    out = {"edge_asc": __version__}
    for dist in ("torch", "onnx", "onnxscript", "onnx2tf", "tensorflow-cpu", "tensorflow", "ai-edge-litert"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.suffix != ".tflite":
        raise ConfigError(f"output {str(out)!r} must end in .tflite")
    if out.is_dir():
        raise ConfigError(f"output {str(out)!r} is a directory: give a file name ending in .tflite")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the output directory {str(parent)!r} ({exc.strerror}): choose another "
                          "--out") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"output directory {str(parent)!r} is not writable: choose another --out")


def _quant_of(detail: dict) -> Any:
    from ..spec import QuantParams

    dtype = np.dtype(detail["dtype"]).name
    scale, zp = detail.get("quantization", (0.0, 0))
    if dtype == "float32" or not scale:
        return QuantParams(dtype=dtype)
    return QuantParams(dtype=dtype, scale=float(scale), zero_point=int(zp))


def build_card(tflite: bytes, meta: Any, *, calibration_sha256: str, provenance: dict[str, Any]) -> Any:
    """The :class:`ModelCard` of a converted model: input layout and quantisation read from its own tensors.

    Raises:
        ExportError: the converted model's input shape is neither the NHWC nor the NCHW form of the checkpoint's
            window, or it has not exactly one input and one output of the right size.
    """
    from ..model import count_macs, count_params
    from ..runtime import load_interpreter
    from ..spec import ModelCard

    interp = load_interpreter(tflite)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(f"converted model has {len(ins)} inputs / {len(outs)} outputs, expected 1 / 1")
    shape = tuple(int(v) for v in ins[0]["shape"])
    f, w = meta.frontend, meta.window_frames
    nhwc, nchw = (1, f.n_mels, w, f.channels), (1, f.channels, f.n_mels, w)
    if shape == nhwc:
        layout = "NHWC"
    elif shape == nchw:
        layout = "NCHW"
    else:
        raise ExportError(f"converted model input shape {shape} is neither NHWC {nhwc} nor NCHW {nchw}")
    oshape = tuple(int(v) for v in outs[0]["shape"])
    if int(np.prod(oshape)) != len(meta.labels):
        raise ExportError(f"converted model output shape {oshape} does not give {len(meta.labels)} scores")
    cfg = meta.model_config
    return ModelCard(
        labels=meta.labels, frontend=meta.frontend, window_frames=w, input_layout=layout,
        input_quant=_quant_of(ins[0]), output_quant=_quant_of(outs[0]), output_kind="logits",
        model_preset=meta.preset, model_config=cfg.to_dict(), param_count=count_params(cfg),
        macs_per_inference=count_macs(cfg), training_run=meta.run_id, calibration_sha256=calibration_sha256,
        provenance=provenance,
    )


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, config: ExportConfig,
                      dataset: Any = None, calibration: Any = None,
                      log: Callable[[str], None] | None = None) -> ExportResult:
    """Export a training run to ``out`` (.tflite) and verify it.

    Args:
        checkpoint: run directory written by ``edge-asc train`` (or its checkpoint.json).
        out: the ``.tflite`` to write; ``<stem>.export.json`` is written beside it.
        config: :class:`ExportConfig`.
        dataset: the :mod:`edge_asc.data` Dataset for verification (its ``config.verify_split``) and, without
            ``calibration``, for building the calibration set from its 'train' split.
        calibration: a :class:`~edge_asc.calibration.CalibrationSet` or a folder written by ``edge-asc calibrate``.

    Raises:
        ModelContractError: missing / corrupt checkpoint.
        MissingExtraError: torch / onnx / onnxscript / onnx2tf / tensorflow / ai-edge-litert missing.
        DatasetError: no dataset, or a calibration set that is empty / corrupt.
        ConfigError: calibration set computed with another front end or window length; bad output name.
        ExportError: a conversion step failed, the output directory is not writable, the converted model is not
            what the mode promises, or verification agreement is below ``config.min_agreement`` (the model and
            its report are kept for inspection in that case).
    """
    from ..calibration import CalibrationSet, build_calibration, load_calibration, save_calibration
    from ..tflite_meta import embed_model_card
    from ..train.checkpoint import load_checkpoint, read_meta, resolve_run_dir
    from .convert import op_summary, run_onnx2tf, tflite_ops, to_onnx
    from .schedule import reorder_for_memory
    from .verify import verify_export

    log = log or (lambda s: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    _check_writable(out)
    meta = read_meta(checkpoint)  # cheap checks before the heavy imports
    if dataset is None:
        raise DatasetError("export needs the dataset (--data DIR) to verify the exported model on held-out clips")
    _require_export_extras()
    model, meta = load_checkpoint(checkpoint)
    run_dir = resolve_run_dir(checkpoint)

    cs = None
    if config.needs_calibration:
        t = time.perf_counter()
        if calibration is None:
            cs = build_calibration(dataset, meta.frontend, meta.window_frames, size=config.calib_size,
                                   seed=config.calib_seed, strategy=config.calib_strategy, labels=meta.labels)
            log(f"calibration: built {len(cs)} windows ({config.calib_strategy}, seed {config.calib_seed})")
        elif isinstance(calibration, CalibrationSet):
            cs = calibration
        else:
            cs = load_calibration(calibration, spec=meta.frontend, window_frames=meta.window_frames)
            log(f"calibration: {len(cs)} windows from {cs.path}")
        if cs.manifest.frontend.feature_hash() != meta.frontend.feature_hash() or \
                cs.manifest.window_frames != meta.window_frames:
            raise ConfigError("the calibration set was computed with another front end or window length than the "
                              "checkpoint's: rebuild it with 'edge-asc calibrate CHECKPOINT'")
        timings["calibration"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="edge-asc-export-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        f = meta.frontend
        example = (cs.normalized_nchw()[:1] if cs is not None
                   else np.zeros((1, f.channels, f.n_mels, meta.window_frames), np.float32))
        onnx_path = to_onnx(model, example, work / "model.onnx")
        timings["onnx"] = time.perf_counter() - t
        log(f"onnx: {onnx_path.stat().st_size} bytes in {timings['onnx']:.1f} s")
        calib_npy = None
        if cs is not None:
            save_calibration(cs, work / "calib")
            calib_npy = work / "calib" / "calib.npy"
        t = time.perf_counter()
        try:
            sample = (cs.normalized_nchw()[:20] if cs is not None else example).transpose(0, 2, 3, 1)
            produced = run_onnx2tf(onnx_path, work, config.mode, calib_npy=calib_npy, mean=f.norm_mean,
                                   std=f.norm_std, timeout_s=config.onnx2tf_timeout_s,
                                   log_path=work / "onnx2tf.log", sample_nhwc=sample)
        finally:
            if config.keep_workdir:
                import shutil

                shutil.copytree(work, config.keep_workdir, dirs_exist_ok=True)
        timings["onnx2tf"] = time.perf_counter() - t
        raw = produced.read_bytes()
    log(f"onnx2tf: {len(raw)} bytes in {timings['onnx2tf']:.1f} s")
    raw, schedule = reorder_for_memory(raw)
    log(f"schedule: activation peak {schedule.original_peak_bytes:,} -> {schedule.peak_bytes:,} bytes "
        f"({schedule.moved} ops moved)")

    ops = tflite_ops(raw)
    summary = op_summary(ops)
    if summary["custom_ops"]:
        raise ExportError(f"the converted model needs custom / TF select ops {summary['custom_ops']}, which LiteRT "
                          "builtins and TFLite Micro cannot run: change the model's layers")
    provenance = {
        "exporter": "torch.onnx (dynamo) -> onnx2tf (SavedModel) -> tf.lite.TFLiteConverter", "mode": config.mode,
        "onnx_opset": 18, "versions": _versions(),
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "checkpoint_weights_sha256": meta.weights_sha256, "checkpoint_epoch": meta.epoch,
        "calibration_windows": len(cs) if cs is not None else 0,
        "calibration_strategy": cs.manifest.strategy if cs is not None else "",
        "calibration_seed": cs.manifest.seed if cs is not None else None,
    }
    card = build_card(raw, meta, calibration_sha256=cs.manifest.sha256 if cs is not None else "",
                      provenance=provenance)
    if config.mode in ("int8", "edgetpu") and (card.input_quant.dtype != "int8" or card.output_quant.dtype != "int8"):
        raise ExportError(f"onnx2tf's full-integer model has {card.input_quant.dtype} input / "
                          f"{card.output_quant.dtype} output, expected int8 / int8")
    data = embed_model_card(raw, card)
    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    log(f"model: {out} ({len(data)} bytes, {card.input_layout} input {list(card.input_shape)}, "
        f"{card.input_quant.dtype} in / {card.output_quant.dtype} out)")

    edgetpu = None
    if config.mode == "edgetpu":
        from .edgetpu import check_edgetpu

        edgetpu = check_edgetpu(data, out)
        if edgetpu.unsupported:
            log(f"edgetpu: ops the compiler will not map: {edgetpu.unsupported} (first at op "
                f"{edgetpu.first_unmapped} of {edgetpu.n_ops}; everything after it runs on the CPU)")
        if edgetpu.compiled:
            log(f"edgetpu: compiled -> {edgetpu.compiled}")
        else:
            log(f"edgetpu: edgetpu_compiler not on PATH; on a machine with it run: {edgetpu.command}"
                if edgetpu.compiler is None else f"edgetpu: compiler failed:\n{edgetpu.compiler_log[-800:]}")

    t = time.perf_counter()
    ver = verify_export(out, model, dataset, meta.labels, mode=config.mode, split=config.verify_split,
                        hop_seconds=config.hop_seconds, max_clips=config.verify_max_clips,
                        min_agreement=config.min_agreement)
    timings["verify"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    calib_info: dict[str, Any] = {}
    if cs is not None:
        calib_info = {"path": str(cs.path) if cs.path else None, "windows": len(cs), "strategy": cs.manifest.strategy,
                      "seed": cs.manifest.seed, "manifest_sha256": cs.manifest.sha256,
                      "array_sha256": cs.manifest.array_sha256}
    report = ExportReport(model_path=str(out), mode=config.mode, size_bytes=len(data), sha256=sha,
                          checkpoint=str(run_dir), calibration=calib_info, timings_s=timings, ops=summary,
                          card=card.to_dict(), verification=ver.to_dict(),
                          edgetpu=edgetpu.to_dict() if edgetpu is not None else None, schedule=schedule.to_dict())
    rpath = report_path_for(out)
    atomic_write_json(rpath, report.to_dict())
    log(ver.summary())
    if not ver.passed:
        raise ExportError(f"verification failed: top-1 agreement {ver.window_top1_agreement:.4f} < "
                          f"{config.min_agreement} (model kept at {out} for inspection, report {rpath})")
    return ExportResult(model_path=out, report_path=rpath, report=report, verification=ver, card=card,
                        wall_s=time.perf_counter() - t_start)


__all__ = ["MODES", "ExportConfig", "ExportReport", "ExportResult", "build_card", "export_checkpoint",
           "report_path_for"]


def export_untrained_int8(config: Any, work: str | os.PathLike, *, seed: int = 0,
                         windows: int = 64) -> tuple[Path, Any]:
    """Full-int8 ``.tflite`` of a model config with seeded random weights, calibrated on seeded Gaussian windows
    and reordered for memory as :func:`export_checkpoint` writes it (no card, no verification).

    What a file's arena, op list and op mapping are depends on the graph, not on the weights: this measures a
    config (``edge-asc fit`` candidates, ``benchmarks/int8_graph.py``) without training it.

    Args:
        config: a :class:`edge_asc.model.MiniSegNetConfig`.
        work: a folder for the intermediate files; the model is ``work / "model.tflite"``.

    Returns:
        (the model's path, its :class:`edge_asc.export.schedule.Schedule`: activation peak in the converter's op
        order and in the written one).
    """
    import numpy as np
    import torch

    from ..model import build_model
    from .convert import run_onnx2tf, to_onnx
    from .schedule import reorder_for_memory

    _require_export_extras()
    work = Path(work)
    torch.manual_seed(seed)
    model = build_model(config).eval()
    x = np.random.default_rng(seed).standard_normal((windows,) + tuple(config.input_shape[1:])).astype(np.float32)
    to_onnx(model, x[:1], work / "m.onnx")
    np.save(work / "calib.npy", x.transpose(0, 2, 3, 1))
    converted = run_onnx2tf(work / "m.onnx", work, "int8", calib_npy=work / "calib.npy")
    data, schedule = reorder_for_memory(converted.read_bytes())
    out = work / "model.tflite"
    out.write_bytes(data)
    return out, schedule
