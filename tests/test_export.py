"""Export: configuration, bad inputs (one-line typed errors, nothing half-written), the converter output checks, the
op reader, the Edge TPU op check, verification metrics, and `edge-asc info` (reads the card without TensorFlow).

The full torch -> ONNX -> onnx2tf -> int8 path runs in tests/test_export_e2e.py (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from edge_asc.errors import ConfigError, DatasetError, ExportError, MissingExtraError, ModelContractError
from edge_asc.export import ExportConfig, export_checkpoint, report_path_for
from edge_asc.export.verify import _spread, event_ranking, macro_accuracy, output_grid_top1

REPO = Path(__file__).resolve().parents[1]


def _meta_run(run: Path, *, spec=None) -> Path:
    from edge_asc.model import model_preset
    from edge_asc.spec import PRESETS, TAU_LABELS
    from edge_asc.train.checkpoint import CheckpointMeta

    cfg = model_preset("edge")
    meta = CheckpointMeta(model_config=cfg, frontend=spec or PRESETS["edge"], labels=TAU_LABELS,
                          window_frames=cfg.n_frames, run_id="r1", preset="edge")
    run.mkdir(parents=True, exist_ok=True)
    (run / "checkpoint.json").write_text(json.dumps(meta.to_dict()))
    return run


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """A small int8 model with a card (built with TensorFlow by the runtime tests' helper)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from runtime_models import build_model

    data, card = build_model()
    p = tmp_path_factory.mktemp("carded") / "m.tflite"
    p.write_bytes(data)
    return p, card


def test_export_config_validation():
    assert ExportConfig().mode == "int8" and ExportConfig().min_agreement == 0.97
    with pytest.raises(ConfigError, match="mode"):
        ExportConfig(mode="int4")
    with pytest.raises(ConfigError, match="min_agreement"):
        ExportConfig(min_agreement=1.5)
    with pytest.raises(ConfigError, match="calib_size"):
        ExportConfig(calib_size=0)
    assert not ExportConfig(mode="float").quantised and ExportConfig(mode="edgetpu").quantised
    assert report_path_for("out/model.tflite") == Path("out/model.export.json")


def test_bad_inputs_are_typed_one_line_errors(tmp_path, monkeypatch):
    cfg = ExportConfig()
    with pytest.raises(ModelContractError, match="does not exist"):
        export_checkpoint(tmp_path / "missing", tmp_path / "m.tflite", config=cfg, dataset=object())
    run = _meta_run(tmp_path / "run")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="cannot create the output directory"):
        export_checkpoint(run, tmp_path / "afile" / "m.tflite", config=cfg, dataset=object())
    with pytest.raises(ConfigError, match=r"\.tflite"):
        export_checkpoint(run, tmp_path / "m.onnx", config=cfg, dataset=object())
    with pytest.raises(DatasetError, match="--data"):
        export_checkpoint(run, tmp_path / "m.tflite", config=cfg, dataset=None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2tf" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'edge-asc\[export\]'"):
        export_checkpoint(run, tmp_path / "m.tflite", config=cfg, dataset=object())
    assert not list(tmp_path.glob("*.tflite"))  # nothing written by any failure


