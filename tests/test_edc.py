"""EDC curve, fixed FMR threshold and pAUC: hand-computed cases and a brute-force reference."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from fiqa.core.edc import (
    EDCCurve,
    curve_values,
    edc_curve,
    edc_curves,
    fmr_threshold,
    fmr_thresholds,
    oracle_curve,
    pair_quality,
    pauc,
    random_baseline,
)
from fiqa.core.edc_recomputed import edc_curve_recomputed_threshold

# Tiny case. Impostors (10): at fmr=0.25 at most 2 false matches (2/10 <= 0.25 < 3/10).
# t = just above 0.45 (the 3rd largest) -> #{imp >= t} = 2 (0.50, 0.60), FMR 0.2; t = 0.45
# would give 3 -> 0.3 > 0.25.
TINY_IMPOSTOR = [0.10, 0.20, 0.25, 0.30, 0.30, 0.35, 0.40, 0.45, 0.50, 0.60]
# Genuine pairs: errors are scores < t (p0, p2); p5 = 0.50 is a match (>= t). FNMR(0) = 2/6.
#   pair   p0    p1    p2    p3    p4    p5
TINY_SCORES = [0.30, 0.70, 0.45, 0.80, 0.90, 0.50]
TINY_QUALITY = [0.4, 0.1, 0.6, 0.4, 0.8, 0.6]
# Quality groups ascending: 0.1 {p1}, 0.4 {p0 err, p3}, 0.6 {p2 err, p5}, 0.8 {p4}.
#   k=0: discard 0      -> x = 0,   FNMR = 2/6
#   k=1: discard p1     -> x = 1/6, FNMR = 2/5
#   k=2: + p0, p3       -> x = 3/6, FNMR = 1/3  (p2 of p2, p5, p4)
#   k=3: + p2, p5       -> x = 5/6, FNMR = 0/1
#   k=4: + p4           -> x = 1,   FNMR = 0 (empty remainder, by definition)
TINY_FRACTIONS = [0.0, 1 / 6, 3 / 6, 5 / 6, 1.0]
TINY_FNMR = [2 / 6, 2 / 5, 1 / 3, 0.0, 0.0]


def tiny_curve() -> EDCCurve:
    return edc_curve(TINY_SCORES, TINY_QUALITY, TINY_IMPOSTOR, fmr=0.25)


def brute_threshold(impostor: np.ndarray, fmr: float) -> float:
    """Smallest t with #{imp >= t} / N <= fmr, by a plain loop over every candidate float where
    the count can change: the scores themselves and the next float above each."""
    values = impostor.tolist()
    candidates = sorted({*values, *(float(np.nextafter(v, np.inf)) for v in values)})
    for t in candidates:
        if np.count_nonzero(impostor >= t) / impostor.size <= fmr:
            return float(t)
    raise AssertionError("the last candidate always qualifies")


def brute_edc(
    scores: np.ndarray, quality: np.ndarray, impostor: np.ndarray, fmr: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-step reference: discard every pair with quality <= each distinct value in turn."""
    t = brute_threshold(impostor, fmr)
    fractions, fnmr = [0.0], [np.count_nonzero(scores < t) / scores.size]
    for q in sorted(set(quality.tolist())):
        keep = quality > q
        fractions.append(1.0 - np.count_nonzero(keep) / scores.size)
        remaining = scores[keep]
        fnmr.append(np.count_nonzero(remaining < t) / remaining.size if remaining.size else 0.0)
    return np.array(fractions), np.array(fnmr), t


def test_tiny_case_threshold_and_curve_by_hand() -> None:
    curve = tiny_curve()
    assert curve.threshold == np.nextafter(0.45, np.inf)
    assert (curve.fmr, curve.n_genuine, curve.n_impostor) == (0.25, 6, 10)
    np.testing.assert_allclose(curve.fractions, TINY_FRACTIONS, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve.fnmr, TINY_FNMR, rtol=0, atol=1e-15)
    assert curve.fractions.dtype == np.float64


