"""Small full-int8 TFLite models for the firmware_bench tests, built with TensorFlow, with hand-counted costs.

``toy``: input float32[1, 16, 12, 1] ->
    CONV_2D 4 filters 2x3 'valid' (+bias, ReLU) -> [1, 15, 10, 4]: 15*10*4 * 2*3*1 = 3,600 MACs;
        24 int8 weights (6 set to exactly 0) + 4 int32 biases
    DEPTHWISE_CONV_2D 3x3 'same' (+bias) -> [1, 15, 10, 4]: 15*10*4 * 3*3 = 5,400 MACs;
        36 int8 weights + 4 int32 biases
    MAX_POOL_2D 2x2 -> [1, 7, 5, 4]: 140 outputs * 4 = 560 other ops
    MEAN over H, W -> [1, 4]: 7*5*4 = 140 other ops
    FULLY_CONNECTED 3 (+bias) -> [1, 3]: 4*3 = 12 MACs; 12 int8 weights + 3 int32 biases
  total: 9,012 MACs; 83 parameters; 24+16+36+16+12+12 = 116 stored bytes; 77 non-zero parameters.
"""

from __future__ import annotations

import numpy as np

TOY_MACS = 3600 + 5400 + 12
TOY_PARAMS = 24 + 4 + 36 + 4 + 12 + 3
TOY_PARAM_BYTES = 24 + 4 * 4 + 36 + 4 * 4 + 12 + 3 * 4
TOY_NONZERO = TOY_PARAMS - 6
TOY_OTHER_POOL_MEAN = 560 + 140


