"""Run a .tflite model with LiteRT on seeded random inputs and print its raw outputs as JSON (numpy + ai_edge_litert).

Used by scripts/pi_check.sh on the host and inside the aarch64 chroot: numpy's PCG64 gives the same inputs on both,
so the raw (int8) outputs must be bit-identical. This isolates the interpreter from the audio front end.

    python pi_invoke.py MODEL.tflite [N]
"""

import json
import platform
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main() -> int:
    model, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8
    it = Interpreter(model_path=model, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rng = np.random.default_rng(20240)
    outputs = []
    for _ in range(n):
        if np.issubdtype(inp["dtype"], np.integer):
            info = np.iinfo(inp["dtype"])
            x = rng.integers(info.min, info.max, size=inp["shape"], endpoint=True).astype(inp["dtype"])
        else:
            x = rng.standard_normal(size=inp["shape"]).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        outputs.append(it.get_tensor(out["index"]).ravel().tolist())
    json.dump({"platform": platform.machine(), "input_dtype": np.dtype(inp["dtype"]).name,
               "output_dtype": np.dtype(out["dtype"]).name, "outputs": outputs}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
