"""The 0-100 calibration (training percentile) on hand-computable cases."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa.quality.calibration import Calibration


def test_percentile_knots_map_raw_to_0_100_by_hand():
    calibration = Calibration.fit(np.arange(101.0))  # knots = 0, 1, ..., 100
    np.testing.assert_array_equal(calibration([0.0, 42.4, 42.6, 100.0]), [0, 42, 43, 100])
    np.testing.assert_array_equal(calibration([-5.0, 250.0]), [0, 100])  # outside: clamped
    assert calibration.n_faces == 101
    assert np.isnan(calibration([np.nan])[0])


def test_tied_knots_take_their_mean_percentile():
    # 50 faces at 1.0 and 51 at 2.0: percentiles 0..49 sit at 1.0 (mean 24.5), 50..100 at 2.0
    calibration = Calibration.fit([1.0] * 50 + [2.0] * 51)
    np.testing.assert_array_equal(calibration([1.0, 1.5, 2.0]), [24, 50, 75])  # 24.5 -> 24
    assert Calibration.fit([3.0, 3.0])([3.0, 0.0])[0] == 50  # a constant model: the middle


def test_calibration_is_monotone_and_never_reorders_faces():
    rng = np.random.default_rng(0)
    calibration = Calibration.fit(rng.gamma(2.0, size=5000))
    raw = np.sort(rng.normal(2.0, 3.0, size=20_000))
    scaled = calibration(raw)
    assert (np.diff(scaled) >= 0).all()  # sorted raw -> sorted 0-100: no inversion
    assert set(np.unique(scaled)) <= set(range(101))
    training = calibration(rng.gamma(2.0, size=20_000))  # the same distribution: uniform
    assert abs(np.median(training) - 50) <= 2 and abs(np.mean(training < 10) - 0.1) < 0.01


def test_round_trip_and_bad_knots():
    calibration = Calibration.fit(np.linspace(-1, 1, 300))
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert Calibration.from_json(None) is None and Calibration.from_dict(None) is None
    with pytest.raises(ValueError, match="101 finite knots"):
        Calibration((0.0, 1.0), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibration(tuple(np.arange(101.0)[::-1]), 101)
    with pytest.raises(ValueError, match="no finite raw score"):
        Calibration.fit([np.nan])
