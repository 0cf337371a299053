"""Error-versus-discard characteristic (EDC) and its partial area under the curve (pAUC).

Follows ISO/IEC 29794-1 and Schlett et al. (IEEE TBIOM 2024): pair quality = min of the sample
qualities; match iff similarity ``s >= t``; ``t`` fixed once from ALL impostor scores; only genuine
comparisons are discarded, lowest quality first, equal qualities together; EDC value = FNMR of the
remaining genuine comparisons; pAUC = area on ``[0, limit]``, normalised by ``FNMR(0) * limit``.
O(n log n) in the genuine count, O(m) in the impostor count (O(m log m) for several FMRs at
once, ``edc_curves``); no Python loop over discard steps. The threshold-recomputing variant of
CR-FIQA's and MagFace's code, for comparison only, is in ``fiqa.core.edc_recomputed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fiqa.core.pairs import Pairs

log = logging.getLogger(__name__)

PairQualityRule = Literal["min", "mean", "product", "max"]
PAIR_QUALITY_RULES: tuple[str, ...] = ("min", "mean", "product", "max")


@dataclass(frozen=True, eq=False)
class EDCCurve:
    """An exact EDC step curve.

    The curve takes the value ``fnmr[k]`` on ``[fractions[k], fractions[k+1])`` (right-continuous
    steps, plot with ``drawstyle="steps-post"``). ``fractions`` is strictly ascending from 0.0 to
    1.0. For an empirical curve the last point is ``(1.0, 0.0)``: nothing remains, and the FNMR
    of an empty set is defined as 0 (the point has zero width, so it never changes a pAUC).

    Attributes:
        fractions: Discarded fraction of genuine comparisons after each distinct quality group.
        fnmr: FNMR of the remaining genuine comparisons at ``threshold``.
        threshold: Decision threshold ``t`` fixed from all impostor scores (match iff ``s >= t``).
        fmr: Target FMR used to choose ``threshold``.
        n_genuine: Number of genuine comparisons.
        n_impostor: Number of impostor comparisons.
    """

    fractions: NDArray[np.float64]
    fnmr: NDArray[np.float64]
    threshold: float
    fmr: float
    n_genuine: int
    n_impostor: int

    def __post_init__(self) -> None:
        fractions = np.array(self.fractions, dtype=np.float64)
        fnmr = np.array(self.fnmr, dtype=np.float64)
        if fractions.ndim != 1 or fractions.shape != fnmr.shape or fractions.size < 2:
            shapes = f"{fractions.shape} and {fnmr.shape}"
            raise ValueError(f"EDCCurve needs 1-D fractions, fnmr of equal length >= 2: {shapes}")
        if fractions[0] != 0.0 or fractions[-1] != 1.0 or not np.all(np.diff(fractions) > 0):
            raise ValueError("EDCCurve fractions must rise strictly from 0.0 to 1.0")
        if not np.all((fnmr >= 0.0) & (fnmr <= 1.0)):
            raise ValueError("EDCCurve fnmr values must lie in [0, 1]")
        for name, arr in (("fractions", fractions), ("fnmr", fnmr)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)


def _as_scores(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``values`` as a non-empty, finite, 1-D float64 array, or raise naming ``name``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; at least one comparison is needed")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.argmin(finite))
        hint = "drop those comparisons (e.g. pairs with NaN embeddings) before evaluating"
        raise ValueError(f"{name} has a non-finite value {arr[bad]} at index {bad}; {hint}")
    return arr


def _check_fraction(value: float, name: str, *, include_one: bool) -> None:
    if not (value > 0.0 and (value <= 1.0 if include_one else value < 1.0)):
        raise ValueError(f"{name} must lie in (0, 1{']' if include_one else ')'}, got {value!r}")


def pair_quality(
    quality_a: ArrayLike, quality_b: ArrayLike, how: PairQualityRule = "min"
) -> NDArray[np.float64]:
    """Combine the two sample qualities of each comparison into one pair quality.

    Args:
        quality_a: Quality of the first sample of each pair, shape ``(n,)``.
        quality_b: Quality of the second sample, shape ``(n,)``.
        how: ``"min"`` (the standard, ``min(qa, qb)``), ``"mean"`` (``(qa + qb) / 2``),
            ``"product"`` (``qa * qb``; only order-preserving for non-negative qualities) or
            ``"max"`` (``max(qa, qb)``; an optimistic reading, for ablations).

    Returns:
        Pair qualities, float64, shape ``(n,)``.

    Raises:
        ValueError: If ``how`` is unknown (the message names the option, ``eval.pair_quality``
            in the config) or the inputs are not finite 1-D arrays of equal length.
    """
    if how not in PAIR_QUALITY_RULES:
        rules = ", ".join(PAIR_QUALITY_RULES)
        raise ValueError(
            f"pair_quality: how must be one of {rules} (config key eval.pair_quality), got {how!r}"
        )
    qa = _as_scores(quality_a, "quality_a")
    qb = _as_scores(quality_b, "quality_b")
    if qa.shape != qb.shape:
        raise ValueError(f"quality_a and quality_b differ in length: {qa.size} vs {qb.size}")
    combine = {"min": np.minimum, "max": np.maximum, "product": np.multiply}
    return (qa + qb) / 2.0 if how == "mean" else combine[how](qa, qb)


def _max_false_matches(n_impostor: int, fmr: float) -> int:
    """Largest count ``c`` with ``c / n_impostor <= fmr`` (robust to rounding of ``fmr * n``)."""
    count = int(np.floor(fmr * n_impostor))
    if (count + 1) / n_impostor <= fmr:
        count += 1
    if count / n_impostor > fmr:
        count -= 1
    return count


def fmr_threshold(impostor_scores: ArrayLike, fmr: float) -> float:
    """Decision threshold at a target FMR, from all impostor scores (ISO/IEC 29794-1).

    The smallest ``t`` with ``#{s_imp >= t} / N_imp <= fmr``: with ``c`` the largest number of
    false matches allowed (``c / N_imp <= fmr``), every ``t`` up to the ``(c+1)``-th largest
    impostor score admits ``c + 1`` of them, so ``t`` is the next float above that score.
    A tie block at that score is never split (all of it lies below ``t``). Any ``t`` up to the
    ``c``-th largest score gives the same FMR but a higher FNMR; this is the operating point.
    O(N) via ``np.partition``.

    Args:
        impostor_scores: Similarity scores of all impostor (non-mated) comparisons.
        fmr: Target false match rate in ``(0, 1)``.

    Returns:
        The threshold ``t`` (match iff ``score >= t``).

    Raises:
        ValueError: If the scores are empty/non-finite or ``fmr`` is outside ``(0, 1)``.
    """
    imp = _as_scores(impostor_scores, "impostor_scores")
    _check_fraction(fmr, "fmr", include_one=False)
    # Ascending position of the (c + 1)-th largest score.
    k = imp.size - _max_false_matches(imp.size, fmr) - 1
    return float(np.nextafter(np.partition(imp, k)[k], np.inf))


def _threshold_from_sorted(ascending: NDArray[np.float64], fmr: float) -> float:
    """``fmr_threshold`` on impostor scores already sorted ascending (O(1))."""
    k = ascending.size - _max_false_matches(ascending.size, fmr) - 1
    return float(np.nextafter(ascending[k], np.inf))


def fmr_thresholds(impostor_scores: ArrayLike, fmrs: Sequence[float]) -> dict[float, float]:
    """``fmr_threshold`` at several target FMRs from one sort of the impostor scores.

    Args:
        impostor_scores: Similarity scores of all impostor comparisons.
        fmrs: Target FMRs, each in ``(0, 1)``.

    Returns:
        ``{fmr: threshold}`` in the order of ``fmrs``; identical to separate ``fmr_threshold``
        calls.

    Raises:
        ValueError: If ``fmrs`` is empty, an FMR is outside ``(0, 1)`` or the scores are invalid.
    """
    if len(fmrs) == 0:
        raise ValueError("fmrs is empty; give at least one target FMR, e.g. (1e-3,)")
    for fmr in fmrs:
        _check_fraction(fmr, "fmr", include_one=False)
    ascending = np.sort(_as_scores(impostor_scores, "impostor_scores"))
    return {float(fmr): _threshold_from_sorted(ascending, fmr) for fmr in fmrs}


def _genuine_order(
    genuine_scores: ArrayLike, genuine_pair_quality: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Genuine scores in ascending pair-quality order and the discard counts per step.

    The counts are 0 and the end (exclusive) of each tie group of equal quality.
    """
    gen = _as_scores(genuine_scores, "genuine_scores")
    quality = _as_scores(genuine_pair_quality, "genuine_pair_quality")
    if quality.shape != gen.shape:
        raise ValueError(f"genuine_pair_quality has {quality.size} values, not {gen.size}")
    order = np.argsort(quality, kind="stable")
    q_sorted = quality[order]
    group_ends = np.flatnonzero(q_sorted[1:] != q_sorted[:-1]) + 1
    return gen[order], np.concatenate(([0], group_ends, [gen.size]))


