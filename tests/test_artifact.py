"""The .tflite reader (edge_asc.artifact): card, tensors, ops and buffers equal what the file holds and what LiteRT
reports; files that are not TFLite, or are cut short, raise one line of ModelContractError."""

from __future__ import annotations

import json
import subprocess
import sys

import firmware_models as fm
import numpy as np
import pytest
from conftest import require

from edge_asc.artifact import CARD_NAME, DTYPES, is_tflite, read_artifact, tensor_bytes
from edge_asc.errors import ModelContractError
from edge_asc.spec import PRESETS, ModelCard, QuantParams

require("ai_edge_litert")

CARD = ModelCard(frontend=PRESETS["edge"].replace(n_mels=16, norm_mean=(-40.0,), norm_std=(12.0,)),
                 window_frames=12, input_quant=QuantParams(dtype="int8", scale=0.05, zero_point=3),
                 model_preset="toy")


@pytest.fixture(scope="module")
def toy() -> bytes:
    """The firmware_bench toy model (conv with per-channel weights, depthwise, max pool, mean, dense), with a card."""
    require("tensorflow")
    from edge_asc.tflite_meta import embed_model_card

    return embed_model_card(fm.toy_model(), CARD)


@pytest.fixture(scope="module")
def hand() -> bytes:
    return fm.hand_model()


