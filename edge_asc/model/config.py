"""Mini-SegNet configuration and named presets. Standard library only (no torch), so the report/fit tools can use it.

Architecture (Shao et al., EURASIP JASMP 2024, "Mini-SegNet"), as built by :func:`edge_asc.model.build_model`:

=============  ==========================================================================================
block          layers (all convolutions are ``kernel`` = 2x3 (mel x time), stride 1, 'same' zero padding)
=============  ==========================================================================================
Conv_block1    conv Cin->c1, *first norm* (MixupNorm / BN / IN), ReLU               -> ``pre1``; max-pool ``pool``
Conv_block2    conv c1->c2, BN, ReLU; conv c2->c2, BN, ReLU                         -> ``pre2``; max-pool ``pool``
DeConv_block1  unpool (mask of pool 2) ; conv c2->c2, BN, ReLU; conv c2->c1, BN, ReLU
DeConv_block2  unpool (mask of pool 1) ; conv c1->c1, *last norm*, ReLU
head           GAP over (mel, time) -> [N, c1] (or over time and gap_bands mel bands -> [N, c1 * gap_bands])
               (+ event extraction -> [N, topk], concatenated -> [N, c1 * gap_bands + topk])
classifier     dense u1, ReLU, dropout; dense u2, ReLU, dropout; dense n_classes (logits)
=============  ==========================================================================================

``c1, c2 = round(64 * width), round(128 * width)``. Six convolutions in all.

The paper's text leaves some choices open; they are resolved as follows, which gives the ``paper`` preset 374,218
trainable parameters (``count_params``) against the paper's 478,218 (the readings considered, and why none matches
exactly: ``docs/model-design.md``):

- *Decoder widths*: DeConv_block1 ends at c1 channels, because SegNet unpooling reuses the c1-channel mask of pool 1.
- *Dense widths*: not given in the paper; 256 and 128 here.
- *Parameters counted*: trainable ones only (BatchNorm's running statistics are buffers); the instance norm is affine.
- *Biases*: every convolution and dense layer has one (the Keras default).
- *Pooling*: the unpooling zero-pads the remainder the pooling dropped (``paper``: 133 = 3 x 44 + 1 frames), as
  ``MaxUnpool2d(output_size=...)`` does.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

CONFIG_SCHEMA_VERSION = 1

#: Scale statistics of the instance norms (see ``edge_asc.model.layers._mixup_instance_norm``).
NORM_STATS = ("std", "mad")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class MiniSegNetConfig:
    """A Mini-SegNet variant. Input: normalised features float32[N, in_channels, n_mels, n_frames] (NCHW);
    output: logits float32[N, n_classes]."""

    in_channels: int = 1
    """feature channels (1 = log-mel, 3 = log-mel + delta + delta-delta); must equal the front end's channels."""
    n_mels: int = 64
    """mel bins (input height H)."""
    n_frames: int = 61
    """frames per model window (input width W); the training crop length."""
    n_classes: int = 10
    """output classes."""
    width: float = 1.0
    """channel width multiplier applied to ``base_channels``."""
    base_channels: tuple[int, int] = (64, 128)
    """channels of Conv_block1 and Conv_block2 at width 1 (paper: 64, 128)."""
    kernel: tuple[int, int] = (2, 3)
    """convolution kernel (mel, time)."""
    pool: tuple[int, int] = (2, 3)
    """max-pool / unpool factor (mel, time); kernel == stride. Paper: 2x3."""
    unpool: str = "mask"
    """'mask': SegNet unpooling without indices (nearest-upsample x mask of the pooling argmax positions);
    'soft': the same with a soft mask ``clamp(1 + unpool_softness * (pre - window max), 0, 1)`` (1 at the maximum,
    falling to 0 for values ``1 / unpool_softness`` below it: int8 noise moves it a little instead of moving the
    value to another cell); 'nearest': plain nearest-neighbour upsampling."""
    unpool_softness: float = 4.0
    """slope of the 'soft' unpooling mask (per activation unit); larger is closer to 'mask'."""
    norm: str = "mixup"
    """normalisation of the first encoder and last decoder conv: 'mixup' (MixupNorm), 'bn' or 'in'."""
    mixup_lambda: float = 0.1
    """MixupNorm lambda in [0, 1]: y = lambda * x + (1 - lambda) * InstanceNorm(x) (paper best: 0.1)."""
    norm_stat: str = "std"
    """scale statistic of the instance norms ('in', 'mixup'): 'std' (textbook; the default, so checkpoints written
    before this field existed load unchanged) or 'mad' (mean absolute deviation x sqrt(pi/2): no squares, no SQRT;
    the int8-exportable form every preset uses, which TFLite Micro can run; see ``edge_asc.model.layers``)."""
    head: str = "events"
    """'gap': global average pooling only; 'events': GAP + event extraction (top-k frequent argmax channels / C)."""
    gap_bands: int = 1
    """frequency bands kept by the global average pooling: 1 = the paper's GAP over (mel, time) -> [N, c1];
    B > 1 averages over time and over B equal mel bands -> [N, c1 * B] (keeps coarse spectral position, which a
    translation-invariant conv stack + GAP otherwise has to infer from padding effects)."""
    topk: int = 4
    """event extraction: how many most frequent channel indices (paper: 4); ignored for head 'gap'."""
    dense_units: tuple[int, int] = (256, 128)
    """units of the two hidden dense layers."""
    dropout: float = 0.3
    """dropout probability after each hidden dense layer, in [0, 1)."""
    act_bound: float | None = None
    """upper bound of the convolution blocks' ReLUs (``min(max(x, 0), act_bound)``; 6 is ReLU6), or None for plain
    ReLU. A bound caps the range the int8 model calibrates for each activation, so its step is at most
    ``act_bound / 255`` instead of being set by rare outliers (see ``docs/int8-fidelity.md``). Only 6 is a fused
    activation in TFLite (RELU6); another bound adds MINIMUM/MAXIMUM ops after int8 outputs already quantised over
    their whole range."""
    int8_native: bool = False
    """write the MixupNorm, the SegNet unpooling and the event block with ops that have int8 kernels in TFLite Micro,
    Vela and the Edge TPU compiler (no DIV, ABS, EQUAL, LESS, CAST, MINIMUM; see ``edge_asc.model.layers``), so the
    full-int8 export has no float or bool tensor. Every preset sets it; False (the default) keeps the reference
    formulation that checkpoints written before this field existed were trained with."""
    schema_version: int = CONFIG_SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("base_channels", "kernel", "pool", "dense_units"):
            v = getattr(self, name)
            _check(isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) and i >= 1 for i in v),
                   f"{name} must be two positive integers, got {v!r}")
            object.__setattr__(self, name, tuple(int(i) for i in v))
        for name in ("in_channels", "n_mels", "n_frames", "n_classes"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                   f"{name} must be a positive integer, got {v!r}")
        _check(self.n_classes >= 2, f"n_classes must be >= 2, got {self.n_classes}")
        _check(isinstance(self.width, (int, float)) and 0 < self.width <= 8,
               f"width must be in (0, 8], got {self.width!r}")
        object.__setattr__(self, "width", float(self.width))
        _check(self.unpool in ("mask", "soft", "nearest"),
               f"unpool must be 'mask', 'soft' or 'nearest', got {self.unpool!r}")
        _check(isinstance(self.unpool_softness, (int, float)) and 0 < float(self.unpool_softness) < 1e6,
               f"unpool_softness must be a positive number, got {self.unpool_softness!r}")
        object.__setattr__(self, "unpool_softness", float(self.unpool_softness))
        _check(self.norm in ("mixup", "bn", "in"), f"norm must be 'mixup', 'bn' or 'in', got {self.norm!r}")
        _check(0.0 <= float(self.mixup_lambda) <= 1.0, f"mixup_lambda must be in [0, 1], got {self.mixup_lambda!r}")
        object.__setattr__(self, "mixup_lambda", float(self.mixup_lambda))
        _check(self.norm_stat in NORM_STATS, f"norm_stat must be 'std' or 'mad', got {self.norm_stat!r}")
        _check(self.head in ("gap", "events"), f"head must be 'gap' or 'events', got {self.head!r}")
        _check(isinstance(self.gap_bands, int) and 1 <= self.gap_bands <= self.n_mels,
               f"gap_bands must be an integer in [1, n_mels={self.n_mels}], got {self.gap_bands!r}")
        _check(isinstance(self.topk, int) and self.topk >= 1, f"topk must be a positive integer, got {self.topk!r}")
        if self.head == "events":
            _check(self.topk <= self.channels[0],
                   f"topk={self.topk} exceeds the {self.channels[0]} channels the event block ranks: "
                   "lower topk or raise width")
        bound = self.act_bound
        _check(bound is None or (isinstance(bound, (int, float)) and not isinstance(bound, bool)
                                 and 0 < float(bound) < 1e6),
               f"act_bound must be None or a positive number, got {self.act_bound!r}")
        if self.act_bound is not None:
            object.__setattr__(self, "act_bound", float(self.act_bound))
        _check(isinstance(self.int8_native, bool), f"int8_native must be true or false, got {self.int8_native!r}")
        _check(not (self.int8_native and self.norm in ("mixup", "in") and self.norm_stat != "mad"),
               "int8_native instance norms need norm_stat='mad' (the 'std' statistic squares int8 deviations)")
        _check(0.0 <= float(self.dropout) < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        _check(self.schema_version == CONFIG_SCHEMA_VERSION,
               f"model config schema {self.schema_version} is not supported (expected {CONFIG_SCHEMA_VERSION})")
        h, w = self.feature_sizes[-1]
        _check(h >= 1 and w >= 1,
               f"input {self.n_mels}x{self.n_frames} is too small for two {self.pool[0]}x{self.pool[1]} poolings")

    # ---- derived ----------------------------------------------------------------------------------------------
    @property
    def channels(self) -> tuple[int, int]:
        """(c1, c2): channels of Conv_block1 and Conv_block2 after the width multiplier (each >= 1)."""
        return tuple(max(1, round(c * self.width)) for c in self.base_channels)  # type: ignore[return-value]

    @property
    def feature_sizes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(H, W) of the input, after pool 1, after pool 2 (floor division, as ``MaxPool2d`` does)."""
        ph, pw = self.pool
        s0 = (self.n_mels, self.n_frames)
        s1 = (s0[0] // ph, s0[1] // pw)
        s2 = (s1[0] // ph, s1[1] // pw)
        return s0, s1, s2

    @property
    def head_features(self) -> int:
        """Width of the head's output vector (c1 * gap_bands, plus topk for the event head)."""
        return self.channels[0] * self.gap_bands + (self.topk if self.head == "events" else 0)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW input shape for batch 1."""
        return (1, self.in_channels, self.n_mels, self.n_frames)

    # ---- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("base_channels", "kernel", "pool", "dense_units"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MiniSegNetConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config field(s) {unknown}: written by a newer edge-asc?")
        kw = dict(d)
        for k in ("base_channels", "kernel", "pool", "dense_units"):
            if k in kw and isinstance(kw[k], list):
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def replace(self, **changes: Any) -> MiniSegNetConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    """A named model configuration plus the front-end preset (``edge_asc.spec.PRESETS`` key) it expects."""

    name: str
    config: MiniSegNetConfig
    frontend: str
    """key of ``edge_asc.spec.PRESETS`` that produces this model's input."""
    description: str = ""


#: The wearable configuration, shared by ``micro`` (its own front end) and ``micro-64`` (the ``edge`` one).
_MICRO = MiniSegNetConfig(in_channels=1, n_mels=40, n_frames=31, n_classes=10, width=0.125, pool=(2, 2), unpool="soft",
                          unpool_softness=4.0, norm="mixup", mixup_lambda=0.1, norm_stat="mad", head="events", topk=4,
                          act_bound=6.0, gap_bands=8, dense_units=(32, 32), dropout=0.2, int8_native=True)

#: Named presets (``edge-asc train --preset NAME[:field=value,...]``, see :func:`resolve_preset`).
#: ``paper``: the paper's model on the ``paper`` front end (3 x 256 mels x 400 frames, 2x3 pooling).
#: ``paper-half``: the paper's model at width 0.5.
#: ``edge``: within the DCASE budget (<= 128,000 params, <= 30 M MACs per 1-s input) on the ``edge`` front end
#: (1 x 64 mels x 61 frames = 1 s): width 0.25, 2x3 pooling, dense 64/32; GAP over 8 mel bands (``gap_bands=8``:
#: with one global average the network must infer spectral position from padding effects); soft SegNet unpooling
#: and ReLU6 (``act_bound=6``, fused into the int8 convolutions and ADDs) so that int8 noise moves values a little
#: instead of moving them to another cell, and rare outliers do not set the int8 ranges.
#: ``micro``: ``edge`` at width 0.125 with 2x2 pooling (Ethos-U upsamples by 2, 4 or 8 only) on the ``micro``
#: front end (40 mels x 31 frames of 32 ms = 1 s), for a Cortex-M4 wearable's RAM and duty cycle.
#: ``micro-64``: ``micro`` on the ``edge`` front end (64 mels x 61 frames of 16 ms; ``micro`` before it moved to its
#: own front end, the preset of the measurements in docs/ that say so).
#: ``edge-gap``: ``edge`` with GAP head and BN (a simpler, export-easiest baseline).
#: The measurements behind these choices: ``docs/model-design.md`` and ``docs/int8-fidelity.md``.
MODEL_PRESETS: dict[str, ModelPreset] = {
    "paper": ModelPreset(
        name="paper", frontend="paper",
        config=MiniSegNetConfig(in_channels=3, n_mels=256, n_frames=400, n_classes=10, width=1.0,
                                pool=(2, 3), unpool="mask", norm="mixup", mixup_lambda=0.1, norm_stat="mad",
                                head="events", topk=4,
                                dense_units=(256, 128), dropout=0.3, int8_native=True),
        description="Mini-SegNet as in the paper: 3x256x400 input, 64/128 maps, MixupNorm 0.1, event block k=4",
    ),
    "paper-half": ModelPreset(
        name="paper-half", frontend="paper",
        config=MiniSegNetConfig(in_channels=3, n_mels=256, n_frames=400, n_classes=10, width=0.5,
                                pool=(2, 3), norm_stat="mad", dense_units=(128, 64), int8_native=True),
        description="the paper's model at width 0.5",
    ),
    "edge": ModelPreset(
        name="edge", frontend="edge",
        config=MiniSegNetConfig(in_channels=1, n_mels=64, n_frames=61, n_classes=10, width=0.25,
                                pool=(2, 3), unpool="soft", unpool_softness=4.0, norm="mixup", mixup_lambda=0.1,
                                norm_stat="mad", head="events", topk=4, act_bound=6.0,
                                gap_bands=8, dense_units=(64, 32), dropout=0.2, int8_native=True),
        description="1-s window on the 'edge' front end (16 kHz, 64 mels); fits the DCASE 128 K params / 30 M MACs "
                    "budget",
    ),
    "micro": ModelPreset(
        name="micro", frontend="micro", config=_MICRO,
        description="wearable class (Cortex-M4F, 256 KiB RAM): 'edge' at width 0.125 with 2x2 pooling (Ethos-U "
                    "maps 2x upsampling only) on the 'micro' front end (40 mels, 32-ms hop)",
    ),
    "micro-64": ModelPreset(
        name="micro-64", frontend="edge", config=_MICRO.replace(n_mels=64, n_frames=61),
        description="'micro' on the 'edge' front end (64 mels, 16-ms hop): three times the work per second of "
                    "'micro'; for Cortex-M4 parts above 100 MHz",
    ),
    "edge-gap": ModelPreset(
        name="edge-gap", frontend="edge",
        config=MiniSegNetConfig(in_channels=1, n_mels=64, n_frames=61, n_classes=10, width=0.25,
                                pool=(2, 3), unpool="mask", norm="bn", head="gap", gap_bands=8,
                                dense_units=(64, 32), dropout=0.2),
        description="'edge' with BatchNorm and a GAP head",
    ),
}


def model_preset(name: str) -> MiniSegNetConfig:
    """The :class:`MiniSegNetConfig` of the named preset; :class:`ConfigError` listing valid names otherwise."""
    return get_preset(name).config


def get_preset(name: str) -> ModelPreset:
    """The named :class:`ModelPreset` (config + front-end preset name)."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}: choose one of {sorted(MODEL_PRESETS)}") from None


# ---- preset strings ------------------------------------------------------------------------------------------------
#: Fields a preset string cannot set (the config's format version is not a model choice).
_UNSETTABLE = ("schema_version",)
_INT = re.compile(r"[+-]?[0-9]+")
_UINT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z0-9_.-]+")


def _settable_fields() -> dict[str, Any]:
    """Settable field name -> resolved type hint, in :class:`MiniSegNetConfig` field order."""
    hints = typing.get_type_hints(MiniSegNetConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(MiniSegNetConfig) if f.name not in _UNSETTABLE}


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``float | None`` -> (float, True); ``int`` -> (int, False)."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _parse_value(name: str, hint: Any, text: str) -> Any:
    """The value of field ``name`` (type ``hint``) written as ``text`` (see :func:`resolve_preset` for the forms)."""
    kind, optional = _split_optional(hint)
    if optional and text == "none":
        return None
    if kind is bool and text in ("true", "false"):
        return text == "true"
    if kind is int and _INT.fullmatch(text):
        return int(text)
    if kind is float and _FLOAT.fullmatch(text):
        return float(text)
    if typing.get_origin(kind) is tuple:
        n = len(typing.get_args(kind))
        parts = text.split("x")
        if len(parts) == n and all(_UINT.fullmatch(p) for p in parts):
            return tuple(int(p) for p in parts)
    if kind is str and _WORD.fullmatch(text):
        return text
    if kind is bool:
        want = "true or false"
    elif kind is int:
        want = "an integer, e.g. 64"
    elif kind is float:
        want = "a number, e.g. 0.5"
    elif typing.get_origin(kind) is tuple:
        want = "integers joined by 'x', e.g. " + "x".join(["2", "3", "4"][:len(typing.get_args(kind))])
    else:
        want = "a word, e.g. mask"
    raise ConfigError(f"{name}={text!r} is not {want}" + (" (or none)" if optional else ""))


def _format_value(v: Any) -> str:
    """The preset-string form of a field value; :func:`_parse_value` reads it back to the same value."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        s = repr(v)  # shortest text that reads back to the same float
        return s.removesuffix(".0")
    if isinstance(v, (tuple, list)):
        return "x".join(str(int(i)) for i in v)
    return str(v)


def split_preset(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``NAME[:field=value,...]`` into the preset name and the typed field values it sets (not yet validated
    as a config: :func:`resolve_preset` does that).

    Raises:
        ConfigError: an unknown preset name, an unknown or repeated field, an item that is not ``field=value``, or a
            value that does not have its field's form. The message is one line naming the valid choices.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty model preset: give NAME or NAME:field=value,... with NAME one of "
                          f"{sorted(MODEL_PRESETS)}")
    name, sep, rest = text.strip().partition(":")
    name = name.strip()
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}: choose one of {sorted(MODEL_PRESETS)} "
                          "(optionally followed by :field=value,...)")
    settable = _settable_fields()
    fields: dict[str, Any] = {}
    if not sep:
        return name, fields
    if not rest.strip():
        raise ConfigError(f"model preset {text!r} has nothing after ':': give field=value pairs, e.g. "
                          f"{name}:width=0.5,pool=2x3")
    for item in rest.split(","):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not (eq and key and value):
            raise ConfigError(f"model preset {text!r}: {item.strip()!r} is not field=value (e.g. width=0.5,pool=2x3)")
        if key not in settable:
            raise ConfigError(f"model preset {text!r}: unknown field {key!r}: choose from {list(settable)}")
        if key in fields:
            raise ConfigError(f"model preset {text!r}: field {key!r} is given twice")
        try:
            fields[key] = _parse_value(key, settable[key], value)
        except ConfigError as exc:
            raise ConfigError(f"model preset {text!r}: {exc}") from None
    return name, fields


