"""Checkpoint -> verified, gated ``.tflite``, as explicit stages orchestrated by :func:`export_checkpoint`:

1. :func:`load_run`: output path checked, checkpoint read, export extras present -> :class:`LoadedRun`;
2. :func:`resolve_calibration`: the representative windows (built from the dataset's train split or given) ->
   :class:`~edge_asc.calibration.CalibrationSet` (None for the float / dynamic-range modes);
3. :func:`export_onnx`: PyTorch -> ONNX (dynamo, opset 18) -> ``model.onnx``;
4. :func:`convert_onnx`: onnx2tf (SavedModel) -> the TFLite converter of the mode -> ``.tflite`` bytes;
5. :func:`edge_asc.export.schedule.reorder_for_memory`: operators reordered for a lower activation peak;
6. :func:`check_ops` (no custom / TF select ops) and :func:`embed_card`: the :class:`~edge_asc.spec.ModelCard`
   built from the converted tensors and embedded;
7. :func:`write_model` (atomic) and, for 'edgetpu', :func:`compile_edgetpu`;
8. :func:`verify`: float vs exported on held-out clips -> :class:`~edge_asc.export.verify.VerificationReport`;
9. :func:`edge_asc.export.gate.check_gate` -> :class:`~edge_asc.export.gate.GateReport`;
10. :func:`write_report`: ``<stem>.export.json`` (:class:`ExportReport`, atomic).

Heavy libraries (torch, onnx, onnx2tf, tensorflow) are imported inside functions; onnx2tf and the TFLite converter
run in child processes (see :mod:`edge_asc.export.convert`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_json
from ..errors import ConfigError, DatasetError, ExportError, ExportGateError, MissingExtraError
from .config import ExportConfig
from .convert import ONNX_OPSET

EXPORT_SCHEMA_VERSION = 2


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
    gate: dict[str, Any]
    """:class:`~edge_asc.export.gate.GateReport`: every clause with its number, threshold and verdict."""
    edgetpu: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    """the operator reordering (:mod:`edge_asc.export.schedule`): activation peak before / after, ops moved."""
    schema_version: int = EXPORT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What :func:`export_checkpoint` returns (and :class:`~edge_asc.errors.ExportGateError` carries)."""

    model_path: Path
    report_path: Path
    report: ExportReport
    verification: Any  # VerificationReport
    gate: Any  # GateReport
    card: Any  # ModelCard
    wall_s: float = field(default=0.0)


@dataclass(frozen=True, kw_only=True)
class LoadedRun:
    """:func:`load_run`'s output: a training run ready to export."""

    model: Any
    """the float :class:`edge_asc.model.segnet.MiniSegNet` with the checkpoint's weights (eval mode)."""
    meta: Any
    """its :class:`edge_asc.train.checkpoint.CheckpointMeta` (front end, labels, window, config, provenance)."""
    run_dir: Path


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
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
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


# ---- stages ---------------------------------------------------------------------------------------------------
def load_run(checkpoint: str | os.PathLike, out: Path, *, dataset: Any) -> LoadedRun:
    """Stage 1: check ``out`` can be written, read the checkpoint's metadata (cheap checks first), check the
    dataset and the export extras, then load the weights.

    Raises:
        ConfigError / ExportError: ``out`` is not a writable ``.tflite`` path.
        ModelContractError: missing / corrupt checkpoint.
        DatasetError: no dataset.
        MissingExtraError: torch / onnx / onnxscript / onnx2tf / tensorflow / ai-edge-litert missing.
    """
    from ..train.checkpoint import load_checkpoint, read_meta, resolve_run_dir

    _check_writable(out)
    read_meta(checkpoint)  # cheap checks before the heavy imports
    if dataset is None:
        raise DatasetError("export needs the dataset (--data DIR) to verify the exported model on held-out clips")
    _require_export_extras()
    model, meta = load_checkpoint(checkpoint)
    return LoadedRun(model=model, meta=meta, run_dir=resolve_run_dir(checkpoint))


def resolve_calibration(run: LoadedRun, config: ExportConfig, *, dataset: Any, calibration: Any = None,
                        log: Callable[[str], None] = lambda s: None) -> Any:
    """Stage 2: the representative windows of a full-integer export.

    Args:
        calibration: a :class:`~edge_asc.calibration.CalibrationSet`, a folder written by ``edge-asc calibrate``, or
            None to draw ``config.calib_size`` windows from ``dataset``'s train split.

    Returns:
        a :class:`~edge_asc.calibration.CalibrationSet` (float32[N, n_mels, W, C] dB windows), or None when
        ``config.mode`` does not calibrate.

    Raises:
        DatasetError: an empty or corrupt calibration set.
        ConfigError: a set computed with another front end or window length than the checkpoint's.
    """
    from ..calibration import CalibrationSet, build_calibration, load_calibration

    if not config.needs_calibration:
        return None
    meta = run.meta
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
    return cs