def test_tiny_case_pauc_by_hand() -> None:
    curve = tiny_curve()
    # limit 0.2 falls inside the step [1/6, 1/2): 1/3 * 1/6 + 2/5 * (0.2 - 1/6) = 31/450.
    assert pauc(curve, 0.2, normalise=False) == pytest.approx(31 / 450, rel=1e-12)
    # normalised by FNMR(0) * limit = 1/3 * 0.2 = 1/15 -> 31/30 (worse than random).
    assert pauc(curve, 0.2) == pytest.approx(31 / 30, rel=1e-12)
    # limit 0.3, still inside that step: 1/18 + 2/5 * (0.3 - 1/6) = 1/18 + 4/75 = 49/450.
    assert pauc(curve, 0.3, normalise=False) == pytest.approx(49 / 450, rel=1e-12)
    assert pauc(curve, 0.3) == pytest.approx((49 / 450) / (0.1), rel=1e-12)
    # limit on a boundary (1/2): 1/18 + 2/5 * 1/3 = 17/90.
    assert pauc(curve, 0.5, normalise=False) == pytest.approx(17 / 90, rel=1e-12)
    # full range: 17/90 + 1/3 * 1/3 + 0 * 1/6 = 0.3; normalised 0.3 / (1/3) = 0.9.
    assert pauc(curve, 1.0, normalise=False) == pytest.approx(0.3, rel=1e-12)
    assert pauc(curve, 1.0) == pytest.approx(0.9, rel=1e-12)


def test_curve_values_is_right_continuous_step() -> None:
    grid = [0.0, 0.1, 1 / 6, 0.2, 0.5, 0.9, 1.0]
    values = curve_values(tiny_curve(), grid)
    np.testing.assert_allclose(values, [2 / 6, 2 / 6, 2 / 5, 2 / 5, 1 / 3, 0.0, 0.0], atol=1e-15)
    with pytest.raises(ValueError, match="grid"):
        curve_values(tiny_curve(), [0.5, 1.5])


def test_tied_qualities_are_discarded_together() -> None:
    # One quality for all pairs: a single group, nothing can be discarded partially.
    curve = edc_curve([0.1, 0.9, 0.2, 0.8], [0.5] * 4, TINY_IMPOSTOR, fmr=0.25)
    np.testing.assert_array_equal(curve.fractions, [0.0, 1.0])
    np.testing.assert_array_equal(curve.fnmr, [0.5, 0.0])
    # -0.0 and 0.0 are the same quality.
    curve = edc_curve([0.1, 0.9, 0.7], [-0.0, 0.0, 1.0], TINY_IMPOSTOR, fmr=0.25)
    np.testing.assert_allclose(curve.fractions, [0.0, 2 / 3, 1.0])


def test_permutation_invariance_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(0.6, 0.2, 500), 2)
    quality = np.round(rng.random(500), 1)
    impostor = np.round(rng.normal(0.0, 0.2, 2000), 2)
    reference = edc_curve(scores, quality, impostor, fmr=1e-2)
    for _ in range(5):
        perm, perm_imp = rng.permutation(500), rng.permutation(2000)
        shuffled = edc_curve(scores[perm], quality[perm], impostor[perm_imp], fmr=1e-2)
        np.testing.assert_array_equal(shuffled.fractions, reference.fractions)
        np.testing.assert_array_equal(shuffled.fnmr, reference.fnmr)
        assert shuffled.threshold == reference.threshold


