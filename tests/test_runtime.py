"""Runtime core: interpreter loading, the Classifier's model contract, classify_audio == offline windows, tracker."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from conftest import require

from edge_asc.audio import AudioWarning
from edge_asc.errors import AudioInputError, ConfigError, DeviceError, MissingExtraError, ModelContractError
from edge_asc.frontend import normalize, offline
from edge_asc.runtime import (
    Classifier,
    SceneTracker,
    StreamPipeline,
    WindowAssembler,
    classify_audio,
    hop_frames_for,
    load_interpreter,
)
from edge_asc.runtime import interpreter as interp_mod
from edge_asc.spec import QuantParams

require("tensorflow")
from runtime_models import LABELS, cached_model, high, low, scene_audio, write_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("rt") / "tiny.tflite")


@pytest.fixture(scope="module")
def clf(model_path):
    return Classifier(model_path)


def offline_windows(audio, card, hop_frames):
    feats = offline(audio, card.frontend)
    W = card.window_frames
    return [feats[:, :, s : s + W] for s in range(0, feats.shape[-1] - W + 1, hop_frames)]


# ---- Classifier and its contract ---------------------------------------------------------------------------------
def test_classifier_reads_card_and_quantises_with_model_scales(clf, model_path):
    import hashlib
    from pathlib import Path

    assert clf.labels == LABELS
    assert clf.window_shape == (1, 64, 61)
    assert clf.model_sha256 == hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    # Do by hand what the classifier does, with the interpreter's own scales.
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model_path)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    window = offline(low(1.0), clf.card.frontend)[:, :, :61]
    x = normalize(window, clf.card.frontend).transpose(1, 2, 0)[None]
    s, z = i["quantization"]
    q = np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8)
    it.set_tensor(i["index"], q)
    it.invoke()
    os_, oz = o["quantization"]
    expect = (it.get_tensor(o["index"]).astype(np.float32).reshape(-1) - oz) * os_
    np.testing.assert_allclose(clf.logits(window), expect, rtol=0, atol=1e-6)
    p = clf.probabilities(window)
    assert p.dtype == np.float32 and abs(float(p.sum()) - 1.0) < 1e-5
    assert LABELS[int(p.argmax())] == "low"
    assert clf.last_latency_s > 0


def test_classifier_labels_match_the_sound(clf):
    for audio, want in ((low(1.2), "low"), (high(1.2), "high"), (np.zeros(20000, np.float32), "silence")):
        w = offline(audio, clf.card.frontend)[:, :, :61]
        assert LABELS[int(clf.probabilities(w).argmax())] == want


def test_classifier_rejects_window_of_wrong_shape(clf):
    with pytest.raises(ModelContractError, match=r"\(1, 64, 61\)"):
        clf.logits(np.zeros((1, 64, 60), np.float32))


def test_model_without_card_is_refused(tmp_path):
    data, _ = cached_model(with_card=False)
    p = tmp_path / "nocard.tflite"
    p.write_bytes(data)
    with pytest.raises(ModelContractError, match="no edge-asc model card"):
        Classifier(p)


@pytest.mark.parametrize("changes, match", [
    ({"window_frames": 50}, "input tensor shape"),
    ({"input_quant": QuantParams(dtype="int8", scale=0.5, zero_point=3)}, "input quantisation"),
    ({"input_quant": QuantParams(dtype="float32")}, "input tensor is int8"),
    ({"labels": ("a", "b", "c", "d")}, "one score per label"),
])
def test_inconsistent_card_is_refused(tmp_path, changes, match):
    data, _ = cached_model(card_changes=changes)
    p = tmp_path / "liar.tflite"
    p.write_bytes(data)
    with pytest.raises(ModelContractError, match=match):
        Classifier(p)


def test_missing_and_non_tflite_files(tmp_path):
    with pytest.raises(ModelContractError, match="no such model file"):
        Classifier(tmp_path / "nope.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all, just text" * 4)
    with pytest.raises(ModelContractError, match="not a TFLite model"):
        Classifier(bad)


# ---- interpreter loading ---------------------------------------------------------------------------------------
def test_interpreter_fallback_order(monkeypatch, model_path):
    assert interp_mod.interpreter_backend()[0] == "ai_edge_litert"
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    assert interp_mod.interpreter_backend()[0] == "tensorflow"
    assert Classifier(model_path).backend == "tensorflow"
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'edge-asc\[pi\]'"):
        load_interpreter(model_path)


def test_threads_validated(model_path):
    with pytest.raises(ConfigError, match="threads"):
        load_interpreter(model_path, threads=0)
    assert load_interpreter(model_path, threads=2).get_input_details()[0]["shape"].tolist() == [1, 64, 61, 1]


def test_edgetpu_refuses_a_model_not_compiled_for_it(model_path):
    with pytest.raises(ModelContractError, match="edgetpu_compiler"):
        Classifier(model_path, edgetpu=True)


def test_edgetpu_without_runtime_library_is_a_device_error(monkeypatch, model_path):
    monkeypatch.setattr(interp_mod, "custom_op_names", lambda data: {interp_mod.EDGETPU_CUSTOM_OP})

    def no_lib(name, *a, **k):
        raise ValueError(f"Failed to load delegate from {name}")

    real = interp_mod.interpreter_backend
    monkeypatch.setattr(interp_mod, "interpreter_backend", lambda: (real()[0], real()[1], no_lib))
    with pytest.raises(DeviceError, match=r"libedgetpu\.so\.1.*apt-get install libedgetpu1-std"):
        load_interpreter(model_path, edgetpu=True)


# ---- classify_audio: the streaming path equals the offline windows ----------------------------------------------
@pytest.mark.parametrize("hop_s, block", [(None, 1024), (0.5, 1024), (0.25, 333), (1.7, 4096)])
def test_classify_audio_equals_offline_windows(clf, hop_s, block):
    audio = scene_audio(2.0)
    res = classify_audio(clf, audio, hop_seconds=hop_s, block=block)
    hop = hop_frames_for(clf.card, hop_s)
    wins = offline_windows(audio, clf.card, hop)
    assert res.window_probs.shape == (len(wins), 3)
    expect = np.stack([clf.probabilities(w) for w in wins])
    np.testing.assert_allclose(res.window_probs, expect, atol=1e-6)
    spec = clf.card.frontend
    np.testing.assert_allclose(res.window_starts_s, np.arange(len(wins)) * hop * spec.hop_length / spec.sample_rate)
    np.testing.assert_allclose(res.clip_probs, expect.mean(axis=0), atol=1e-6)
    assert res.label == LABELS[int(expect.mean(axis=0).argmax())]


def test_hop_rounding_and_validation(clf):
    assert hop_frames_for(clf.card, None) == 30  # half of 61 frames
    assert hop_frames_for(clf.card, 0.5) == 31  # 0.5 s * 16000 / 256 = 31.25
    assert hop_frames_for(clf.card, 0.001) == 1
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="hop"):
            hop_frames_for(clf.card, bad)


def test_short_clip_is_tiled_to_one_window_with_a_warning(clf):
    with pytest.warns(AudioWarning, match="tiled"):
        res = classify_audio(clf, low(0.8))
    assert res.window_probs.shape == (1, 3) and res.label == "low" and res.window_starts_s.tolist() == [0.0]
    feats = offline(low(0.8), clf.card.frontend)  # 49 frames, repeated to 61
    tiled = np.concatenate([feats, feats[:, :, :12]], axis=2)
    np.testing.assert_allclose(res.window_probs[0], clf.probabilities(tiled), atol=1e-6)
    with pytest.raises(AudioInputError, match="too short for one feature frame"):
        classify_audio(clf, low(0.01))


def test_classify_audio_rejects_bad_audio(clf):
    with pytest.raises(AudioInputError, match="empty"):
        classify_audio(clf, np.zeros(0, np.float32))
    with pytest.raises(AudioInputError, match="NaN"):
        classify_audio(clf, np.full(20000, np.nan, np.float32))
    with pytest.raises(AudioInputError, match="shape"):
        classify_audio(clf, np.zeros((2, 20000), np.float32))


def test_classify_audio_reports_scene_changes(clf):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = classify_audio(clf, scene_audio(3.0), hop_seconds=0.5)
    got = [(c.label, c.previous) for c in res.scene_changes]
    assert got == [("low", ""), ("high", "low"), ("low", "high")]
    starts = [c.start_s for c in res.scene_changes]
    assert starts[0] == 0.0 and 3.0 <= starts[1] <= 4.5 and 6.0 <= starts[2] <= 7.5
    assert all(len(c.top3) == 3 and c.top3[0][0] == c.label for c in res.scene_changes)


# ---- pipeline pieces -------------------------------------------------------------------------------------------
def test_window_assembler_matches_slicing_for_any_split(rng):
    feats = rng.standard_normal((2, 4, 200)).astype(np.float32)
    for W, hop in ((10, 3), (10, 10), (5, 17)):
        want = [(s, feats[..., s : s + W]) for s in range(0, 200 - W + 1, hop)]
        asm = WindowAssembler(W, hop)
        got, pos = [], 0
        for n in rng.integers(0, 23, size=100):
            got += asm.push(feats[..., pos : pos + n])
            pos += n
        got += asm.push(feats[..., pos:])
        assert [s for s, _ in got] == [s for s, _ in want]
        for (_, a), (_, b) in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_pipeline_resamples_a_native_rate_mic(clf):
    """44.1 kHz input through the streaming resampler gives the same labels as 16 kHz input."""
    pipe = StreamPipeline(clf, input_rate=44_100, hop_seconds=0.5)
    audio = np.concatenate([low(2.0, 44_100), high(2.0, 44_100)])
    results = []
    for i in range(0, audio.size, 441):
        pipe.ring.write(audio[i : i + 441])
        results += pipe.process()
    results += pipe.process(end=True)
    labels = [clf.labels[int(r.probs.argmax())] for r in results]
    assert labels[:2] == ["low", "low"] and labels[-2:] == ["high", "high"]
    assert abs(pipe.stream_seconds - 4.0) < 0.01


def test_pipeline_ring_overrun_keeps_newest_audio_and_stream_time(clf):
    pipe = StreamPipeline(clf, hop_seconds=0.5, ring_seconds=1.0, block=1024)
    pipe.ring.write(high(3.0))  # 3 s into a 1 s ring: the consumer fell behind
    assert pipe.ring.overrun_events == 1 and pipe.ring.overrun_samples == 32_000
    results = pipe.process(end=True)
    assert [clf.labels[int(r.probs.argmax())] for r in results] == ["high"]
    assert abs(pipe.stream_seconds - 3.0) < 1e-6  # the 2 dropped seconds still count as stream time
    assert abs(results[0].start_s - 2.0) < 1e-6


# ---- tracker ---------------------------------------------------------------------------------------------------
def _probs(k):
    p = np.full(3, 0.05, np.float32)
    p[k] = 0.9
    return p


def test_tracker_first_window_sets_scene_then_hysteresis_prevents_flicker():
    tr = SceneTracker(LABELS, smooth=3, margin=0.1, patience=2)
    ch = tr.update(_probs(0), 0.0)
    assert ch.label == "low" and ch.previous == "" and ch.start_s == 0.0
    # single-window blips of another class never switch the scene
    for t in range(1, 30):
        assert tr.update(_probs(1 if t % 3 == 0 else 0), t * 0.5) is None
    assert tr.label == "low"


def test_tracker_switches_after_patience_with_start_of_the_lead():
    tr = SceneTracker(LABELS, smooth=3, margin=0.1, patience=2)
    for t in range(5):
        tr.update(_probs(0), t * 0.5)
    events = [(t * 0.5, tr.update(_probs(1), t * 0.5)) for t in range(5, 12)]
    changes = [(t, e) for t, e in events if e is not None]
    assert len(changes) == 1
    t, e = changes[0]
    # smoothed lead appears at the 2nd 'high' window (t=3.0); patience 2 confirms it at t=3.5
    assert (e.label, e.previous, e.start_s, t) == ("high", "low", 3.0, 3.5)
    assert e.top3[0][0] == "high" and e.top3[1][0] == "low" and 0 < e.confidence <= 1


def test_tracker_validates_settings():
    for kw in ({"smooth": 0}, {"margin": 1.0}, {"patience": 0}):
        with pytest.raises(ConfigError):
            SceneTracker(LABELS, **kw)
    with pytest.raises(ConfigError, match="3 labels"):
        SceneTracker(LABELS).update(np.ones(4) / 4, 0.0)


def test_an_interpreter_failure_becomes_a_one_line_model_contract_error():
    """A kernel's own runtime check (e.g. int8 DIV by a zero-quantised divisor) must not escape as a traceback."""
    import numpy as np

    from edge_asc.errors import ModelContractError

    clf = Classifier.__new__(Classifier)  # only the invoke path is exercised

    class Boom:
        def set_tensor(self, *a):
            pass

        def invoke(self):
            raise RuntimeError(
                "tflite/kernels/div.cc:262 data[i] != zero_point was not true.Node number 9 (DIV) failed"
            )

    clf._interp, clf._in_index, clf._input = Boom(), 0, np.zeros(1, np.float32)
    clf._prepare = lambda window: None
    with pytest.raises(ModelContractError, match=r"interpreter failed to run the model.*div.cc:262"):
        clf.logits(np.zeros((1, 64, 61), np.float32))