def export_onnx(run: LoadedRun, calibration: Any, work: Path) -> Path:
    """Stage 3: PyTorch -> ``work / "model.onnx"`` (dynamo exporter, opset 18), traced on the first calibration
    window (zeros without one).

    Raises:
        ExportError: the exporter failed.
    """
    from .convert import to_onnx

    f = run.meta.frontend
    example = (calibration.normalized_nchw()[:1] if calibration is not None
               else np.zeros((1, f.channels, f.n_mels, run.meta.window_frames), np.float32))
    return to_onnx(run.model, example, work / "model.onnx")


def convert_onnx(onnx_path: Path, run: LoadedRun, calibration: Any, config: ExportConfig, work: Path) -> bytes:
    """Stage 4: ONNX -> TFLite of ``config.mode`` (onnx2tf, then the TFLite converter calibrated on
    ``calibration`` with the checkpoint's normalisation); the intermediate files are copied to
    ``config.keep_workdir`` when set, whether or not the conversion succeeded.

    Returns:
        the converter's ``.tflite`` bytes (no card, converter's op order).

    Raises:
        ExportError: a converter failed, timed out, or wrote no file.
    """
    from ..calibration import save_calibration
    from .convert import run_onnx2tf

    f = run.meta.frontend
    calib_npy = None
    if calibration is not None:
        save_calibration(calibration, work / "calib")
        calib_npy = work / "calib" / "calib.npy"
    try:
        sample = (calibration.normalized_nchw()[:20] if calibration is not None
                  else np.zeros((1, f.channels, f.n_mels, run.meta.window_frames), np.float32)).transpose(0, 2, 3, 1)
        produced = run_onnx2tf(onnx_path, work, config.mode, calib_npy=calib_npy, mean=f.norm_mean,
                               std=f.norm_std, timeout_s=config.onnx2tf_timeout_s,
                               log_path=work / "onnx2tf.log", sample_nhwc=sample)
    finally:
        if config.keep_workdir:
            import shutil

            shutil.copytree(work, config.keep_workdir, dirs_exist_ok=True)
    return produced.read_bytes()


def check_ops(tflite: bytes) -> dict[str, Any]:
    """Stage 6a: the op summary (:func:`edge_asc.export.convert.op_summary`) of a converted model.

    Raises:
        ExportError: the model needs custom / TF select ops.
    """
    from .convert import op_summary, tflite_ops

    summary = op_summary(tflite_ops(tflite))
    if summary["custom_ops"]:
        raise ExportError(f"the converted model needs custom / TF select ops {summary['custom_ops']}, which LiteRT "
                          "builtins and TFLite Micro cannot run: change the model's layers")
    return summary


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


def embed_card(tflite: bytes, run: LoadedRun, calibration: Any, config: ExportConfig) -> tuple[bytes, Any]:
    """Stage 6b: build the model's :class:`~edge_asc.spec.ModelCard` (:func:`build_card`, with the export's
    provenance) and embed it.

    Returns:
        (the model bytes with the card, the card).

    Raises:
        ExportError: see :func:`build_card`; or a full-integer mode whose model does not have int8 input and output.
    """
    from ..tflite_meta import embed_model_card

    meta, cs = run.meta, calibration
    provenance = {
        "exporter": "torch.onnx (dynamo) -> onnx2tf (SavedModel) -> tf.lite.TFLiteConverter", "mode": config.mode,
        "onnx_opset": ONNX_OPSET, "versions": _versions(),
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "checkpoint_weights_sha256": meta.weights_sha256, "checkpoint_epoch": meta.epoch,
        "calibration_windows": len(cs) if cs is not None else 0,
        "calibration_strategy": cs.manifest.strategy if cs is not None else "",
        "calibration_seed": cs.manifest.seed if cs is not None else None,
    }
    card = build_card(tflite, meta, calibration_sha256=cs.manifest.sha256 if cs is not None else "",
                      provenance=provenance)
    if config.needs_calibration and (card.input_quant.dtype != "int8" or card.output_quant.dtype != "int8"):
        raise ExportError(f"onnx2tf's full-integer model has {card.input_quant.dtype} input / "
                          f"{card.output_quant.dtype} output, expected int8 / int8")
    return embed_model_card(tflite, card), card


def write_model(out: Path, data: bytes) -> str:
    """Stage 7a: write ``data`` to ``out`` atomically; returns its hex sha256."""
    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def compile_edgetpu(data: bytes, out: Path, log: Callable[[str], None] = lambda s: None) -> Any:
    """Stage 7b ('edgetpu' mode): the Edge TPU op check and, with ``edgetpu_compiler`` on PATH, its compilation
    (:func:`edge_asc.export.edgetpu.check_edgetpu`)."""
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
    return edgetpu