def test_threshold_is_the_smallest_one_meeting_the_target_fmr() -> None:
    # the threshold rule's worked example: 996 impostors at 0.1 plus 0.5, 0.6, 0.7, 0.8 at FMR 1e-3 allow one
    # false match; every t in (0.7, 0.8] gives FMR 0.001, and the smallest is just above 0.7
    # (not 0.8, the smallest impostor score that qualifies, which raises the FNMR).
    imp = np.concatenate([np.full(996, 0.1), [0.5, 0.6, 0.7, 0.8]])
    assert fmr_threshold(imp, 1e-3) == np.nextafter(0.7, np.inf)
    assert np.count_nonzero(imp >= fmr_threshold(imp, 1e-3)) == 1
    # Allowed 2 false matches of 5 (2/5 <= 0.4); the tie block {0.3 x3} cannot be split, so
    # t moves just above it and the achieved FMR is 0, not 3/5.
    assert fmr_threshold([0.1, 0.2, 0.3, 0.3, 0.3], 0.4) == np.nextafter(0.3, np.inf)
    # [0.1, 0.2, 0.3, 0.3, 0.4] at 0.4: the 3rd largest is 0.3 (a tie with the 2nd), so t is
    # just above it and only 0.4 matches (1/5); t = 0.3 would give 3/5.
    assert fmr_threshold([0.1, 0.2, 0.3, 0.3, 0.4], 0.4) == np.nextafter(0.3, np.inf)
    # Exactly on target: 3 false matches allowed, the 4th largest is 0.2: t just above 0.2
    # gives 3/5 = 0.6.
    assert fmr_threshold([0.1, 0.2, 0.3, 0.3, 0.4], 0.6) == np.nextafter(0.2, np.inf)
    # fmr * N < 1: no false match allowed -> just above the maximum.
    assert fmr_threshold([0.1, 0.5, 0.2], 1e-3) == np.nextafter(0.5, np.inf)


def test_threshold_matches_brute_force_on_random_ties() -> None:
    rng = np.random.default_rng(1)
    for trial in range(40):
        imp = np.round(rng.normal(0, 1, rng.integers(1, 300)), 1)
        fmr = float(rng.choice([1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 0.9]))
        t = fmr_threshold(imp, fmr)
        assert t == brute_threshold(imp, fmr), trial
        assert np.count_nonzero(imp >= t) / imp.size <= fmr


def test_threshold_survives_rounding_of_fmr_times_n() -> None:
    imp = np.arange(22, dtype=np.float64)
    # 15/22 * 22 rounds below 15, yet 15 false matches meet the target: t just above 6 (the
    # 16th largest), so the 15 scores 7..21 match.
    just_above_6 = float(np.nextafter(6.0, np.inf))
    assert fmr_threshold(imp, 15 / 22) == just_above_6 == brute_threshold(imp, 15 / 22)
    # Just below 5/6, fmr * 6 rounds up to 5.0, yet only 4 false matches are allowed: t just
    # above 1 (the 5th largest of 0..5).
    below = float(np.nextafter(5 / 6, 0.0))
    assert below * 6 == 5.0
    just_above_1 = float(np.nextafter(1.0, np.inf))
    assert fmr_threshold(imp[:6], below) == just_above_1 == brute_threshold(imp[:6], below)


def test_threshold_is_fixed_once_not_recomputed_after_discarding() -> None:
    # The high impostor scores 0.85 and 0.9 come from low-quality pairs. At fmr=0.2 over all
    # 5 impostors one false match is allowed -> t just above 0.85 (the 2nd largest).
    impostor = np.array([0.1, 0.2, 0.3, 0.85, 0.9])
    impostor_quality = np.array([0.5, 0.6, 0.7, 0.1, 0.1])
    scores = np.array([0.5, 0.6, 0.95, 0.97])
    quality = np.array([0.1, 0.5, 0.6, 0.7])
    curve = edc_curve(scores, quality, impostor, fmr=0.2)
    assert curve.threshold == np.nextafter(0.85, np.inf)
    # After discarding q=0.1: remaining [0.6, 0.95, 0.97] at that t -> FNMR 1/3.
    assert curve.fractions[1] == 0.25
    assert curve.fnmr[1] == pytest.approx(1 / 3, rel=1e-15)
    # The CR-FIQA/MagFace variant would drop the q=0.1 impostors too and recompute t on
    # [0.1, 0.2, 0.3] (no false match allowed -> t just above 0.3), giving FNMR 0.
    recomputed_t = fmr_threshold(impostor[impostor_quality > 0.1], 0.2)
    assert recomputed_t == np.nextafter(0.3, np.inf)
    assert np.count_nonzero(scores[quality > 0.1] < recomputed_t) == 0