def _interpreter(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.allocate_tensors()
    return it


def test_card_and_metadata_round_trip(toy, tmp_path):
    p = tmp_path / "toy.tflite"
    p.write_bytes(toy)
    for model in (toy, p, str(p)):
        art = read_artifact(model)
        assert art.card == CARD
        assert json.loads(art.metadata[CARD_NAME]) == json.loads(CARD.to_json())
        assert {"min_runtime_version", CARD_NAME} <= set(art.metadata)  # the converter's entries are kept
    assert read_artifact(p).where == str(p) and read_artifact(toy).where == "<bytes>"
    assert read_artifact(toy).file_bytes == len(toy) and read_artifact(toy).version == 3


def test_tensors_equal_litert_tensor_details(toy):
    art = read_artifact(toy)
    it = _interpreter(toy)
    details = it.get_tensor_details()
    assert len(details) == len(art.tensors)
    per_channel = 0
    for d in details:
        t = art.tensors[d["index"]]
        assert t.index == d["index"] and t.name == d["name"]
        assert t.shape == tuple(int(s) for s in d["shape"])
        assert t.dtype == np.dtype(d["dtype"]).name
        qp = d["quantization_parameters"]
        if t.quantization is None:
            assert qp["scales"].size == 0 and d["quantization"] == (0.0, 0)
            continue
        q = t.quantization
        np.testing.assert_array_equal(np.array(q.scales, np.float32), qp["scales"])
        np.testing.assert_array_equal(np.array(q.zero_points), qp["zero_points"])
        assert q.axis == qp["quantized_dimension"]
        assert (q.per_tensor or (0.0, 0)) == pytest.approx(d["quantization"])
        per_channel += len(q.scales) > 1
        if t.constant:  # a constant's buffer holds exactly what the interpreter reads
            assert t.data == it.get_tensor(t.index).tobytes()
            assert len(t.data) == t.nbytes
    assert per_channel >= 2  # the conv and depthwise weights (and their biases) carry one scale per channel
    assert art.inputs == tuple(d["index"] for d in it.get_input_details())
    assert art.outputs == tuple(d["index"] for d in it.get_output_details())


def test_ops_of_the_toy_model(toy):
    art = read_artifact(toy)
    assert [op.name for op in art.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED"]
    assert [op.index for op in art.ops] == list(range(5)) and not any(op.custom for op in art.ops)
    conv, _, pool, mean, fc = art.ops
    assert art.tensors[conv.inputs[1]].shape == (4, 2, 3, 1) and art.tensors[conv.inputs[2]].dtype == "int32"
    assert conv.inputs[0] == art.inputs[0] and fc.outputs == art.outputs
    assert pool.options["filter_height"] == pool.options["filter_width"] == 2 and pool.options["stride_w"] == 2
    assert conv.options["stride_h"] == 1 and mean.options["keep_dims"] is False
    assert art.subgraph_count == 1


def test_an_omitted_optional_input_is_minus_one():
    require("tensorflow")
    art = read_artifact(fm.dense_model(4, 3))  # FULLY_CONNECTED without bias
    (fc,) = art.ops
    assert fc.name == "FULLY_CONNECTED" and len(fc.inputs) == 3 and fc.inputs[2] == -1
    assert fc.present_inputs == fc.inputs[:2] and art.tensors[fc.inputs[1]].shape == (3, 4)


def test_hand_built_graph_needs_no_tensorflow(hand):
    art = read_artifact(hand)
    names = list(fm.HAND_TENSORS)
    assert [op.name for op in art.ops] == [op for op, _, _ in fm.HAND_OPS]
    assert [tuple(names[i] for i in op.inputs) for op in art.ops] == [ins for _, ins, _ in fm.HAND_OPS]
    assert [t.name for t in art.tensors] == names
    assert [(t.shape, t.dtype, t.nbytes) for t in art.tensors] == list(fm.HAND_TENSORS.values())
    assert art.tensors[names.index("axes")].data == np.array([1, 2], "<i4").tobytes()
    assert [t.name for t in art.tensors if t.constant] == ["axes", "c"]
    assert art.buffers[0] == b"" and len(art.buffers) == 3
    assert art.ops[0].options == {}  # ABS has no options
    assert art.metadata == {}
    with pytest.raises(ModelContractError, match="has no edge-asc model card"):
        _ = art.card


def test_tensor_bytes_spells_each_type_once():
    assert tensor_bytes((2, 3), "float32") == 24 and tensor_bytes((2, 3), "int8") == 6
    assert tensor_bytes((3,), "int4") == 2 and tensor_bytes((), "int32") == 4
    assert all(k == k.lower() for k in DTYPES)


def _one_line_error(fn) -> str:
    with pytest.raises(ModelContractError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_files_that_are_not_tflite_or_are_cut_short(toy, tmp_path):
    assert "no such model file" in _one_line_error(lambda: read_artifact(tmp_path / "missing.tflite"))
    assert "is a directory" in _one_line_error(lambda: read_artifact(tmp_path))
    assert "not a TFLite model (missing the 'TFL3' identifier)" in _one_line_error(
        lambda: read_artifact(b"not a model at all, just some bytes"))
    assert "not a TFLite model" in _one_line_error(lambda: read_artifact(toy[:12]))
    cut = toy[: len(toy) // 3]
    assert "truncated or corrupt" in _one_line_error(lambda: read_artifact(cut).card)
    assert "truncated or corrupt" in _one_line_error(lambda: read_artifact(cut).tensors)
    bad_root = (len(toy) + 8).to_bytes(4, "little") + toy[4:]  # the root table offset points past the end
    assert "truncated or corrupt" in _one_line_error(lambda: read_artifact(bad_root))
    (tmp_path / "model.bin").write_bytes(toy)
    (tmp_path / "notes.tflite").write_bytes(b"not a model at all")
    assert is_tflite(tmp_path / "model.bin") and not is_tflite(tmp_path / "notes.tflite")
    assert not is_tflite(tmp_path / "missing.tflite") and not is_tflite(tmp_path)


def test_importing_the_reader_loads_no_schema_until_a_file_is_read(hand, tmp_path):
    p = tmp_path / "hand.tflite"
    p.write_bytes(hand)
    code = ("import sys, json\nimport edge_asc.artifact as a\n"
            "before = [m for m in ('ai_edge_litert', 'flatbuffers') if m in sys.modules]\n"
            f"n = len(a.read_artifact({str(p)!r}).ops)\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch', 'onnx', 'librosa')]\n"
            "print(json.dumps([before, n, heavy, 'ai_edge_litert.interpreter' in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == [[], len(fm.HAND_OPS), [], False]
