"""TFLite's quantisation set-up arithmetic, reproduced bit for bit in Python.

TensorFlow Lite Micro computes each op's integer parameters in its ``Prepare`` step from the float32 scales of the
tensors, sometimes in double and sometimes in float32 precision (e.g. ``SUB`` divides in float32, ``ADD`` in double);
the generator must make the same choices to be bit-exact. Helpers here take float32 values and say which precision
they use; the per-op formulas live in :mod:`.lower`, next to the op they serve.
"""

from __future__ import annotations

import math

import numpy as np

f32 = np.float32


def round_half_away(x: float) -> int:
    """``std::round``: nearest integer, ties away from zero (exact for float32 and float64 inputs)."""
    x = float(x)
    r = math.floor(abs(x) + 0.5)
    return int(r if x >= 0 else -r)


def quantize_multiplier(real: float, *, single_rounding: bool = False) -> tuple[int, int]:
    """``QuantizeMultiplier(double)``: ``real = m * 2^(shift - 31)`` with ``m`` in [2^30, 2^31).

    Returns:
        (Q31 multiplier as int, shift): shift > 0 is a left shift.
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if single_rounding and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return int(q_fixed), int(shift)


def quantize_f32(value: float, scale: float, zero_point: int) -> int:
    """``zero_point + round(value / scale)`` with the division in float32 (TFLite's ``Quantize`` helper)."""
    return zero_point + round_half_away(f32(value) / f32(scale))


def activation_range(activation: int, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127
                     ) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for a fused activation (schema ActivationFunctionType value).

    Raises:
        ValueError: TANH / SIGN_BIT fused activations (no integer clamp exists for them).
    """
    if activation == 0:
        return qmin, qmax
    if activation == 1:  # RELU
        return max(qmin, quantize_f32(0.0, scale, zero_point)), qmax
    if activation == 2:  # RELU_N1_TO_1
        return (max(qmin, quantize_f32(-1.0, scale, zero_point)), min(qmax, quantize_f32(1.0, scale, zero_point)))
    if activation == 3:  # RELU6
        return (max(qmin, quantize_f32(0.0, scale, zero_point)), min(qmax, quantize_f32(6.0, scale, zero_point)))
    raise ValueError(f"fused activation {activation} has no integer form")


# ---- integer reference arithmetic (used by tests and by the generator's own checks) -----------------------------

def srdhm(a: int, b: int) -> int:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    q = abs(v) >> 31
    return q if v >= 0 else -q  # C division truncates toward zero


def rdbpot(x: int, exponent: int) -> int:
    """gemmlowp ``RoundingDivideByPOT``."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """``MultiplyByQuantizedMultiplier`` (double rounding, TFLite's default build)."""
    left, right = (shift, 0) if shift > 0 else (0, -shift)
    v = (x << left) & 0xFFFFFFFF
    v = v - (1 << 32) if v >= 1 << 31 else v
    return rdbpot(srdhm(v, multiplier), right)