def test_matches_brute_force_reference_on_random_data_with_ties() -> None:
    rng = np.random.default_rng(2)
    for _ in range(10):
        n = int(rng.integers(1, 400))
        scores = np.round(rng.normal(0.5, 0.25, n), 2)
        quality = np.round(rng.random(n), 1)
        impostor = np.round(rng.normal(0.1, 0.2, int(rng.integers(1, 1000))), 2)
        fmr = float(rng.choice([1e-3, 1e-2, 0.1]))
        curve = edc_curve(scores, quality, impostor, fmr)
        fractions, fnmr, t = brute_edc(scores, quality, impostor, fmr)
        assert curve.threshold == t
        np.testing.assert_allclose(curve.fractions, fractions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(curve.fnmr, fnmr, rtol=0, atol=1e-12)
        # pAUC against a plain loop over steps.
        for limit in (0.2, 0.3, 0.55):
            area = sum(
                f * max(0.0, min(hi, limit) - min(lo, limit))
                for lo, hi, f in zip(fractions[:-1], fractions[1:], fnmr[:-1], strict=True)
            )
            assert pauc(curve, limit, normalise=False) == pytest.approx(area, abs=1e-12)


def test_random_baseline_normalises_to_exactly_one() -> None:
    curve = tiny_curve()
    baseline = random_baseline(curve)
    np.testing.assert_array_equal(baseline.fractions, [0.0, 1.0])
    np.testing.assert_array_equal(baseline.fnmr, [1 / 3, 1 / 3])
    assert baseline.threshold == curve.threshold
    for limit in (0.2, 0.3, 0.25, 0.7, 1.0):
        assert pauc(baseline, limit) == 1.0
        assert pauc(baseline, limit, normalise=False) == pytest.approx(limit / 3, rel=1e-15)
    assert pauc(random_baseline(0.07), 0.3) == 1.0
    with pytest.raises(ValueError, match="FNMR"):
        random_baseline(1.5)


def test_random_quality_averages_to_normalised_one() -> None:
    # Expected FNMR after random discarding is FNMR(0), so the mean normalised pAUC is ~1.
    rng = np.random.default_rng(3)
    scores = rng.normal(0.6, 0.2, 2000)
    impostor = rng.normal(0.0, 0.15, 5000)
    values = [pauc(edc_curve(scores, rng.random(2000), impostor, 1e-3), 0.2) for _ in range(200)]
    assert abs(np.mean(values) - 1.0) < 0.02


def test_oracle_is_lowest_for_distinct_scores() -> None:
    rng = np.random.default_rng(4)
    scores = rng.normal(0.5, 0.25, 1000)  # continuous: distinct almost surely
    impostor = rng.normal(0.0, 0.2, 5000)
    oracle = oracle_curve(scores, impostor, 1e-2)
    grid = np.linspace(0.0, 0.99, 200)
    for quality in (rng.random(1000), scores + rng.normal(0, 0.1, 1000), -scores):
        other = edc_curve(scores, quality, impostor, 1e-2)
        assert np.all(curve_values(oracle, grid) <= curve_values(other, grid) + 1e-15)
        for limit in (0.2, 0.3):
            assert pauc(oracle, limit) <= pauc(other, limit)
    # The oracle discards exactly the errors first: FNMR reaches 0 at x = FNMR(0).
    assert curve_values(oracle, oracle.fnmr[0]) == 0.0


def test_zero_fnmr_rule(caplog: pytest.LogCaptureFixture) -> None:
    curve = edc_curve([0.8, 0.9, 0.7], [0.1, 0.2, 0.3], TINY_IMPOSTOR, fmr=0.25)
    assert curve.fnmr[0] == 0.0
    assert pauc(curve, 0.2, normalise=False) == 0.0
    with caplog.at_level(logging.WARNING, logger="fiqa.core.edc"):
        assert math.isnan(pauc(curve, 0.2))
    assert "FNMR(0) is 0" in caplog.text


def test_pair_quality_rules() -> None:
    qa, qb = [0.2, 0.9, 0.5], [0.4, 0.3, 0.5]
    np.testing.assert_array_equal(pair_quality(qa, qb), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(pair_quality(qa, qb, how="mean"), [0.3, 0.6, 0.5])
    np.testing.assert_allclose(pair_quality(qa, qb, how="product"), [0.08, 0.27, 0.25])
    np.testing.assert_array_equal(pair_quality(qa, qb, how="max"), [0.4, 0.9, 0.5])
    with pytest.raises(ValueError, match=r"how must be one of min, mean, product, max .*pair_q"):
        pair_quality(qa, qb, how="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in length"):
        pair_quality(qa, qb[:2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"genuine_pair_quality": [0.1, 0.2]}, "genuine_pair_quality has 2 values"),
        ({"genuine_scores": [], "genuine_pair_quality": []}, "genuine_scores is empty"),
        ({"impostor_scores": []}, "impostor_scores is empty"),
        ({"genuine_scores": [0.1, np.nan, 0.3]}, "genuine_scores has a non-finite value"),
        ({"genuine_pair_quality": [0.1, 0.2, np.inf]}, "genuine_pair_quality has a non-finite"),
        ({"impostor_scores": [0.1, np.nan]}, "impostor_scores has a non-finite"),
        ({"genuine_scores": [[0.1, 0.2, 0.3]]}, "genuine_scores must be a 1-D"),
        ({"fmr": 0.0}, "fmr must lie in"),
        ({"fmr": 1.0}, "fmr must lie in"),
        ({"fmr": float("nan")}, "fmr must lie in"),
    ],
)
def test_edc_curve_input_validation(kwargs: dict, message: str) -> None:
    args = {
        "genuine_scores": [0.1, 0.2, 0.3],
        "genuine_pair_quality": [0.5, 0.6, 0.7],
        "impostor_scores": [0.0, 0.1],
        "fmr": 0.1,
    }
    with pytest.raises(ValueError, match=message):
        edc_curve(**(args | kwargs))


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.01, float("nan")])
def test_pauc_rejects_bad_limit(limit: float) -> None:
    with pytest.raises(ValueError, match="limit must lie in"):
        pauc(tiny_curve(), limit)


