"""Small full-int8 TFLite models for the firmware generator's kernel tests, built with TensorFlow's converter from
seeded ``tf.function`` graphs. Together they cover every op the generator lowers, with broadcast shapes, per-channel
weight scales, non-zero biases and zero points, fused RELU/RELU6 clamps, float boundaries (QUANTIZE/DEQUANTIZE) and
int8 boundaries.

Calibration draws per-channel offsets and scales so activations get asymmetric ranges (non-zero zero points); the
seeded test inputs are uniform over the whole int8 range, so every op also sees saturating values.
"""

from __future__ import annotations

import numpy as np


def _convert(fn, shape, *, int8_io: bool, seed: int = 0) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    offset = rng.normal(0.5, 1.0, size=shape[-1]).astype(np.float32)
    spread = rng.uniform(0.5, 3.0, size=shape[-1]).astype(np.float32)
    f = tf.function(fn, input_signature=[tf.TensorSpec((1, *shape), tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep():
        for _ in range(16):
            yield [(rng.standard_normal((1, *shape)) * spread + offset).astype(np.float32)]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _w(rng, *shape, per_channel_last=True):
    """Weights whose output channels (last axis) have very different magnitudes (distinct per-channel scales)."""
    w = rng.standard_normal(shape).astype(np.float32)
    return w * rng.uniform(0.05, 2.0, size=shape[-1]).astype(np.float32) if per_channel_last else w


def conv_model() -> bytes:
    """CONV_2D (stride 2 'same' + RELU; 'valid' with dilation), DEPTHWISE_CONV_2D (multiplier 2, RELU6),
    MAX_POOL_2D / AVERAGE_POOL_2D ('same' with partial windows), FULLY_CONNECTED (with bias + RELU, without bias),
    RESHAPE; int8 input and output."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    w1, b1 = _w(rng, 3, 3, 3, 8), rng.normal(0, 0.5, 8).astype(np.float32)
    wd, bd = _w(rng, 3, 3, 8, 2), rng.normal(0, 0.5, 16).astype(np.float32)
    w2 = _w(rng, 2, 3, 16, 6)
    f1, fb1 = _w(rng, 3 * 6, 7), rng.normal(0, 0.5, 7).astype(np.float32)
    f2 = _w(rng, 7, 4)

    def fn(x):
        x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w1, 2, "SAME"), b1))              # [1,7,6,8]
        x = tf.nn.relu6(tf.nn.bias_add(tf.nn.depthwise_conv2d(x, wd, [1, 1, 1, 1], "SAME"), bd))  # [1,7,6,16]
        x = tf.nn.conv2d(x, w2, 1, "VALID", dilations=[1, 2])                             # [1,6,2,6]
        x = tf.nn.max_pool2d(x, 2, 2, "SAME")                                            # [1,3,1,6]
        x = tf.nn.avg_pool2d(x, (2, 1), (1, 1), "SAME")                                  # [1,3,1,6]
        x = tf.reshape(x, (1, 18))
        x = tf.nn.relu(tf.matmul(x, f1) + fb1)
        return tf.matmul(x, f2)

    return _convert(fn, (13, 11, 3), int8_io=True, seed=1)


def elementwise_model() -> bytes:
    """ADD / SUB / MUL with broadcast shapes ([1,8,6,4] with [1,1,6,1], [1,8,1,4], [1,1,1,4]), MAXIMUM, MINIMUM, MEAN,
    REDUCE_MAX, REDUCE_MIN, RELU; float32 input and output (QUANTIZE and DEQUANTIZE at the boundaries)."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    d1 = _w(rng, 6 * 4, 3)
    d2 = _w(rng, 4, 3)

    def fn(x):
        m = tf.reduce_mean(x, axis=[1, 3], keepdims=True)          # [1,1,6,1]
        a = x - m                                                  # SUB, broadcast
        b = x * a                                                  # MUL, same shape
        c = a + tf.reduce_max(x, axis=2, keepdims=True)            # ADD, broadcast [1,8,1,4]
        d = tf.maximum(c, b)
        e = tf.minimum(d, tf.reduce_min(x, axis=[1, 2], keepdims=True))  # broadcast [1,1,1,4]
        f = tf.nn.relu(tf.reduce_mean(e * 0.5 + c, axis=1))        # MUL by a constant, ADD, MEAN, RELU: [1,6,4]
        g = tf.reduce_mean(b, axis=[1, 2])                         # [1,4]
        return tf.matmul(tf.reshape(f, (1, 24)), d1) - tf.matmul(g, d2)

    return _convert(fn, (8, 6, 4), int8_io=False, seed=2)


def movement_model() -> bytes:
    """PAD, TRANSPOSE, RESIZE_NEAREST_NEIGHBOR (half-pixel centres, non-integer factors; one feeding a PAD, which the
    generator fuses), CONCATENATION (channel and spatial axes), RESHAPE, a fused RELU6 clamp; int8 input and output."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    wc, bc = _w(rng, 3, 3, 8, 5), rng.normal(0, 0.5, 5).astype(np.float32)
    wf = _w(rng, 20, 3)
    wg = _w(rng, 4, 3)

    def fn(x):
        p = tf.pad(x, [[0, 0], [1, 0], [2, 1], [0, 0]])                                   # [1,9,9,4]
        t = tf.transpose(p, [0, 2, 1, 3])
        r = tf.image.resize(x, (11, 9), method="nearest")                                # [1,11,9,4]
        q = tf.image.resize(t, (11, 9), method="nearest")
        cat = tf.concat([r, q], axis=3)                                                  # [1,11,9,8]
        c2 = tf.concat([cat, tf.nn.relu(cat)], axis=1)                                   # [1,22,9,8]
        y = tf.nn.relu6(tf.nn.bias_add(tf.nn.conv2d(c2, wc, 1, "VALID"), bc))            # [1,20,7,5]
        y = tf.transpose(tf.reshape(y, (1, 20, 35)), [0, 2, 1])                         # [1,35,20]
        rp = tf.pad(tf.image.resize(x, (7, 5), method="nearest"), [[0, 0], [1, 0], [1, 0], [0, 0]])  # [1,8,6,4]
        z = tf.reduce_mean(tf.concat([x, rp], axis=1), axis=[1, 2])
        return tf.matmul(tf.reduce_mean(y, axis=1), wf) + tf.matmul(z, wg)

    return _convert(fn, (8, 6, 4), int8_io=True, seed=3)


MODELS = {"conv": conv_model, "elementwise": elementwise_model, "movement": movement_model}