def _curve_at(
    sorted_gen: NDArray[np.float64],
    discarded: NDArray[np.int64],
    threshold: float,
    fmr: float,
    n_impostor: int,
) -> EDCCurve:
    """The EDC at a fixed ``threshold`` from ``_genuine_order``'s output (cumulative counts)."""
    n = sorted_gen.size
    cum_errors = np.concatenate(([0], np.cumsum(sorted_gen < threshold, dtype=np.int64)))
    remaining = n - discarded
    remaining_errors = cum_errors[-1] - cum_errors[discarded]
    fnmr = np.zeros(discarded.size, dtype=np.float64)
    np.divide(remaining_errors, remaining, out=fnmr, where=remaining > 0)
    return EDCCurve(discarded / n, fnmr, threshold, float(fmr), n, n_impostor)


def edc_at_threshold(
    genuine_scores: ArrayLike,
    genuine_pair_quality: ArrayLike,
    threshold: float,
    fmr: float,
    n_impostor: int,
) -> EDCCurve:
    """The EDC of genuine comparisons at a threshold already fixed from ``n_impostor`` impostor
    scores at ``fmr`` (e.g. a bootstrap draw of a benchmark's genuine pairs)."""
    sorted_gen, discarded = _genuine_order(genuine_scores, genuine_pair_quality)
    return _curve_at(sorted_gen, discarded, threshold, fmr, n_impostor)