def verify(model_path: Path, run: LoadedRun, dataset: Any, config: ExportConfig) -> Any:
    """Stage 8: the float model vs the written model on ``config.verify_split``
    (:func:`edge_asc.export.verify.verify_export`) -> :class:`~edge_asc.export.verify.VerificationReport`."""
    from .verify import verify_export

    return verify_export(model_path, run.model, dataset, run.meta.labels, mode=config.mode,
                         split=config.verify_split, hop_seconds=config.hop_seconds,
                         max_clips=config.verify_max_clips)


def write_report(report: ExportReport, model_path: Path) -> Path:
    """Stage 10: write ``report`` atomically beside the model (:func:`report_path_for`); returns its path."""
    path = report_path_for(model_path)
    atomic_write_json(path, report.to_dict())
    return path


def _calibration_info(cs: Any) -> dict[str, Any]:
    if cs is None:
        return {}
    return {"path": str(cs.path) if cs.path else None, "windows": len(cs), "strategy": cs.manifest.strategy,
            "seed": cs.manifest.seed, "manifest_sha256": cs.manifest.sha256, "array_sha256": cs.manifest.array_sha256}


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t


# ---- orchestration ---------------------------------------------------------------------------------------------
def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, config: ExportConfig,
                      dataset: Any = None, calibration: Any = None,
                      log: Callable[[str], None] | None = None) -> ExportResult:
    """Export a training run to ``out`` (.tflite), verify it and apply the gate (the stages of this module).

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
        ExportError: a conversion step failed, the output directory is not writable, or the converted model is
            not what the mode promises.
        ExportGateError: a gate clause failed (``config.gate``); the model and its report are written and kept,
            and the error carries the :class:`ExportResult`.
    """
    from .gate import check_gate
    from .schedule import reorder_for_memory

    log = log or (lambda s: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    run = load_run(checkpoint, out, dataset=dataset)
    if config.needs_calibration:
        with _timed(timings, "calibration"):
            cs = resolve_calibration(run, config, dataset=dataset, calibration=calibration, log=log)
    else:
        cs = None
    with tempfile.TemporaryDirectory(prefix="edge-asc-export-") as tmp:
        with _timed(timings, "onnx"):
            onnx_path = export_onnx(run, cs, Path(tmp))
        log(f"onnx: {onnx_path.stat().st_size} bytes in {timings['onnx']:.1f} s")
        with _timed(timings, "onnx2tf"):
            raw = convert_onnx(onnx_path, run, cs, config, Path(tmp))
    log(f"onnx2tf: {len(raw)} bytes in {timings['onnx2tf']:.1f} s")
    raw, schedule = reorder_for_memory(raw)
    log(f"schedule: activation peak {schedule.original_peak_bytes:,} -> {schedule.peak_bytes:,} bytes "
        f"({schedule.moved} ops moved)")
    summary = check_ops(raw)
    data, card = embed_card(raw, run, cs, config)
    sha = write_model(out, data)
    log(f"model: {out} ({len(data)} bytes, {card.input_layout} input {list(card.input_shape)}, "
        f"{card.input_quant.dtype} in / {card.output_quant.dtype} out)")
    edgetpu = compile_edgetpu(data, out, log) if config.mode == "edgetpu" else None
    with _timed(timings, "verify"):
        ver = verify(out, run, dataset, config)
    gate = check_gate(ver, config)
    timings["total"] = time.perf_counter() - t_start
    report = ExportReport(model_path=str(out), mode=config.mode, size_bytes=len(data), sha256=sha,
                          checkpoint=str(run.run_dir), calibration=_calibration_info(cs), timings_s=timings,
                          ops=summary, card=card.to_dict(), verification=ver.to_dict(), gate=gate.to_dict(),
                          edgetpu=edgetpu.to_dict() if edgetpu is not None else None, schedule=schedule.to_dict())
    rpath = write_report(report, out)
    log(ver.summary())
    log(gate.summary())
    result = ExportResult(model_path=out, report_path=rpath, report=report, verification=ver, gate=gate, card=card,
                          wall_s=time.perf_counter() - t_start)
    if gate.enforced and not gate.passed:
        raise ExportGateError(f"export gate failed: {gate.failures()} (model kept at {out} for inspection, "
                              f"report {rpath})", result=result)
    return result


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
    import torch

    from ..model import build_model
    from .convert import run_onnx2tf, to_onnx
    from .schedule import reorder_for_memory

    _require_export_extras()
    work = Path(work)
    torch.manual_seed(seed)
    model = build_model(config).eval()
    x = np.random.default_rng(seed).standard_normal((windows, *config.input_shape[1:])).astype(np.float32)
    to_onnx(model, x[:1], work / "m.onnx")
    np.save(work / "calib.npy", x.transpose(0, 2, 3, 1))
    converted = run_onnx2tf(work / "m.onnx", work, "int8", calib_npy=work / "calib.npy")
    data, schedule = reorder_for_memory(converted.read_bytes())
    out = work / "model.tflite"
    out.write_bytes(data)
    return out, schedule
