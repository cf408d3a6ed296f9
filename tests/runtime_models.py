"""Test helper (not collected): tiny int8 TFLite models with an embedded ModelCard, built with TensorFlow.

The model is hand-weighted so that its answer is predictable from the audio: it averages each mel band over the
window and scores ``low`` (energy in the lowest quarter of the mel bands), ``high`` (energy in the upper half) and
``silence`` (little energy anywhere). Low-band noise is therefore 'low', high-band noise 'high', zeros 'silence'.
Tests may import TensorFlow; the runtime under test may not.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edge_asc.spec import PRESETS, ModelCard, QuantParams

LABELS = ("low", "high", "silence")
NORM_MEAN, NORM_STD = -50.0, 20.0


def tone(freq: float, seconds: float, sr: int = 16_000, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(float(seconds) * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def band_noise(lo: float, hi: float, seconds: float, sr: int = 16_000, amp: float = 0.2, seed: int = 0) -> np.ndarray:
    """Seeded noise band-limited to [lo, hi] Hz (FFT mask), peak-normalised to ``amp``; float32."""
    n = round(float(seconds) * sr)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(f < lo) | (f > hi)] = 0.0
    x = np.fft.irfft(spec, n)
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


def low(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    return band_noise(50, 1000, seconds, sr, seed=seed)


def high(seconds: float, sr: int = 16_000, seed: int = 1) -> np.ndarray:
    return band_noise(3500, min(7800, sr / 2 - 100), seconds, sr, seed=seed)


def scene_audio(seconds_each: float = 3.0, sr: int = 16_000) -> np.ndarray:
    """'low' noise, then 'high' noise, then 'low' again (float32 @ sr)."""
    return np.concatenate([low(seconds_each, sr, 0), high(seconds_each, sr, 1), low(seconds_each, sr, 2)])


def build_model(*, window_frames: int = 61, int8: bool = True, card_changes: dict | None = None,
                with_card: bool = True, labels: tuple[str, ...] = LABELS) -> tuple[bytes, ModelCard]:
    """Return ``(tflite bytes, card)``; ``card_changes`` overrides card fields after conversion (to make liars).

    ``labels`` other than :data:`LABELS` (e.g. the ten TAU scenes) get seeded random weights instead of the
    hand-made ones: a model whose answers vary from clip to clip, for comparing two paths clip by clip.
    """
    import tensorflow as tf

    from edge_asc.tflite_meta import embed_model_card

    spec = PRESETS["edge"].replace(norm_mean=(NORM_MEAN,), norm_std=(NORM_STD,))
    M, W = spec.n_mels, window_frames
    inp = tf.keras.Input((M, W, 1), batch_size=1)
    x = tf.keras.layers.AveragePooling2D(pool_size=(1, W))(inp)  # [1, M, 1, 1]: mean over time per mel band
    x = tf.keras.layers.Flatten()(x)
    dense = tf.keras.layers.Dense(len(labels))
    out = dense(x)
    model = tf.keras.Model(inp, out)
    if tuple(labels) == LABELS:
        w = np.zeros((M, len(LABELS)), np.float32)
        q = M // 4
        w[:q, 0] = 4.0 / q
        w[q:, 0] = -4.0 / (M - q) * 0.5
        w[M // 2 :, 1] = 4.0 / (M - M // 2)
        w[: M // 2, 1] = -4.0 / (M // 2) * 0.5
        w[:, 2] = -3.0 / M
        b = np.array([0.0, 0.0, -4.0], np.float32)
    else:
        w = np.random.default_rng(1).standard_normal((M, len(labels))) * 2.0 / np.sqrt(M)
        w = (w - w.mean(axis=0)).astype(np.float32)  # band contrasts, not loudness, decide
        b = np.zeros(len(labels), np.float32)
    dense.set_weights([w, b])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def rep():
            for _ in range(24):
                base = rng.uniform(-2.5, 2.5, size=(1, M, 1, 1)).astype(np.float32)
                yield [np.clip(base + 0.3 * rng.standard_normal((1, M, W, 1)).astype(np.float32), -3, 3)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    raw = conv.convert()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=raw)
    idet, odet = it.get_input_details()[0], it.get_output_details()[0]

    def qp(d):
        if d["dtype"] == np.float32:
            return QuantParams(dtype="float32")
        s, z = d["quantization"]
        return QuantParams(dtype=np.dtype(d["dtype"]).name, scale=float(s), zero_point=int(z))

    card = ModelCard(labels=tuple(labels), frontend=spec, window_frames=W, input_layout="NHWC", input_quant=qp(idet),
                     output_quant=qp(odet), output_kind="logits", model_preset="test-tiny")
    if card_changes:
        card = dataclasses.replace(card, **card_changes)
    return (embed_model_card(raw, card) if with_card else raw), card


_CACHE: dict = {}


def cached_model(**kw) -> tuple[bytes, ModelCard]:
    """:func:`build_model` memoised per test session (TensorFlow conversion costs seconds)."""
    key = repr(sorted(kw.items()))
    if key not in _CACHE:
        _CACHE[key] = build_model(**kw)
    return _CACHE[key]


def write_model(path, **kw) -> str:
    data, _ = cached_model(**kw)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)