def edc_curve(
    genuine_scores: ArrayLike,
    genuine_pair_quality: ArrayLike,
    impostor_scores: ArrayLike,
    fmr: float,
) -> EDCCurve:
    """Exact EDC step curve with a threshold fixed once from all impostor scores.

    Sort genuine comparisons by pair quality and cut after each distinct quality value
    (``np.unique``-style boundaries). After discarding the ``d_k`` lowest-quality comparisons
    (whole tie groups only):

    ``fractions[k] = d_k / n``,  ``fnmr[k] = (E - E_k) / (n - d_k)``

    where ``E = #{s_gen < t}`` and ``E_k`` is the number of errors among the discarded ones;
    ``fnmr = 0`` when ``d_k = n`` (nothing remains). The result does not depend on input order.

    Args:
        genuine_scores: Similarity scores of the genuine (mated) comparisons, shape ``(n,)``.
        genuine_pair_quality: Pair quality of each genuine comparison, shape ``(n,)``.
        impostor_scores: Similarity scores of all impostor comparisons, shape ``(m,)``.
        fmr: Target FMR in ``(0, 1)`` that fixes the threshold.

    Returns:
        The curve, one point per distinct pair-quality boundary plus the start ``(0, FNMR(0))``.

    Raises:
        ValueError: On empty, non-finite or mismatched inputs, or ``fmr`` outside ``(0, 1)``.
    """
    sorted_gen, discarded = _genuine_order(genuine_scores, genuine_pair_quality)
    imp = _as_scores(impostor_scores, "impostor_scores")
    return _curve_at(sorted_gen, discarded, fmr_threshold(imp, fmr), fmr, imp.size)


def edc_curves(
    genuine_scores: ArrayLike,
    genuine_pair_quality: ArrayLike,
    impostor_scores: ArrayLike,
    fmrs: Sequence[float],
) -> dict[float, EDCCurve]:
    """``edc_curve`` at several target FMRs, sharing one sort of each score set.

    Each curve has its own threshold fixed once from all impostor scores (``fmr_thresholds``);
    the genuine comparisons are sorted by pair quality once. The result equals separate
    ``edc_curve`` calls, value for value.

    Args:
        genuine_scores: Similarity scores of the genuine comparisons, shape ``(n,)``.
        genuine_pair_quality: Pair quality of each genuine comparison, shape ``(n,)``.
        impostor_scores: Similarity scores of all impostor comparisons, shape ``(m,)``.
        fmrs: Target FMRs, each in ``(0, 1)``.

    Returns:
        ``{fmr: curve}`` in the order of ``fmrs`` (keys are floats).

    Raises:
        ValueError: On invalid scores, an empty ``fmrs`` or an FMR outside ``(0, 1)``.
    """
    sorted_gen, discarded = _genuine_order(genuine_scores, genuine_pair_quality)
    imp = _as_scores(impostor_scores, "impostor_scores")
    thresholds = fmr_thresholds(imp, fmrs)
    return {
        fmr: _curve_at(sorted_gen, discarded, t, fmr, imp.size) for fmr, t in thresholds.items()
    }


def quality_curves(
    scores: NDArray[np.float64],
    pairs: Pairs,
    quality: ArrayLike,
    fmrs: Sequence[float],
    how: PairQualityRule = "min",
) -> dict[float, EDCCurve]:
    """EDC of a per-sample quality on comparison pairs: ``{fmr: curve}``.

    The one path from per-sample qualities to curves (evaluation matrix, validation pAUC).

    Args:
        scores: Comparison score of each pair, shape ``(len(pairs),)``.
        pairs: The pairs (genuine flags split the scores).
        quality: Quality of each sample the pairs index.
        fmrs: Target FMRs of the thresholds (fixed once from all impostor scores).
        how: Pair-quality rule (``pair_quality``).
    """
    q = np.asarray(quality, dtype=np.float64)
    g = pairs.genuine  # only genuine pairs are discarded: impostors' qualities are not needed
    genuine_quality = pair_quality(q[pairs.a[g]], q[pairs.b[g]], how=how)
    return edc_curves(scores[g], genuine_quality, scores[~g], fmrs)