def test_edc_curve_object_validates_its_shape() -> None:
    with pytest.raises(ValueError, match="rise strictly"):
        EDCCurve(np.array([0.0, 0.5, 0.5, 1.0]), np.zeros(4), 0.5, 0.1, 4, 10)
    with pytest.raises(ValueError, match="equal length"):
        EDCCurve(np.array([0.0, 1.0]), np.zeros(3), 0.5, 0.1, 4, 10)
    curve = tiny_curve()
    with pytest.raises(ValueError, match="read-only"):
        curve.fnmr[0] = 0.0


def test_curve_values_keeps_the_grid_shape() -> None:
    grid = np.array([[0.0, 0.5], [5 / 6, 1.0]])
    values = curve_values(tiny_curve(), grid)
    assert values.shape == (2, 2)
    np.testing.assert_allclose(values, [[2 / 6, 1 / 3], [0.0, 0.0]], atol=1e-15)


# --- several FMRs at once -------------------------------------------------------------------


def test_edc_curves_tiny_case_by_hand() -> None:
    curves = edc_curves(TINY_SCORES, TINY_QUALITY, TINY_IMPOSTOR, fmrs=(0.25, 0.1))
    assert list(curves) == [0.25, 0.1]
    np.testing.assert_allclose(curves[0.25].fnmr, TINY_FNMR, atol=1e-15)
    # fmr=0.1: one false match of 10 allowed; the 2nd largest impostor is 0.50, so t is just
    # above it. Errors (s < t): p0 0.30, p2 0.45, p5 0.50 -> FNMR(0) = 3/6.
    #   k=1 drop p1 (0.70 ok) -> 3/5; k=2 drop p0 err, p3 -> p2, p5 of {p2, p5, p4} = 2/3;
    #   k=3 drop p2, p5 -> 0/1; k=4 -> empty, 0.
    tight = curves[0.1]
    assert tight.threshold == np.nextafter(0.50, np.inf)
    assert tight.fmr == 0.1
    np.testing.assert_allclose(tight.fractions, TINY_FRACTIONS, atol=1e-15)
    np.testing.assert_allclose(tight.fnmr, [3 / 6, 3 / 5, 2 / 3, 0.0, 0.0], atol=1e-15)
    # pAUC@0.2 raw: 1/2 * 1/6 + 3/5 * (0.2 - 1/6) = 1/12 + 1/50 = 31/300; / (1/2 * 0.2) = 31/30.
    assert pauc(tight, 0.2, normalise=False) == pytest.approx(31 / 300, rel=1e-12)
    assert pauc(tight, 0.2) == pytest.approx(31 / 30, rel=1e-12)


