"""edge_asc.metrics: the one softmax, clip posterior and macro accuracy, with their empty-input behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_asc.metrics import clip_posterior, macro_accuracy, softmax


def test_softmax_is_stable_float32_and_sums_to_one():
    p = softmax(np.array([[1000.0, 1000.0 + np.log(3.0)], [0.0, 0.0]]))
    assert p.dtype == np.float32 and p.shape == (2, 2)
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(softmax(np.array([[0.0, 1.0], [0.0, 1.0]]), axis=0), 0.5)


def test_softmax_of_an_empty_array_is_an_empty_array_of_the_same_shape():
    for shape in ((0, 3), (2, 0), (0,)):
        out = softmax(np.zeros(shape))
        assert out.shape == shape and out.dtype == np.float32


def test_clip_posterior_is_the_mean_window_posterior():
    np.testing.assert_allclose(clip_posterior(np.array([[0.0, 0.0], [math.log(3), 0.0]])), [0.625, 0.375], rtol=1e-6)
    empty = clip_posterior(np.zeros((0, 4)))
    assert empty.shape == (4,) and np.isnan(empty).all()


def test_macro_accuracy_averages_the_classes_present():
    y = np.array([0, 0, 1, 2, 2])
    assert macro_accuracy(np.array([0, 1, 1, 1, 0]), y) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert macro_accuracy(y, y, 4) == 1.0  # class 3 has no clips: left out, not counted as 0
    assert macro_accuracy(np.array([0, 0, 1, 1, 1]), y, 2) == pytest.approx((1.0 + 1.0) / 2)  # class 2 out of range


def test_macro_accuracy_of_no_clips_is_nan_and_lengths_must_match():
    assert math.isnan(macro_accuracy(np.zeros(0, int), np.zeros(0, int), 3))
    assert math.isnan(macro_accuracy([], []))
    with pytest.raises(ValueError, match="same length"):
        macro_accuracy(np.zeros(3, int), np.zeros(2, int))