def oracle_curve(genuine_scores: ArrayLike, impostor_scores: ArrayLike, fmr: float) -> EDCCurve:
    """EDC of the oracle quality: pair quality = the genuine score itself.

    Errors (the lowest genuine scores) are discarded first. With distinct genuine scores this is
    the lowest EDC any quality can reach at every discard fraction; tied scores form one group.
    """
    return edc_curve(genuine_scores, genuine_scores, impostor_scores, fmr)


def random_baseline(reference: EDCCurve | float) -> EDCCurve:
    """Expected EDC of a random quality: flat at ``FNMR(0)``.

    Discarding ``d`` of ``n`` comparisons at random leaves ``E (n - d) / n`` errors in
    expectation, so the expected FNMR is ``E / n = FNMR(0)`` for every fraction. Represented as
    ``fractions = [0, 1]``, ``fnmr = [FNMR(0), FNMR(0)]``: flat under both line and step plots,
    and its normalised pAUC is exactly 1.0 for every limit.

    Args:
        reference: An empirical curve (its ``fnmr[0]``, threshold and counts are copied) or
            ``FNMR(0)`` itself as a float in ``[0, 1]`` (threshold and fmr are then NaN).

    Returns:
        The two-point baseline curve.
    """
    if isinstance(reference, EDCCurve):
        fnmr0 = float(reference.fnmr[0])
        meta = (reference.threshold, reference.fmr, reference.n_genuine, reference.n_impostor)
    else:
        fnmr0 = float(reference)
        if not 0.0 <= fnmr0 <= 1.0:
            raise ValueError(f"reference FNMR(0) must lie in [0, 1], got {reference!r}")
        meta = (float("nan"), float("nan"), 0, 0)
    return EDCCurve(np.array([0.0, 1.0]), np.array([fnmr0, fnmr0]), *meta)


def pauc(curve: EDCCurve, limit: float, normalise: bool = True) -> float:
    """Partial area under the EDC step curve on ``[0, limit]``.

    ``area = sum_k fnmr[k] * (min(fractions[k+1], limit) - min(fractions[k], limit))``, exact for
    a limit that falls inside a step. With ``normalise=True`` the result is
    ``area / (FNMR(0) * limit)``: 1.0 = no better than random quality, lower is better.

    Rule for ``FNMR(0) == 0`` (no genuine errors at ``t``): the raw area is 0.0; the normalised
    value is undefined (no quality can improve on zero errors), so NaN is returned and a warning
    is logged. Aggregate with ``np.nanmean`` and report such benchmarks separately.

    Args:
        curve: An EDC curve (from ``edc_curve``, ``oracle_curve`` or ``random_baseline``).
        limit: Upper discard fraction in ``(0, 1]`` (0.2 and 0.3 in the reports).
        normalise: Divide by ``FNMR(0) * limit``.

    Returns:
        Raw or normalised partial area.

    Raises:
        ValueError: If ``limit`` is outside ``(0, 1]``.
    """
    _check_fraction(limit, "limit", include_one=True)
    clipped = np.minimum(curve.fractions, limit)
    area = float(np.dot(curve.fnmr[:-1], clipped[1:] - clipped[:-1]))
    if not normalise:
        return area
    fnmr0 = float(curve.fnmr[0])
    if fnmr0 == 0.0:
        msg = "FNMR(0) is 0 at threshold %.6g (n_genuine=%d, fmr=%g): pAUC@%g normalised is NaN"
        log.warning(msg, curve.threshold, curve.n_genuine, curve.fmr, limit)
        return float("nan")
    return area / (fnmr0 * limit)


def curve_values(curve: EDCCurve, grid: ArrayLike) -> NDArray[np.float64]:
    """Step-curve values at the requested discard fractions.

    ``value(x) = fnmr[k]`` with ``k = max{k : fractions[k] <= x}`` (right-continuous: at a
    boundary the value after that discard is returned). Vectorised with ``np.searchsorted``.

    Args:
        curve: An EDC curve.
        grid: Discard fractions in ``[0, 1]``, any shape.

    Returns:
        FNMR values, float64, same shape as ``grid``.

    Raises:
        ValueError: If a grid value is non-finite or outside ``[0, 1]``.
    """
    x = np.asarray(grid, dtype=np.float64)
    if not np.all(np.isfinite(x) & (x >= 0.0) & (x <= 1.0)):
        raise ValueError("grid values must be finite discard fractions in [0, 1]")
    idx = np.searchsorted(curve.fractions, x, side="right") - 1
    return np.asarray(curve.fnmr[idx], dtype=np.float64)
