"""Bootstrap intervals of pAUC: genuine pairs resampled by identity, threshold fixed."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa.core.edc import edc_curve, pauc
from fiqa.core.intervals import bootstrap_pauc

RNG = np.random.default_rng(0)
IDENTITY = np.arange(400) // 40  # 10 identities of 40 genuine pairs
# an identity's pairs share its offset: they are not independent draws
GENUINE = RNG.normal(0.4, 0.1, 400) + RNG.normal(0, 0.1, 10)[IDENTITY]
QUALITY = GENUINE + RNG.normal(0, 0.1, 400)  # informative
IMPOSTOR = RNG.normal(0.0, 0.1, 5000)
CURVE = edc_curve(GENUINE, QUALITY, IMPOSTOR, 1e-3)


def interval(clusters, resamples=200, seed=0):
    return bootstrap_pauc(GENUINE, QUALITY, clusters, CURVE, [0.3], resamples, seed)[0.3]


def test_one_identity_gives_the_point_value():
    # every draw takes the single identity, so every draw is the whole benchmark
    low, high = interval(np.zeros(400))
    assert low == high == pytest.approx(pauc(CURVE, 0.3))


def test_the_interval_holds_the_value_and_counts_identities_not_pairs():
    value = pauc(CURVE, 0.3)
    by_identity = interval(IDENTITY)
    by_pair = interval(np.arange(400))  # as if the 400 pairs were independent: too narrow
    assert by_identity[0] < value < by_identity[1] and by_pair[0] < value < by_pair[1]
    assert by_pair[1] - by_pair[0] < by_identity[1] - by_identity[0]


def test_seeded_and_none_without_resamples():
    clusters = np.arange(400) // 4
    assert interval(clusters, seed=3) == interval(clusters, seed=3) != interval(clusters, seed=4)
    assert all(np.isnan(interval(clusters, resamples=0)))
