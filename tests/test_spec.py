"""FrontendSpec and ModelCard: validation with helpful messages, JSON round trips, derived sizes."""

from __future__ import annotations

import dataclasses

import pytest

from edge_asc.errors import ConfigError
from edge_asc.spec import PRESETS, TAU_LABELS, FrontendSpec, ModelCard, QuantParams, frontend_preset


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"sample_rate": 100}, "sample_rate"),
        ({"win_length": 1024}, r"win_length must be an integer in \[1, n_fft=512\]"),
        ({"hop_length": 0}, "hop_length"),
        ({"fmax": 9000.0}, r"fmax <= sample_rate/2 = 8000.0"),
        ({"deltas": 1}, "deltas must be 0 or 2"),
        ({"delta_width": 4}, "odd"),
        ({"norm_std": (0.0,)}, "norm_std"),
        ({"window": "kaiser"}, "window"),
        ({"deltas": 2, "norm_mean": (1.0, 2.0)}, "1 or 3 values"),
    ],
)
def test_frontend_spec_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        FrontendSpec(**kw)


def test_frontend_spec_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        FrontendSpec(16000)  # type: ignore[misc]
    s = FrontendSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_mels = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    s = PRESETS[name].replace(norm_mean=(-30.0,), norm_std=(12.5,))
    assert FrontendSpec.from_json(s.to_json()) == s
    assert s.feature_hash() == PRESETS[name].feature_hash()  # normalisation does not change features
    assert s.spec_hash() != PRESETS[name].spec_hash()


def test_unknown_fields_and_presets_are_errors():
    with pytest.raises(ConfigError, match="unknown FrontendSpec field"):
        FrontendSpec.from_dict({"sample_rate": 16000, "bogus": 1})
    with pytest.raises(ConfigError, match="choose one of"):
        frontend_preset("nope")


def test_frames_and_samples_are_inverse():
    for s in PRESETS.values():
        for frames in (1, 10, 61, 400):
            n = s.samples_for_frames(frames)
            assert s.n_frames(n) == frames and s.n_frames(n - 1) == frames - 1


def test_model_card_round_trip_and_derived_fields():
    card = ModelCard(
        frontend=PRESETS["paper"], window_frames=400,
        input_quant=QuantParams(dtype="int8", scale=0.05, zero_point=-3),
        output_quant=QuantParams(dtype="int8", scale=0.1, zero_point=0),
        model_preset="paper", model_config={"width": 1.0}, param_count=478_218,
    )
    back = ModelCard.from_json(card.to_json())
    assert back == card
    assert card.input_shape == (1, 256, 400, 3)
    assert card.window_seconds == pytest.approx((2048 + (399 + 8) * 1024) / 44100)
    assert card.labels == TAU_LABELS


def test_model_card_rejects_other_schema_versions_and_garbage():
    d = ModelCard().to_dict()
    d["schema_version"] = 99
    with pytest.raises(ConfigError, match="schema version 99"):
        ModelCard.from_dict(d)
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelCard.from_json(b"\xff{")
    with pytest.raises(ConfigError, match="duplicate labels"):
        ModelCard(labels=("a", "a"))