def _convert(model, shape, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep():
        for _ in range(8):
            yield [rng.standard_normal(shape).astype(np.float32)]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def toy_model() -> bytes:
    """The hand-counted toy model (module docstring), full int8, with an edge-asc model card (16 mels x 12 frames)."""
    import tensorflow as tf

    from edge_asc.spec import PRESETS, ModelCard
    from edge_asc.tflite_meta import embed_model_card

    rng = np.random.default_rng(7)
    inp = tf.keras.Input((16, 12, 1), batch_size=1)
    c = tf.keras.layers.Conv2D(4, (2, 3), activation="relu")
    d = tf.keras.layers.DepthwiseConv2D((3, 3), padding="same")
    x = c(inp)
    x = d(x)
    x = tf.keras.layers.MaxPooling2D((2, 2))(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    fc = tf.keras.layers.Dense(3)
    out = fc(x)
    m = tf.keras.Model(inp, out)

    def away_from_zero(shape):
        return (rng.uniform(0.5, 1.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)

    w = away_from_zero((2, 3, 1, 4))
    w.reshape(-1)[[0, 5, 9, 13, 17, 22]] = 0.0  # 6 exact zeros
    c.set_weights([w, np.array([0.3, -0.2, 0.25, 0.4], np.float32)])
    d.set_weights([away_from_zero((3, 3, 4, 1)), np.array([0.5, -0.5, 0.3, 0.2], np.float32)])
    fc.set_weights([away_from_zero((4, 3)), np.array([0.2, -0.3, 0.4], np.float32)])
    raw = _convert(m, (1, 16, 12, 1))
    card = ModelCard(frontend=PRESETS["edge"].replace(n_mels=16), window_frames=12)
    return embed_model_card(raw, card)


def dense_model(n_in: int, n_out: int) -> bytes:
    """A bias-free int8 dense layer: exactly ``n_in * n_out`` parameter bytes (one int8 weight each)."""
    import tensorflow as tf

    inp = tf.keras.Input((n_in,), batch_size=1)
    fc = tf.keras.layers.Dense(n_out, use_bias=False)
    m = tf.keras.Model(inp, fc(inp))
    rng = np.random.default_rng(3)
    fc.set_weights([(rng.uniform(0.5, 1.0, (n_in, n_out)) * rng.choice([-1.0, 1.0], (n_in, n_out))).astype(np.float32)])
    return _convert(m, (1, n_in))


def bn_model() -> tuple[bytes, int]:
    """Conv2D without bias + BatchNormalization (folded by the converter) -> (tflite, expected folded params)."""
    import tensorflow as tf

    inp = tf.keras.Input((8, 8, 2), batch_size=1)
    x = tf.keras.layers.Conv2D(5, (3, 3), use_bias=False)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    out = tf.keras.layers.Flatten()(x)
    m = tf.keras.Model(inp, out)
    bn = m.layers[2]
    rng = np.random.default_rng(5)
    bn.set_weights([rng.uniform(0.5, 1.5, 5).astype(np.float32), rng.uniform(0.1, 0.5, 5).astype(np.float32),
                    rng.uniform(-0.1, 0.1, 5).astype(np.float32), rng.uniform(0.5, 1.5, 5).astype(np.float32)])
    # folded: 3*3*2*5 weights + 5 biases (gamma/beta/mean/var disappear into them)
    return _convert(m, (1, 8, 8, 2)), 3 * 3 * 2 * 5 + 5


def topk_model() -> bytes:
    """A model with TOPK_V2, which TFLite Micro and the Ethos-U NPU cannot run."""
    import tensorflow as tf

    class TopK(tf.keras.layers.Layer):
        def call(self, x):
            return tf.cast(tf.math.top_k(x, k=3).indices, tf.float32)

    inp = tf.keras.Input((16,), batch_size=1)
    x = tf.keras.layers.Dense(8)(inp)
    out = tf.keras.layers.Concatenate()([x, TopK()(x)])
    return _convert(tf.keras.Model(inp, out), (1, 16))


# ---- a hand-built graph (no TensorFlow) ------------------------------------------------------------------------------
#: the hand-built graph: op -> (inputs, output); tensors (name, shape, dtype, bytes). 'x' is read again by op 3 (a skip
#: connection); 'm' is a graph output produced by op 1; 'axes' and 'c' are constants.
HAND_TENSORS = {
    "x": ((1, 8, 8, 4), "int8", 256), "a": ((1, 8, 8, 4), "int8", 256), "m": ((1, 1, 1, 4), "float32", 16),
    "b": ((1, 8, 8, 4), "int16", 512), "y": ((1, 8, 8, 4), "int32", 1024), "z": ((1, 8, 8, 4), "int16", 512),
    "axes": ((2,), "int32", 8), "c": ((4,), "int8", 4),
}
HAND_OPS = (("ABS", ("x",), "a"), ("MEAN", ("a", "axes"), "m"), ("MUL", ("a", "m"), "b"), ("ADD", ("b", "x"), "y"),
            ("SUB", ("y", "c"), "z"))
HAND_INPUTS, HAND_OUTPUTS = ("x",), ("z", "m")
#: live while each op runs:  x+a | x+a+m | x+a+m+b | x+b+m+y | m+y+z
HAND_LIVE = (256 + 256, 256 + 256 + 16, 256 + 256 + 16 + 512, 256 + 512 + 16 + 1024, 16 + 1024 + 512)
HAND_PEAK_INDEX = 3
HAND_PEAK_SET = ("y", "b", "x", "m")  # largest first


def hand_model() -> bytes:
    """:data:`HAND_OPS` as a .tflite FlatBuffer, written with the TFLite schema's object API (no TensorFlow)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    names = list(HAND_TENSORS)
    consts = {"axes": np.array([1, 2], "<i4").tobytes(), "c": np.array([1, -2, 3, -4], "i1").tobytes()}
    model = s.ModelT()
    model.version = 3
    model.buffers = [s.BufferT()]  # buffer 0: empty by convention
    sg = s.SubGraphT()
    sg.tensors = []
    for n in names:
        shape, dtype, _ = HAND_TENSORS[n]
        t = s.TensorT()
        t.name, t.shape, t.type = n.encode(), list(shape), getattr(s.TensorType, dtype.upper())
        t.buffer = 0
        if n in consts:
            b = s.BufferT()
            b.data = list(consts[n])
            model.buffers.append(b)
            t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
    codes = sorted({op for op, _, _ in HAND_OPS})
    model.operatorCodes = []
    for op in codes:
        c = s.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = getattr(s.BuiltinOperator, op)
        c.version = 1
        model.operatorCodes.append(c)
    sg.operators = []
    for op, ins, out in HAND_OPS:
        o = s.OperatorT()
        o.opcodeIndex = codes.index(op)
        o.inputs, o.outputs = [names.index(i) for i in ins], [names.index(out)]
        sg.operators.append(o)
    sg.inputs = [names.index(i) for i in HAND_INPUTS]
    sg.outputs = [names.index(i) for i in HAND_OUTPUTS]
    model.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