def test_edc_curves_equal_separate_calls() -> None:
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(0.5, 0.2, 3000), 2)
    quality = np.round(rng.random(3000), 2)
    impostor = np.round(rng.normal(0.0, 0.15, 20000), 3)
    fmrs = (1e-2, 1e-3, 1e-4, 0.3)
    together = edc_curves(scores, quality, impostor, fmrs)
    assert list(together) == list(fmrs)
    for fmr in fmrs:
        alone = edc_curve(scores, quality, impostor, fmr)
        np.testing.assert_array_equal(together[fmr].fractions, alone.fractions)
        np.testing.assert_array_equal(together[fmr].fnmr, alone.fnmr)
        assert together[fmr].threshold == alone.threshold
        assert (together[fmr].fmr, together[fmr].n_impostor) == (fmr, 20000)


def test_fmr_thresholds_rule_on_random_ties() -> None:
    # Achieved FMR never above the target, and the threshold is the smallest such candidate:
    # the next lower distinct impostor score would admit too many false matches.
    rng = np.random.default_rng(6)
    for trial in range(30):
        imp = np.round(rng.normal(0, 1, int(rng.integers(1, 500))), 1)
        fmrs = [1e-3, 0.01, 0.05, 0.2, 0.5, 0.9]
        for fmr, t in fmr_thresholds(imp, fmrs).items():
            assert t == fmr_threshold(imp, fmr) == brute_threshold(imp, fmr), trial
            assert np.count_nonzero(imp >= t) / imp.size <= fmr
            lower = imp[imp < t]
            if lower.size:
                assert np.count_nonzero(imp >= lower.max()) / imp.size > fmr
    with pytest.raises(ValueError, match="fmrs is empty"):
        fmr_thresholds(TINY_IMPOSTOR, [])
    with pytest.raises(ValueError, match="fmr must lie in"):
        edc_curves(TINY_SCORES, TINY_QUALITY, TINY_IMPOSTOR, fmrs=(1e-3, 1.0))


def test_edc_curves_independent_of_input_order() -> None:
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(0.6, 0.2, 400), 2)
    quality = np.round(rng.random(400), 1)
    impostor = np.round(rng.normal(0.0, 0.2, 3000), 2)
    reference = edc_curves(scores, quality, impostor, (1e-2, 1e-3))
    perm, perm_imp = rng.permutation(400), rng.permutation(3000)
    shuffled = edc_curves(scores[perm], quality[perm], impostor[perm_imp], (1e-2, 1e-3))
    for fmr, curve in reference.items():
        np.testing.assert_array_equal(shuffled[fmr].fractions, curve.fractions)
        np.testing.assert_array_equal(shuffled[fmr].fnmr, curve.fnmr)