def test_checkpoint_without_weights_and_cli_exit_codes(tmp_path, tiny_dataset, capsys):
    from edge_asc.cli import main

    run = _meta_run(tmp_path / "run")
    out = tmp_path / "m.tflite"
    assert main(["export", str(run), "--int8", "--data", str(tiny_dataset), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-asc: error:") and "model.safetensors" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["export", str(run), "--out", str(out), "--min-agreement", "2"]) == 2
    assert main(["export", str(run), "--out", str(out)]) == 1  # no --data, no --calib
    assert "--data" in capsys.readouterr().err


def test_calibration_of_another_front_end_is_refused(tmp_path, tiny_dataset):
    require("torch")
    from edge_asc.calibration import build_calibration
    from edge_asc.data import load_dataset
    from edge_asc.model import build_model, model_preset
    from edge_asc.spec import PRESETS, TAU_LABELS
    from edge_asc.train.checkpoint import CheckpointMeta, save_checkpoint

    cfg = model_preset("edge")
    meta = CheckpointMeta(model_config=cfg, frontend=PRESETS["edge"], labels=TAU_LABELS, window_frames=cfg.n_frames)
    save_checkpoint(tmp_path / "run", build_model(cfg), meta)
    ds = load_dataset(tiny_dataset)
    other = build_calibration(ds, PRESETS["edge"].replace(fmax=4000.0), cfg.n_frames, size=3)
    with pytest.raises(ConfigError, match="another front end"):
        export_checkpoint(tmp_path / "run", tmp_path / "m.tflite", config=ExportConfig(), dataset=ds,
                          calibration=other)
    assert not (tmp_path / "m.tflite").exists()


def test_converters_exit_0_without_output_is_an_error(tmp_path, monkeypatch):
    from edge_asc.export import convert

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="calibration data"):
        convert.run_onnx2tf(onnx, tmp_path, "int8")
    calls = []

    def fake_run(cmd, **kw):  # onnx2tf "succeeds" and writes its SavedModel; the int8 converter writes nothing
        calls.append(cmd)
        if "onnx2tf" in cmd:
            out = Path(cmd[cmd.index("-o") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "saved_model.pb").write_bytes(b"x")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(convert.subprocess, "run", fake_run)
    npy = tmp_path / "c.npy"
    np.save(npy, np.zeros((2, 64, 61, 1), np.float32))
    with pytest.raises(ExportError, match=r"exited 0 but did not produce model_int8\.tflite"):
        convert.run_onnx2tf(onnx, tmp_path, "int8", calib_npy=npy, mean=(-40.0,), std=(15.0,))
    o2t, q = calls
    assert "-oiqt" not in o2t  # onnx2tf never quantises (no MS-COCO fallback possible)
    # the int8 step gets the calibration windows and the checkpoint's normalisation explicitly
    assert q[2:] == ["edge_asc.export._tflite_convert", str(tmp_path / "onnx2tf"), str(tmp_path / "model_int8.tflite"),
                     "int8", str(npy), "[-40.0]", "[15.0]"]
    with pytest.raises(ExportError, match=r"exited 0 but did not produce model_float32\.tflite"):
        convert.run_onnx2tf(onnx, tmp_path, "float")

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ValueError: bad graph\n")

    monkeypatch.setattr(convert.subprocess, "run", failing)
    with pytest.raises(ExportError, match=r"onnx2tf failed \(exit 1\): ValueError: bad graph"):
        convert.run_onnx2tf(onnx, tmp_path, "float")


def test_onnx2tf_gets_normalised_calibration_windows_as_its_sample(tmp_path, monkeypatch):
    """A 3-channel input makes onnx2tf load MS-COCO images from its sample file (downloading it when absent): without
    an explicit sample, the first 20 calibration windows, normalised, are written there before onnx2tf runs."""
    from edge_asc.export import convert

    seen = []

    def fake_run(cmd, **kw):
        if "onnx2tf" in cmd:
            seen.append(np.load(tmp_path / convert.ONNX2TF_SAMPLE_FILE))
            (tmp_path / "onnx2tf").mkdir(exist_ok=True)
            (tmp_path / "onnx2tf" / "saved_model.pb").write_bytes(b"x")
        else:
            Path(cmd[4]).write_bytes(b"tflite")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(convert.subprocess, "run", fake_run)
    x = np.random.default_rng(0).normal(-40.0, 10.0, (30, 8, 5, 3)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    convert.run_onnx2tf(tmp_path / "m.onnx", tmp_path, "int8", calib_npy=tmp_path / "c.npy", mean=(-40.0, 0.0, 1.0),
                        std=(10.0, 2.0, 4.0))
    (sample,) = seen
    assert sample.shape == (20, 8, 5, 3) and sample.dtype == np.float32
    np.testing.assert_allclose(sample, (x[:20] - [-40.0, 0.0, 1.0]) / [10.0, 2.0, 4.0], rtol=1e-6)


def test_op_reader_and_edgetpu_check(carded, tmp_path, monkeypatch):
    from edge_asc.export import edgetpu
    from edge_asc.export.convert import TfliteOp, op_summary, tflite_ops

    path, _ = carded
    ops = tflite_ops(path.read_bytes())
    names = [o.name for o in ops]
    assert "FULLY_CONNECTED" in names and all(not o.custom for o in ops)
    fc = ops[names.index("FULLY_CONNECTED")]
    assert fc.input_dtypes[:2] == ("int8", "int8") and fc.output_dtypes == ("int8",)
    s = op_summary(ops)
    assert s["custom_ops"] == [] and s["float_compute_ops"] == {} and sum(s["ops"].values()) == len(ops)
    monkeypatch.setattr(edgetpu.shutil, "which", lambda name: None)
    chk = edgetpu.check_edgetpu(path.read_bytes(), path)
    assert chk.unsupported == {} and chk.first_unmapped is None and chk.compiler is None
    assert chk.command == f"edgetpu_compiler -s -o {path.parent} {path}"
    fake = [TfliteOp(name="CONV_2D", custom=False, inputs=(0,), outputs=(1,), input_dtypes=("int8",),
                     output_dtypes=("int8",), input_shapes=((1,),), output_shapes=((1,),)),
            TfliteOp(name="EQUAL", custom=False, inputs=(1,), outputs=(2,), input_dtypes=("int8",),
                     output_dtypes=("bool",), input_shapes=((1,),), output_shapes=((1,),)),
            TfliteOp(name="MUL", custom=False, inputs=(2,), outputs=(3,), input_dtypes=("float32",),
                     output_dtypes=("int8",), input_shapes=((1,),), output_shapes=((1,),))]
    monkeypatch.setattr("edge_asc.export.convert.tflite_ops", lambda b: fake)
    chk = edgetpu.check_edgetpu(b"", path)
    assert chk.unsupported == {"EQUAL": 1, "MUL (non-int8 tensor)": 1} and chk.first_unmapped == 1


def test_verification_metrics_helpers():
    y = np.array([0, 0, 1, 1, 2])
    assert macro_accuracy(np.array([0, 1, 1, 1, 0]), y, 3) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert macro_accuracy(y, y, 4) == 1.0  # classes without clips are left out

    class C:
        def __init__(self, label):
            self.label = label

    clips = [C("a")] * 5 + [C("b")] * 2 + [C("c")]
    got = _spread(clips, 4)
    assert sorted(c.label for c in got) == ["a", "a", "b", "c"] and _spread(clips, 100) == clips


def test_output_grid_top1_rounds_saturates_and_breaks_ties_low():
    from edge_asc.spec import QuantParams

    q = QuantParams(dtype="int8", scale=0.1, zero_point=-20)
    logits = np.array([[1.00, 1.03, -5.0],    # 1.03 rounds to the same step as 1.00: tie -> class 0 (float says 1)
                       [1.00, 1.06, -5.0],    # one step apart: class 1 survives
                       [20.0, 30.0, 0.0],     # both saturate at q=127 (real 14.7): tie -> class 0
                       [-30.0, -20.0, -40.0]])  # all saturate at q=-128: class 0
    assert output_grid_top1(logits, q).tolist() == [0, 1, 0, 0]
    assert np.argmax(logits, 1).tolist() == [1, 1, 1, 1]
    assert output_grid_top1(logits, QuantParams()) is None  # float output: no grid


def test_input_grid_run_is_the_float_model_on_int8_rounded_inputs():
    """The input-grid floor: the float model on its windows rounded to the exported input's grid, compared with
    itself on the exact windows (top-1 and the event top-k set)."""
    torch = require("torch")
    from types import SimpleNamespace

    from edge_asc.export.verify import ExportedRun, compare, input_grid_run, run_float
    from edge_asc.model import build_model, model_preset
    from edge_asc.spec import QuantParams

    torch.manual_seed(0)
    cfg = model_preset("micro")
    model = build_model(cfg).eval()
    wins = np.random.default_rng(0).normal(size=(12, *cfg.input_shape[1:])).astype(np.float32)
    q = QuantParams(dtype="int8", scale=0.05, zero_point=3)
    ig = input_grid_run(model, wins, q)
    rounded = ((np.clip(np.rint(wins.astype(np.float64) / 0.05) + 3, -128, 127) - 3) * 0.05).astype(np.float32)
    assert not np.array_equal(rounded, wins)
    assert np.array_equal(ig.logits, run_float(model, rounded).logits)
    assert input_grid_run(model, wins, QuantParams()) is None  # a float input has no grid

    fl = run_float(model, wins)
    n = len(wins)
    exported = ExportedRun(windows=wins, owners=np.arange(n), logits=fl.logits,
                           clip_probs=np.eye(10)[np.zeros(n, int)], y=np.zeros(n, np.int64), events=fl.events,
                           stream_offline_max_prob_diff=0.0)
    kw = {"card": SimpleNamespace(output_quant=QuantParams()), "n_labels": 10, "mode": "int8", "split": "evaluate",
          "hop": 1, "topk": cfg.topk}
    v = compare(exported, fl, input_grid=ig, **kw)
    assert v.input_grid_agreement == pytest.approx(np.mean(ig.logits.argmax(1) == fl.logits.argmax(1)))
    same = [set(a) == set(b) for a, b in zip(fl.events.tolist(), ig.events.tolist())]
    assert v.events_input_grid_set_agreement == pytest.approx(np.mean(same))
    assert "input-grid floor" in v.summary()
    exact = compare(exported, fl, input_grid=fl, **kw)
    assert exact.input_grid_agreement == 1.0 and exact.events_input_grid_set_agreement == 1.0
    assert compare(exported, fl, **kw).input_grid_agreement is None


def test_event_ranking_reproduces_the_event_block():
    """The verifier's numpy ranking of first-argmax counts equals the torch event block (ties and all), so its
    count-grid ceiling ranks exactly as the model does."""
    torch = require("torch")
    from edge_asc.model.layers import EventExtraction
    from edge_asc.model.probe import first_argmax_counts

    g = torch.Generator().manual_seed(0)
    for x in (torch.randint(0, 3, (5, 6, 4, 7), generator=g).float(), torch.randn(4, 16, 8, 9, generator=g)):
        c = x.shape[1]
        block = np.rint(EventExtraction(c, 4)(x).numpy() * c).astype(np.int64)
        counts = first_argmax_counts(x.numpy())
        assert np.allclose(counts.sum(axis=1), 1.0)
        assert np.array_equal(event_ranking(counts, 4), block)
    # ties in the counts go to the lower index; a coarse grid merges near-equal counts
    assert event_ranking(np.array([[0.2, 0.3, 0.3, 0.2]]), 3).tolist() == [[1, 2, 0]]
    assert event_ranking(np.rint(np.array([[0.29, 0.31, 0.1, 0.3]]) / 0.1), 2).tolist() == [[0, 1]]


def test_info_prints_the_card_without_tensorflow(carded, capsys):
    from edge_asc.cli import main

    path, card = carded
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["labels"] == list(card.labels) and d["input_shape"] == list(card.input_shape)
    assert d["file_bytes"] == path.stat().st_size
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "low, high, silence" in text and "NHWC [1, 64, 61, 1] int8" in text
    # the export report beside the model: info shows the gate's verdict
    report_path_for(path).write_text(json.dumps({
        "verification": {"window_top1_agreement": 0.9, "float_macro_accuracy": 0.5, "exported_macro_accuracy": 0.4},
        "gate": {"passed": False}}))
    assert main(["info", str(path)]) == 0
    assert "(gate FAIL; m.export.json)" in capsys.readouterr().out
    report_path_for(path).unlink()
    assert main(["info", str(path.parent / "nope.tflite")]) == 1
    assert "no such model file" in capsys.readouterr().err
    code = ("import sys; from edge_asc.cli import main; rc = main(['info', sys.argv[1], '--json']); "
            "heavy = [m for m in ('tensorflow', 'torch', 'onnx', 'onnx2tf', 'ai_edge_litert.interpreter') "
            "if m in sys.modules]; "
            "assert not heavy, heavy; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["labels"] == list(card.labels)


def _ver(**kw):
    from edge_asc.export.verify import VerificationReport

    base = {"mode": "int8", "split": "evaluate", "n_clips": 90, "n_windows": 450, "hop_frames": 30,
            "window_top1_agreement": 0.95, "clip_top1_agreement": 0.98, "float_macro_accuracy": 0.60,
            "exported_macro_accuracy": 0.60, "max_logit_error": 0.5, "mean_logit_error": 0.05,
            "events_topk_set_agreement": 0.8, "events_top1_agreement": 0.9, "output_grid_agreement": 0.985,
            "confident_fraction": 0.5, "confident_top1_agreement": 1.0, "events_count_grid_set_agreement": 0.99,
            "events_count_grid_top1_agreement": 0.99}
    return VerificationReport(**{**base, **kw})


def test_gate_clauses_thresholds_and_report():
    from edge_asc.export import GateReport, check_gate
    from edge_asc.export.gate import CLAUSES

    cfg = ExportConfig()
    ok = check_gate(_ver(), cfg)
    assert ok.passed and ok.failed == () and [c.name for c in ok.clauses] == list(CLAUSES)
    # agreement: min(floor, output-grid ceiling - gap); the ceiling binds below floor + gap
    need = ok.clause("agreement").threshold
    assert need == pytest.approx(min(cfg.min_agreement, 0.985 - cfg.max_grid_gap))
    tight = ExportConfig(max_grid_gap=0.02)
    assert check_gate(_ver(output_grid_agreement=1.0), tight).clause("agreement").threshold == tight.min_agreement
    assert check_gate(_ver(output_grid_agreement=None), cfg).clause("agreement").threshold == cfg.min_agreement
    assert check_gate(_ver(window_top1_agreement=need), cfg).passed
    bad = check_gate(_ver(window_top1_agreement=need - 0.01, exported_macro_accuracy=0.60 - 0.03,
                          confident_top1_agreement=0.9, events_topk_set_agreement=0.05), cfg)
    assert bad.failed == CLAUSES and not bad.passed and bad.enforced
    line = bad.summary()
    assert line.startswith("gate FAIL (accuracy_drop, agreement, confident_agreement, event_set_agreement): ")
    assert f"accuracy_drop +3.00 points > {cfg.max_accuracy_drop:g} points" in line
    assert f"confident_agreement 0.9000 < {cfg.min_confident_agreement:g}" in line
    assert f"min(0.97, output-grid ceiling 0.9850 - {cfg.max_grid_gap:g})" in line
    # an export that does better than the float model on these clips loses nothing
    assert check_gate(_ver(exported_macro_accuracy=0.7), cfg).passed
    # unmeasurable clauses pass and say so
    none = check_gate(_ver(confident_top1_agreement=None, confident_fraction=0.0, events_topk_set_agreement=None,
                           events_top1_agreement=None), cfg)
    assert none.passed and "confident_agreement not measured" in none.summary()
    assert "event_set_agreement not measured" in none.summary()
    # thresholds are the config's; the report round-trips through JSON
    loose = check_gate(_ver(exported_macro_accuracy=0.57), ExportConfig(max_accuracy_drop=5.0, gate=False))
    assert check_gate(_ver(exported_macro_accuracy=0.57), ExportConfig(max_accuracy_drop=2.0)).failed == (
        "accuracy_drop",)
    assert loose.passed and not loose.enforced and "[not enforced" in loose.summary()
    d = json.loads(json.dumps(bad.to_dict()))
    assert d["passed"] is False and d["failed"] == list(CLAUSES) and len(d["clauses"]) == 4
    from edge_asc.export import GateClause

    assert GateReport(clauses=tuple(GateClause(**c) for c in d["clauses"])).summary() == line


def test_gate_options_are_validated():
    for field, bad in (("max_accuracy_drop", -1.0), ("max_accuracy_drop", 101.0), ("max_grid_gap", 1.5),
                       ("min_confident_agreement", -0.1), ("min_event_set_agreement", 2.0)):
        with pytest.raises(ConfigError, match=field):
            ExportConfig(**{field: bad})
    from edge_asc.cli import main

    for flag in ("--max-accuracy-drop", "--max-grid-gap", "--min-confident-agreement", "--min-event-agreement"):
        assert main(["export", "run", "--out", "m.tflite", flag, "-1"]) == 2