def resolve_preset(text: str) -> ModelPreset:
    """The :class:`ModelPreset` described by ``NAME[:field=value,field=value,...]``: the named preset of
    :data:`MODEL_PRESETS` with the listed :class:`MiniSegNetConfig` fields replaced.

    Values are written by the field's type: integers (``n_mels=48``), numbers (``width=0.5625``, ``act_bound=6``),
    pairs of integers joined by ``x`` (``pool=2x3``, ``dense_units=64x32``), words (``unpool=soft``), and ``none`` for
    an optional number (``act_bound=none``). This is the form ``edge-asc fit`` prints (:func:`format_preset`), so
    ``resolve_preset(format_preset(name, cfg)).config == cfg``. ``schema_version`` cannot be set.

    The result's ``name`` is the canonical string :func:`format_preset` writes for its config (just ``NAME`` when
    nothing changes); its ``frontend`` is the named preset's front-end key. The overrides resolve against the
    presets of this edge-asc version; a checkpoint records the resolved config itself, not the string. The front end
    that feeds a changed ``n_mels`` / ``in_channels`` is :func:`edge_asc.spec.frontend_for_model`.

    Raises:
        ConfigError: everything :func:`split_preset` raises, and a config that does not validate (e.g.
            ``edge:n_frames=5``, too short for two 2x3 poolings), each as one line naming the problem.
    """
    name, fields = split_preset(text)
    base = MODEL_PRESETS[name]
    try:
        cfg = base.config.replace(**fields)
    except ConfigError as exc:
        raise ConfigError(f"model preset {text.strip()!r}: {exc}") from None
    canonical = format_preset(name, cfg)
    return ModelPreset(name=canonical, config=cfg, frontend=base.frontend,
                       description=(base.description if canonical == name
                                    else f"'{name}' with {canonical[len(name) + 1:]}"))


def format_preset(base: str, config: MiniSegNetConfig) -> str:
    """The preset string of ``config`` relative to the named preset ``NAME`` of ``base`` (``NAME`` or
    ``NAME:...``; only the name counts): ``NAME:field=value,...`` listing, in :class:`MiniSegNetConfig` field order,
    every field where ``config`` differs from that preset's config, or just ``NAME`` when none does.
    :func:`resolve_preset` reads it back to an equal config.

    Raises:
        ConfigError: an unknown preset name, or a config of another schema version.
    """
    name, _ = split_preset(base.partition(":")[0])
    ref = MODEL_PRESETS[name].config
    if config.schema_version != ref.schema_version:
        raise ConfigError(f"a schema {config.schema_version} config has no preset string (this edge-asc writes "
                          f"schema {ref.schema_version})")
    items = [f"{k}={_format_value(getattr(config, k))}" for k in _settable_fields()
             if getattr(config, k) != getattr(ref, k)]
    return f"{name}:{','.join(items)}" if items else name
