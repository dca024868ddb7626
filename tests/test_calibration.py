"""Calibration metrics on synthetic probabilities whose ECE and Brier score are known."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib.metrics import (
    brier_score,
    calibration_error_of_curve,
    expected_calibration_error,
    reliability_curve,
)


def test_overconfident_model_has_the_gap_as_ece():
    # Everything at P(dog) = 0.9 but only half are dogs: one bin, gap 0.4.
    labels = np.array([0, 1] * 50)
    probs = np.full(100, 0.9)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.4)
    curve = reliability_curve(labels, probs)
    assert curve["count"].tolist() == [100]
    assert curve["mean_predicted"] == pytest.approx([0.9])
    assert curve["observed_frequency"] == pytest.approx([0.5])
    assert curve["bin_low"] == pytest.approx([13 / 15]) and curve["bin_high"] == pytest.approx([14 / 15])


def test_ece_weights_each_bin_by_its_share_of_images():
    # 30 images at 0.1 with no dog (gap 0.1), 10 at 0.7 all dogs (gap 0.3), 60 at 0.5 with
    # 30 dogs (gap 0): ECE = 0.3 * 0.1 + 0.1 * 0.3 + 0.6 * 0 = 0.06.
    probs = np.r_[np.full(30, 0.1), np.full(10, 0.7), np.full(60, 0.5)]
    labels = np.r_[np.zeros(30), np.ones(10), np.tile([0, 1], 30)]
    assert expected_calibration_error(labels, probs) == pytest.approx(0.06)
    assert reliability_curve(labels, probs)["count"].tolist() == [30, 60, 10]  # bins in order of p


def test_calibrated_model_has_ece_near_zero_and_brier_as_expected():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, 200_000)
    labels = (rng.uniform(0, 1, probs.size) < probs).astype(int)  # dog with probability p
    assert expected_calibration_error(labels, probs) < 0.01
    # E[(p - y)^2] = E[p(1 - p)] = 1/2 - 1/3 = 1/6 for p uniform on [0, 1].
    assert brier_score(labels, probs) == pytest.approx(1 / 6, abs=0.003)
    # The same labels with every probability pushed to 0 or 1: badly calibrated.
    assert expected_calibration_error(labels, np.round(probs)) == pytest.approx(0.25, abs=0.01)


def test_bin_edges_and_the_extremes():
    # p = 0 and p = 1 are in the first and last bins; p = 1/15 starts the second bin.
    probs = np.array([0.0, 1 / 15, 1.0])
    curve = reliability_curve(np.array([0, 0, 1]), probs)
    assert curve["bin_low"] == pytest.approx([0, 1 / 15, 14 / 15])
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0
    assert brier_score(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0
    assert brier_score(np.array([0, 1]), np.array([1.0, 0.0])) == 1.0
    assert brier_score(np.array([0, 1]), np.array([0.5, 0.5])) == 0.25


def test_bins_are_symmetric_so_swapping_the_classes_keeps_ece():
    rng = np.random.default_rng(1)
    probs = rng.beta(0.5, 0.5, 5000)
    labels = (rng.uniform(size=5000) < probs**2).astype(int)
    assert expected_calibration_error(1 - labels, 1 - probs) == pytest.approx(
        expected_calibration_error(labels, probs), abs=1e-9)


def test_more_bins_and_the_curve_agree_with_the_metric():
    rng = np.random.default_rng(2)
    probs = rng.uniform(size=1000)
    labels = rng.integers(0, 2, 1000)
    curve = reliability_curve(labels, probs, bins=10)
    assert len(curve["count"]) == 10 and curve["count"].sum() == 1000
    assert calibration_error_of_curve(curve) == pytest.approx(expected_calibration_error(labels, probs, bins=10))
    # Random labels: observed stays near 0.5 while the predictions span [0, 1].
    assert expected_calibration_error(labels, probs, bins=10) == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize(
    "labels, probs, message",
    [
        ([0, 1], [0.5], "differ in length"),
        ([], [], "empty"),
        ([0, 2], [0.5, 0.5], "labels must be 0"),
        ([0, 1], [0.5, 1.2], "probabilities in"),
        ([0, 1], [0.5, np.nan], "probabilities in"),
    ],
)
def test_bad_inputs_are_refused(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(np.array(labels), np.array(probs))
