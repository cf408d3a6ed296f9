"""The model card travels inside the .tflite: embedded at export, read back without TensorFlow or an interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import require

from edge_asc.errors import ModelContractError
from edge_asc.spec import PRESETS, ModelCard, QuantParams
from edge_asc.tflite_meta import CARD_NAME, embed_model_card, read_metadata, read_model_card


@pytest.fixture(scope="module")
def plain_int8_tflite() -> bytes:
    """A tiny full-int8 model (conv -> GAP -> dense), converted by TensorFlow, without a card."""
    tf = require("tensorflow")
    inp = tf.keras.Input((64, 61, 1), batch_size=1)
    x = tf.keras.layers.Conv2D(4, (2, 3), activation="relu")(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(10)(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.standard_normal((1, 64, 61, 1)).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


CARD = ModelCard(frontend=PRESETS["edge"].replace(norm_mean=(-42.0,), norm_std=(11.0,)), window_frames=61,
                 input_quant=QuantParams(dtype="int8", scale=0.02, zero_point=-5), model_preset="toy")


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def test_embed_then_read_round_trips_and_litert_still_runs_it(plain_int8_tflite):
    carded = embed_model_card(plain_int8_tflite, CARD)
    assert read_model_card(carded) == CARD
    meta = read_metadata(carded)
    assert set(read_metadata(plain_int8_tflite)) < set(meta)  # converter metadata is kept
    x = np.random.default_rng(1).integers(-128, 128, (1, 64, 61, 1)).astype(np.int8)
    np.testing.assert_array_equal(_run(carded, x), _run(plain_int8_tflite, x))


def test_re_embedding_replaces_the_card(plain_int8_tflite):
    once = embed_model_card(plain_int8_tflite, CARD)
    twice = embed_model_card(once, ModelCard(window_frames=30))
    assert read_model_card(twice).window_frames == 30
    assert list(read_metadata(twice)).count(CARD_NAME) == 1


def test_buffers_stay_16_byte_aligned(plain_int8_tflite):
    from ai_edge_litert import schema_py_generated as schema

    carded = embed_model_card(plain_int8_tflite, CARD)
    model = schema.Model.GetRootAs(carded, 0)
    for i in range(model.BuffersLength()):
        b = model.Buffers(i)
        if b.DataLength():
            start = b._tab.Vector(b._tab.Offset(4))
            assert start % 16 == 0, f"buffer {i} starts at {start}"


def test_reading_needs_no_tensorflow_and_no_interpreter(plain_int8_tflite, tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(embed_model_card(plain_int8_tflite, CARD))
    code = (
        "import sys, json\nfor m in ('tensorflow', 'torch', 'onnx'): sys.modules[m] = None\n"
        "from edge_asc.tflite_meta import read_model_card\n"
        f"c = read_model_card({str(p)!r})\n"
        "assert 'ai_edge_litert.interpreter' not in sys.modules\n"
        "print(json.dumps([c.labels[0], c.window_frames, c.frontend.norm_mean[0]]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == ["airport", 61, -42.0]


def test_reading_without_the_pi_extra_names_it(plain_int8_tflite, tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(embed_model_card(plain_int8_tflite, CARD))
    code = (
        "import sys\nsys.modules['ai_edge_litert.schema_py_generated'] = None\n"
        "from edge_asc.errors import MissingExtraError\nfrom edge_asc.tflite_meta import read_model_card\n"
        "try:\n"
        f"    read_model_card({str(p)!r})\n"
        "except MissingExtraError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'edge-asc[pi]'" in r.stdout


def test_bad_files_raise_model_contract_errors(plain_int8_tflite, tmp_path):
    with pytest.raises(ModelContractError, match="no such model file"):
        read_model_card(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all, just some bytes")
    with pytest.raises(ModelContractError, match="not a TFLite model"):
        read_model_card(junk)
    with pytest.raises(ModelContractError, match="has no edge-asc model card"):
        read_model_card(plain_int8_tflite)
    carded = embed_model_card(plain_int8_tflite, CARD)
    with pytest.raises(ModelContractError, match="truncated or corrupt"):
        read_model_card(carded[: len(carded) // 3])


def test_invalid_card_json_is_reported(plain_int8_tflite):
    bad = json.loads(CARD.to_json())
    bad["labels"] = ["only-one"]

    class Raw(ModelCard):
        def to_json(self) -> str:  # bypasses validation on purpose, as a foreign writer could
            return json.dumps(bad)

    carded = embed_model_card(plain_int8_tflite, Raw())
    with pytest.raises(ModelContractError, match="model card is invalid: a model card needs at least 2 labels"):
        read_model_card(carded)
