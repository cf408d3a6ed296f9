"""Loading a TFLite model into the best available LiteRT interpreter, optionally on a Coral Edge TPU.

Order: ``ai_edge_litert`` (LiteRT, the supported package) > ``tflite_runtime`` (legacy; 2.14 needs numpy < 2) >
``tensorflow.lite`` (a full TensorFlow, as on a development machine). Device-safe: nothing here imports a heavy
library unless the two light interpreters are both absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..artifact import load_bytes, read_artifact
from ..errors import ConfigError, DeviceError, MissingExtraError, ModelContractError

#: Shared library of the Coral Edge TPU runtime (``apt-get install libedgetpu1-std``).
EDGETPU_LIBRARY = "libedgetpu.so.1"
#: Custom operator the Edge TPU compiler puts into a compiled model.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


# Why an installed interpreter package may still not load: absent (ImportError), a binary wheel that fails to link
# (ImportError, OSError), or one built against another numpy (tflite-runtime 2.14 on numpy >= 2: AttributeError).
_UNLOADABLE = (ImportError, OSError, AttributeError)


def interpreter_backend() -> tuple[str, type, Callable[..., Any]]:
    """``(module name, Interpreter class, load_delegate function)`` of the first interpreter that imports.

    Raises:
        MissingExtraError: none of ai_edge_litert, tflite_runtime, tensorflow is importable; names why each failed.
    """
    reasons = []
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return "ai_edge_litert", Interpreter, load_delegate
    except _UNLOADABLE as exc:
        reasons.append(f"ai_edge_litert: {type(exc).__name__}")
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return "tflite_runtime", Interpreter, load_delegate
    except _UNLOADABLE as exc:
        reasons.append(f"tflite_runtime: {type(exc).__name__}")
    try:
        import tensorflow as tf  # last resort: a development machine with full TensorFlow

        return "tensorflow", tf.lite.Interpreter, tf.lite.experimental.load_delegate
    except _UNLOADABLE as exc:
        reasons.append(f"tensorflow: {type(exc).__name__}")
    raise MissingExtraError("ai_edge_litert", "pi", f"running .tflite models; tried {', '.join(reasons)}")


def _model_bytes(model: str | os.PathLike | bytes) -> bytes:
    return load_bytes(model)[0]


def custom_op_names(model: bytes) -> set[str]:
    """Custom operator codes of a TFLite model (empty on a model without any).

    Raises:
        ModelContractError: not a TFLite model, or a corrupt one.
    """
    art = read_artifact(model)
    return {op.name for op in art.ops if op.custom}


def load_interpreter(model: str | os.PathLike | bytes, *, threads: int = 1, edgetpu: bool = False):
    """Create and allocate an interpreter for ``model`` (a path or the model's bytes).

    Args:
        model: ``.tflite`` path or bytes.
        threads: CPU threads for the interpreter's kernels (>= 1).
        edgetpu: run the Edge TPU-compiled parts on a Coral through the ``libedgetpu.so.1`` delegate.

    Returns:
        An allocated ``Interpreter`` (``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow.lite``).

    Raises:
        ConfigError: ``threads`` < 1.
        MissingExtraError: no interpreter package installed (``pip install 'edge-asc[pi]'``).
        ModelContractError: missing/corrupt model file, or ``edgetpu`` with a model not compiled for the Edge TPU.
        DeviceError: ``edgetpu`` and the Edge TPU runtime library or the device is missing.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    data = _model_bytes(model)
    name, interpreter_cls, load_delegate = interpreter_backend()
    delegates = []
    if edgetpu:
        if EDGETPU_CUSTOM_OP not in custom_op_names(data):
            raise ModelContractError(
                "model was not compiled for the Edge TPU (no 'edgetpu-custom-op'): run "
                "'edgetpu_compiler MODEL.tflite' and pass the *_edgetpu.tflite it writes"
            )
        try:
            delegates.append(load_delegate(EDGETPU_LIBRARY))
        except (ValueError, OSError, RuntimeError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeviceError(
                f"cannot load the Edge TPU delegate {EDGETPU_LIBRARY} ({why}): "
                f"install it with 'sudo apt-get install libedgetpu1-std' and plug in the Coral USB Accelerator"
            ) from None
    try:
        interp = interpreter_cls(model_content=data, num_threads=threads, experimental_delegates=delegates or None)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelContractError(f"the {name} interpreter cannot load the model ({first}): re-export it") from None
    return interp