def test_oracle_below_random_baseline_on_synthetic_scores() -> None:
    rng = np.random.default_rng(8)
    scores = rng.normal(0.5, 0.2, 4000)
    impostor = rng.normal(0.0, 0.15, 20000)
    for fmr, curve in edc_curves(scores, rng.random(4000), impostor, (1e-2, 1e-3)).items():
        oracle = oracle_curve(scores, impostor, fmr)
        for limit in (0.2, 0.3):
            assert pauc(random_baseline(curve), limit) == 1.0
            assert pauc(curve, limit) == pytest.approx(1.0, abs=0.1)
            # The oracle drops errors first: FNMR(x) = (f0 - x) / (1 - x) up to x = f0, then 0,
            # whose area on [0, L] is L' + (1 - f0) ln(1 - L') with L' = min(L, f0).
            f0, cut = curve.fnmr[0], min(limit, curve.fnmr[0])
            area = cut + (1 - f0) * np.log1p(-cut)
            assert pauc(oracle, limit, normalise=False) == pytest.approx(area, abs=1e-3)
            assert pauc(oracle, limit) < pauc(curve, limit) - 0.1


# --- the recomputed-threshold variant (CR-FIQA / MagFace code), for comparison only ---------

# Genuine pairs g0..g4 and impostor pairs i0..i4 with pair qualities; i0 is a high-scoring
# impostor from a low-quality pair, tied in quality with g0 (0.1).
RC_GENUINE = [0.30, 0.60, 0.70, 0.95, 0.45]
RC_GENUINE_Q = [0.1, 0.3, 0.5, 0.7, 0.85]
RC_IMPOSTOR = [0.90, 0.10, 0.20, 0.40, 0.50]
RC_IMPOSTOR_Q = [0.1, 0.4, 0.6, 0.8, 0.9]


