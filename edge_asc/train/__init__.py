"""Training, checkpoints and evaluation of Mini-SegNet.

Nothing here imports torch at module level but ``qat`` (the int8 simulation; only ``edge-asc qat`` imports it, after
checking for torch): ``loop``, ``checkpoint`` and ``evaluate`` import it inside the functions that run a model, so
:func:`edge_asc.train.evaluate.evaluate_tflite` and the metrics work without it. Module
dependencies run one way: ``loop`` -> ``evaluate`` -> ``splits`` (the resolved dataset split both read). Window
slicing and the metrics live in the device-safe :mod:`edge_asc.frontend.windows` and :mod:`edge_asc.metrics`.
"""
