"""Child-process step: onnx2tf's SavedModel -> one quantised TFLite file with the TFLite converter.

Run as ``python -m edge_asc.export._tflite_convert SAVED_MODEL OUT MODE [CALIB_NPY MEAN_JSON STD_JSON]``. onnx2tf
itself converts every variant (float16, dynamic range, integer, full integer, two int16 variants) when asked for
int8 and adds TF select ops to the allowed set; doing only the one conversion we need is faster and lets a model
that would need TF select (Flex) ops fail instead of silently depending on them.

Modes: 'dynamic-range' (int8 weights, float activations and I/O), 'int8' (full integer: int8 input, output and
activations, per-channel int8 weights; TFLITE_BUILTINS_INT8 only). Calibration: float32[N, H, W, C] NHWC
un-normalised windows, normalised here as ``(x - mean) / std`` (per channel), fed one window at a time.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    saved_model, out, mode = argv[:3]
    import numpy as np
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        data = np.load(argv[3]).astype(np.float32)
        mean = np.asarray(json.loads(argv[4]), np.float32).reshape(1, 1, 1, -1)
        std = np.asarray(json.loads(argv[5]), np.float32).reshape(1, 1, 1, -1)
        if data.ndim != 4 or data.shape[0] == 0:
            print(f"error: calibration array has shape {data.shape}, expected [N>0, H, W, C]", file=sys.stderr)
            return 3

        def representative():
            for i in range(data.shape[0]):
                yield [((data[i:i + 1] - mean) / std).astype(np.float32)]

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif mode != "dynamic-range":
        print(f"error: unknown mode {mode!r}", file=sys.stderr)
        return 2
    model = conv.convert()
    with open(out, "wb") as f:
        f.write(model)
    return 0


if __name__ == "__main__":  # pragma: no cover - run in a child process by edge_asc.export.convert
    sys.exit(main(sys.argv[1:]))
