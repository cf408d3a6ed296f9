"""End to end: train a tiny model on the tiny synthetic dataset, calibrate, export full int8 (torch -> ONNX -> onnx2tf),
read the ModelCard back without TensorFlow, run the model in LiteRT through the runtime, and check the verification
report. One conversion (~20-60 s on 2 cores); marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_calibrate_export_int8_verify(tiny_dataset, tmp_path):
    require("onnx2tf")
    from edge_asc.cli import main

    run, cal, model = tmp_path / "run", tmp_path / "calib", tmp_path / "out" / "edge.tflite"
    assert main(["train", "--data", str(tiny_dataset), "--preset", "edge", "--epochs", "2", "--out", str(run),
                 "--val-every", "0", "--no-progress", "--threads", "2"]) == 0
    assert main(["calibrate", str(run), "--data", str(tiny_dataset), "--out", str(cal), "--size", "60"]) == 0
    assert main(["export", str(run), "--int8", "--calib", str(cal), "--out", str(model), "--no-gate"]) == 0

    # the card, read in a fresh interpreter that must not import TensorFlow (or torch/onnx)
    code = ("import sys, json; from edge_asc.tflite_meta import read_model_card; c = read_model_card(sys.argv[1]); "
            "heavy = [m for m in ('tensorflow', 'torch', 'onnx', 'onnx2tf') if m in sys.modules]; "
            "assert not heavy, heavy; print(c.to_json())")
    r = subprocess.run([sys.executable, "-c", code, str(model)], check=False, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    meta = json.loads((run / "checkpoint.json").read_text())
    manifest = (cal / "manifest.json").read_bytes()
    import hashlib

    assert card["labels"] == meta["labels"] and card["frontend"] == meta["frontend"]
    assert card["window_frames"] == 61 and card["input_layout"] == "NHWC" and card["input_shape"] == [1, 64, 61, 1]
    assert card["input_quant"]["dtype"] == "int8" and card["output_quant"]["dtype"] == "int8"
    assert card["model_preset"] == "edge" and card["training_run"] == meta["run_id"]
    assert card["calibration_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert card["provenance"]["versions"]["onnx2tf"].startswith("1.29")

    # LiteRT runs it through the runtime's contract checks
    from edge_asc.audio import load_audio
    from edge_asc.data import load_dataset
    from edge_asc.runtime import Classifier, classify_audio

    clf = Classifier(model)
    ds = load_dataset(tiny_dataset)
    clip = ds.split("evaluate")[0]
    audio, _ = load_audio(clip.path, 16_000)
    res = classify_audio(clf, audio)
    assert res.label in clf.labels and np.isclose(res.clip_probs.sum(), 1.0, atol=1e-4)
    # silence and a -80 dBFS hiss (a muted microphone): the int8 instance norm must not divide by its zero point
    hiss = 1e-4 * np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    for quiet in (np.zeros(16_000, np.float32), hiss):
        assert classify_audio(clf, quiet).label in clf.labels

    # the verification report beside the model
    rep = json.loads((model.parent / "edge.export.json").read_text())
    v = rep["verification"]
    assert v["n_clips"] == len(ds.split("evaluate")) and v["n_windows"] >= v["n_clips"]
    assert 0.0 <= v["window_top1_agreement"] <= 1.0
    # a 2-epoch model is no release candidate: --no-gate reports the clauses without failing the export
    assert rep["gate"]["enforced"] is False and [c["name"] for c in rep["gate"]["clauses"]] == [
        "accuracy_drop", "agreement", "confident_agreement", "event_set_agreement"]
    assert v["stream_offline_max_prob_diff"] < 1e-5  # classify_audio == offline windows through the same Classifier
    assert v["events_topk_set_agreement"] is not None  # the edge preset has the event head; its tensor was found
    assert rep["size_bytes"] == model.stat().st_size and rep["ops"]["custom_ops"] == []
    from edge_asc.export.convert import tflite_ops

    # int8-native: every activation tensor is int8, and none of the ops that kept bool/float tensors or that
    # TFLite Micro, Vela or the Edge TPU compiler cannot map is left
    assert rep["ops"]["non_int8_activations"] == [] and list(rep["ops"]["activation_dtypes"]) == ["int8"]
    unmapped = {"CAST", "QUANTIZE", "DEQUANTIZE", "DIV", "ABS", "EQUAL", "LESS", "MINIMUM", "MAXIMUM"}
    assert not unmapped & set(rep["ops"]["ops"])
    # int8 AVERAGE_POOL_2D shares one scale between input and output: over the decoder's activation it made the
    # converter clip that activation to the pooled features' range (10x on a demo model); the banded GAP averages
    # rows of the time MEAN's output ([1, H, 1, C]) instead
    assert rep["ops"]["ops"]["MEAN"] >= 1
    # ops reordered for memory: at the second unpooling three full-resolution int8 tensors (16 x 64 x 61) and the
    # low-resolution values being upsampled (16 x 32 x 20) are live, not four full-resolution ones
    assert rep["schedule"]["peak_bytes"] == 3 * 16 * 64 * 61 + 16 * 32 * 20 < rep["schedule"]["original_peak_bytes"]
    assert all(op.input_shapes[0][2] == 1 for op in tflite_ops(model.read_bytes()) if op.name == "AVERAGE_POOL_2D")
    assert rep["calibration"]["windows"] == 60 and rep["mode"] == "int8"
    assert 0.0 <= v["output_grid_agreement"] <= 1.0 and 0.0 <= v["confident_fraction"] <= 1.0
    assert 0.0 <= v["events_count_grid_set_agreement"] <= 1.0  # the count tensor was found in the int8 graph
    # the input-grid floor: the float model on the same windows, rounded to the int8 input's grid
    assert 0.0 <= v["input_grid_agreement"] <= 1.0 and 0.0 <= v["events_input_grid_set_agreement"] <= 1.0
    from edge_asc.export.verify import held_out_clips, held_out_windows

    held_out = held_out_windows(clf.card.frontend, clf.card.window_frames, ds, held_out_clips(ds, clf.labels))
    assert len(held_out) == v["n_windows"]
    # the edge preset's ReLU6 is fused into the int8 convolutions: the four BN blocks' outputs are calibrated within
    # [0, 6], and those whose calibration reached the bound end exactly at 6 (an unfused bound would leave each
    # convolution's output quantised over its whole, outlier-set range, negative part included)
    from ai_edge_litert.interpreter import Interpreter

    buf = model.read_bytes()
    it = Interpreter(model_content=buf)
    qp = {t["index"]: t["quantization"] for t in it.get_tensor_details()}
    # the reader sees the exported file as LiteRT does: every tensor's name, shape, dtype and quantisation
    from edge_asc.artifact import read_artifact

    art = read_artifact(buf)
    assert len(art.tensors) == len(qp) and len(art.ops) == len(tflite_ops(buf))
    for d in it.get_tensor_details():
        t = art.tensors[d["index"]]
        assert (t.name, t.shape, t.dtype) == (d["name"], tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]).name)
        scales = np.array(t.quantization.scales if t.quantization else (), np.float32)
        np.testing.assert_array_equal(scales, d["quantization_parameters"]["scales"])
        assert (t.quantization.per_tensor if t.quantization else None) in (None, pytest.approx(d["quantization"]))
    ranges = [((-128 - qp[o][1]) * qp[o][0], (127 - qp[o][1]) * qp[o][0])
              for o in (op.outputs[0] for op in tflite_ops(buf) if op.name == "CONV_2D")]
    bounded = [hi for lo, hi in ranges if lo == 0.0 and hi <= 6.0 + 1e-5]
    assert len(bounded) >= 4 and any(abs(hi - 6.0) < 1e-5 for hi in bounded), ranges

    # the gate: a float model that no longer matches the export fails (it is sure of windows the export decides
    # otherwise; its saturating logits also take the output-grid ceiling, and with it the agreement bar, down)
    import torch

    from edge_asc.export import ExportConfig, check_gate
    from edge_asc.export.verify import verify_export
    from edge_asc.train.checkpoint import load_checkpoint

    net, m = load_checkpoint(run)
    with torch.no_grad():
        net.out.weight.copy_(torch.randn_like(net.out.weight) * 10)
        net.out.bias.copy_(torch.arange(net.out.bias.numel(), dtype=torch.float32) * 5)
    bad = verify_export(model, net, ds, m.labels, mode="int8", max_clips=20)
    gate = check_gate(bad, ExportConfig())
    assert not gate.passed and "confident_agreement" in gate.failed and bad.window_top1_agreement < 0.97
    assert bad.n_clips == 20