def test_recomputed_threshold_variant_by_hand() -> None:
    # Fixed (the standard): fmr=0.25 over 5 impostors allows 1 false match -> t just above
    # 0.5 (the 2nd largest) forever. Errors: 0.30, 0.45; discarding genuine pairs only:
    fixed = edc_curve(RC_GENUINE, RC_GENUINE_Q, RC_IMPOSTOR, fmr=0.25)
    assert fixed.threshold == np.nextafter(0.5, np.inf)
    np.testing.assert_allclose(fixed.fractions, [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-15)
    np.testing.assert_allclose(fixed.fnmr, [2 / 5, 1 / 4, 1 / 3, 1 / 2, 1.0, 0.0], atol=1e-15)

    # Recomputed: all 10 pairs dropped by quality, g0 and i0 together (tie at 0.1); t is just
    # above the (c+1)-th largest surviving impostor (">x" = nextafter(x, inf)).
    #  step  dropped          x    surviving impostors   allowed  t          genuine left  FNMR
    #  0     -                0    .9 .1 .2 .4 .5        1        >0.5       all 5 (2 err) 2/5
    #  1     g0, i0           0.2  .1 .2 .4 .5           1        >0.4       .6 .7 .95 .45  0
    #  2     g1               0.3  same                  1        >0.4       .7 .95 .45     0
    #  3     i1               0.4  .2 .4 .5              0        >0.5       same           1/3
    #  4     g2               0.5  same                  0        >0.5       .95 .45        1/2
    #  5     i2               0.6  .4 .5                 0        >0.5       same           1/2
    #  6     g3               0.7  same                  0        >0.5       .45            1
    #  7     i3               0.8  .5                    0        >0.5       same           1
    #  8     g4               0.9  same                  0        >0.5       none           0
    #  9     i4               1.0  none                  -        -inf       none           0
    result = edc_curve_recomputed_threshold(
        RC_GENUINE, RC_GENUINE_Q, RC_IMPOSTOR, RC_IMPOSTOR_Q, fmr=0.25
    )
    curve = result.curve
    np.testing.assert_allclose(curve.fractions, [0, *np.arange(2, 11) / 10], atol=1e-15)
    expected_fnmr = [2 / 5, 0.0, 0.0, 1 / 3, 1 / 2, 1 / 2, 1.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(curve.fnmr, expected_fnmr, atol=1e-15)
    above_5, above_4 = np.nextafter(0.5, np.inf), np.nextafter(0.4, np.inf)
    assert result.thresholds.tolist() == [above_5, above_4, above_4] + [above_5] * 6 + [-np.inf]
    assert curve.threshold == fixed.threshold == above_5
    assert (curve.n_genuine, curve.n_impostor, curve.fmr) == (5, 5, 0.25)
    # pAUC@0.3: fixed 0.4 * 0.2 + 0.25 * 0.1 = 0.105; recomputed 0.4 * 0.2 + 0 * 0.1 = 0.08.
    # Normalised by 0.4 * 0.3 = 0.12: 0.875 vs 0.667: dropping one impostor looks like a gain.
    assert pauc(fixed, 0.3, normalise=False) == pytest.approx(0.105, rel=1e-12)
    assert pauc(curve, 0.3, normalise=False) == pytest.approx(0.08, rel=1e-12)
    assert pauc(curve, 0.3) == pytest.approx(0.08 / 0.12, rel=1e-12)


def brute_recomputed(
    scores: np.ndarray, quality: np.ndarray, impostor: np.ndarray, imp_quality: np.ndarray, fmr
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step reference for the recomputed variant: filter, re-threshold, count."""
    total = scores.size + impostor.size
    fractions, fnmr, thresholds = [], [], []
    cuts = [-np.inf, *sorted(set(quality.tolist()) | set(imp_quality.tolist()))]
    for q in cuts:
        keep, keep_imp = quality > q, imp_quality > q
        t = fmr_threshold(impostor[keep_imp], fmr) if keep_imp.any() else -np.inf
        left = scores[keep]
        fractions.append(1.0 - (keep.sum() + keep_imp.sum()) / total)
        fnmr.append(np.count_nonzero(left < t) / left.size if left.size else 0.0)
        thresholds.append(t)
    return np.array(fractions), np.array(fnmr), np.array(thresholds)


def test_recomputed_threshold_matches_brute_force_and_input_order() -> None:
    rng = np.random.default_rng(9)
    for _ in range(60):
        n, m = int(rng.integers(1, 80)), int(rng.integers(1, 120))
        scores, impostor = (
            np.round(rng.normal(0.5, 0.25, n), 1),
            np.round(rng.normal(0, 0.25, m), 1),
        )
        quality, imp_quality = np.round(rng.random(n), 1), np.round(rng.random(m), 1)
        fmr = float(rng.choice([1e-3, 0.05, 0.25, 0.5, 0.9]))
        result = edc_curve_recomputed_threshold(scores, quality, impostor, imp_quality, fmr)
        fractions, fnmr, thresholds = brute_recomputed(scores, quality, impostor, imp_quality, fmr)
        np.testing.assert_allclose(result.curve.fractions, fractions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(result.curve.fnmr, fnmr, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(result.thresholds, thresholds)
        perm, perm_imp = rng.permutation(n), rng.permutation(m)
        shuffled = edc_curve_recomputed_threshold(
            scores[perm], quality[perm], impostor[perm_imp], imp_quality[perm_imp], fmr
        )
        np.testing.assert_array_equal(shuffled.curve.fnmr, result.curve.fnmr)
        np.testing.assert_array_equal(shuffled.thresholds, result.thresholds)


def test_recomputed_threshold_validates_inputs() -> None:
    with pytest.raises(ValueError, match="impostor_pair_quality has 1 values, not 5"):
        edc_curve_recomputed_threshold(RC_GENUINE, RC_GENUINE_Q, RC_IMPOSTOR, [0.1], 0.25)
    with pytest.raises(ValueError, match="fmr must lie in"):
        edc_curve_recomputed_threshold(RC_GENUINE, RC_GENUINE_Q, RC_IMPOSTOR, RC_IMPOSTOR_Q, 1.0)
