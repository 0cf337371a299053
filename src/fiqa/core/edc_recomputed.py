"""EDC with the threshold RECOMPUTED after each discard step: for comparison only, not the standard.

CR-FIQA's (``ERC/erc.py``) and MagFace's (``eval/eval_quality/eval_quality.py``) public code
compute their error-versus-reject curves differently from ISO/IEC 29794-1 and Schlett et al.:

1. Genuine AND impostor pairs are ranked together by pair quality (min of the two) and the
   lowest fraction of ALL pairs is dropped; the x axis is that fraction of all pairs.
2. After each drop the threshold is derived again from the impostors of the surviving pairs,
   so removing a high-scoring low-quality impostor lowers ``t`` and the FNMR with it: part of
   the improvement credited to the quality method is then a change of operating point.

``edc_curve_recomputed_threshold`` reproduces points 1 and 2 exactly, and otherwise keeps this
package's rules so that only those two differences remain: the threshold rule of
``fmr_threshold`` (smallest ``t`` with FMR <= target; CR-FIQA takes the score whose FMR is
closest to the target, MagFace an index into the sorted impostors), match iff ``s >= t``
(CR-FIQA counts ``s > t`` as a match), tie groups of equal quality dropped together (both
codes split ties by sort position) and an exact step curve (both sample 20 fractions
0, 0.05, ..., 0.95). When no impostor survives, the FMR of the empty set is 0, so ``t = -inf``
and the FNMR is 0.

Per step the threshold needs an order statistic of a shrinking impostor set and the FNMR a
rank count in a shrinking genuine set. Both are answered for all steps at once by a wavelet
matrix over the scores in quality order: O((n + m) log(n + m)) numpy, looping over score bits
(about log2(m) iterations), never over discard steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fiqa.core.edc import EDCCurve, _as_scores, _check_fraction


@dataclass(frozen=True, eq=False)
class RecomputedThresholdEDC:
    """Result of ``edc_curve_recomputed_threshold``.

    Attributes:
        curve: The step curve. ``fractions`` = discarded fraction of ALL pairs (genuine and
            impostor), ``fnmr`` = FNMR of the surviving genuine pairs at that step's threshold;
            ``threshold`` = the step-0 threshold (equal to ``fmr_threshold`` of all impostors).
        thresholds: The recomputed threshold at each step, same length as ``curve.fnmr``
            (``-inf`` once no impostor survives).
    """

    curve: EDCCurve
    thresholds: NDArray[np.float64]


class _SuffixOrderStatistics:
    """Wavelet matrix over ints in ``[0, 2**bits)``: order statistics of suffixes ``values[s:]``.

    Level by level (highest bit first) the values are stably partitioned by that bit; prefix
    counts of zero bits map a range of one level to the ranges of the next. Each method answers
    many queries at once with one vectorised step per level.
    """

    def __init__(self, values: NDArray[np.int64]) -> None:
        self.size = values.size
        self.bits = max(1, int(values.max(initial=0)).bit_length())
        self.zero_prefix: list[NDArray[np.int64]] = []
        current = values
        for level in range(self.bits - 1, -1, -1):
            bit = (current >> level) & 1
            self.zero_prefix.append(np.concatenate(([0], np.cumsum(bit == 0, dtype=np.int64))))
            current = np.concatenate((current[bit == 0], current[bit == 1]))

    def _descend(
        self, lo: NDArray[np.int64], hi: NDArray[np.int64], right: NDArray[np.bool_], level: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Ranges ``[lo, hi)`` one level down, to the 1-side where ``right``; zeros in range."""
        prefix = self.zero_prefix[level]
        z_lo, z_hi = prefix[lo], prefix[hi]
        n_zeros = prefix[-1]
        new_lo = np.where(right, n_zeros + lo - z_lo, z_lo)
        new_hi = np.where(right, n_zeros + hi - z_hi, z_hi)
        return new_lo, new_hi, z_hi - z_lo

    def kth_smallest(
        self, starts: NDArray[np.int64], ks: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The ``k``-th smallest (0-based) of each ``values[start:]`` and how many are smaller.

        Needs ``0 <= k < size - start`` for every query.
        """
        lo, hi = starts.astype(np.int64), np.full(starts.shape, self.size, dtype=np.int64)
        k = ks.astype(np.int64)
        value, smaller = np.zeros_like(k), np.zeros_like(k)
        for level in range(self.bits):
            prefix = self.zero_prefix[level]
            zeros = prefix[hi] - prefix[lo]
            right = k >= zeros
            lo, hi, _ = self._descend(lo, hi, right, level)
            # Going to the 1-side skips the zeros: values that agree so far and are smaller.
            k = np.where(right, k - zeros, k)
            smaller = smaller + np.where(right, zeros, 0)
            value = (value << 1) | right
        return value, smaller

    def count_less(self, starts: NDArray[np.int64], xs: NDArray[np.int64]) -> NDArray[np.int64]:
        """Number of values below ``x`` in each ``values[start:]`` (any ``x >= 0``)."""
        lo, hi = starts.astype(np.int64), np.full(starts.shape, self.size, dtype=np.int64)
        x = np.minimum(xs.astype(np.int64), 1 << self.bits)
        count = np.zeros_like(x)
        for level in range(self.bits):
            right = ((x >> (self.bits - 1 - level)) & 1).astype(bool)
            lo, hi, zeros = self._descend(lo, hi, right, level)
            count = count + np.where(right, zeros, 0)
        # x == 2**bits (only reachable through the clip) exceeds every value.
        return np.where(x >= 1 << self.bits, self.size - starts, count)


def _dense_ranks(values: NDArray[np.float64], descending: bool) -> tuple[NDArray, NDArray]:
    """Distinct values (sorted) and each value's index among them."""
    distinct, ranks = np.unique(-values if descending else values, return_inverse=True)
    return (-distinct if descending else distinct), ranks.astype(np.int64)


def edc_curve_recomputed_threshold(
    genuine_scores: ArrayLike,
    genuine_pair_quality: ArrayLike,
    impostor_scores: ArrayLike,
    impostor_pair_quality: ArrayLike,
    fmr: float,
) -> RecomputedThresholdEDC:
    """EDC as CR-FIQA's and MagFace's code compute it: for comparison only, not the standard.

    All pairs are discarded by pair quality (lowest first, equal qualities together); after
    each step ``t_k`` = ``fmr_threshold`` of the surviving impostors and ``fnmr[k]`` = the
    fraction of surviving genuine pairs with ``s < t_k``; ``fractions[k]`` = discarded pairs /
    all pairs. See the module docstring for how this differs from ``edc_curve``.

    Args:
        genuine_scores: Similarity scores of the genuine comparisons, shape ``(n,)``.
        genuine_pair_quality: Pair quality of each genuine comparison, shape ``(n,)``.
        impostor_scores: Similarity scores of the impostor comparisons, shape ``(m,)``.
        impostor_pair_quality: Pair quality of each impostor comparison, shape ``(m,)``.
        fmr: Target FMR in ``(0, 1)``.

    Returns:
        The curve and the threshold of every step.

    Raises:
        ValueError: On empty, non-finite or mismatched inputs, or ``fmr`` outside ``(0, 1)``.
    """
    gen = _as_scores(genuine_scores, "genuine_scores")
    gen_q = _as_scores(genuine_pair_quality, "genuine_pair_quality")
    imp = _as_scores(impostor_scores, "impostor_scores")
    imp_q = _as_scores(impostor_pair_quality, "impostor_pair_quality")
    for name, quality, scores in (("genuine", gen_q, gen), ("impostor", imp_q, imp)):
        if quality.shape != scores.shape:
            msg = f"{name}_pair_quality has {quality.size} values, not {scores.size}"
            raise ValueError(msg)
    _check_fraction(fmr, "fmr", include_one=False)
    n, m = gen.size, imp.size

    # Steps: nothing discarded, then after each distinct quality of all pairs.
    gen_order, imp_order = np.argsort(gen_q, kind="stable"), np.argsort(imp_q, kind="stable")
    levels = np.unique(np.concatenate((gen_q, imp_q)))
    gen_gone = np.concatenate(([0], np.searchsorted(gen_q[gen_order], levels, side="right")))
    imp_gone = np.concatenate(([0], np.searchsorted(imp_q[imp_order], levels, side="right")))

    # Threshold per step: just above the (c+1)-th largest surviving impostor score, c the
    # false matches allowed among the survivors: fmr_threshold's rule.
    imp_desc, imp_rank = _dense_ranks(imp, descending=True)
    impostors = _SuffixOrderStatistics(imp_rank[imp_order])
    alive = imp_gone < m
    starts = np.where(alive, imp_gone, 0)
    # Largest count c with c / survivors <= fmr: edc._max_false_matches, vectorised.
    survivors = np.maximum(m - imp_gone, 1)
    allowed = np.floor(fmr * survivors).astype(np.int64)
    allowed += (allowed + 1) / survivors <= fmr
    allowed -= allowed / survivors > fmr
    allowed = np.where(alive, allowed, 0)
    boundary, _ = impostors.kth_smallest(starts, allowed)
    thresholds = np.where(alive, np.nextafter(imp_desc[boundary], np.inf), -np.inf)

    # FNMR per step: surviving genuine scores below t_k, as a rank count.
    gen_asc, gen_rank = _dense_ranks(gen, descending=False)
    genuines = _SuffixOrderStatistics(gen_rank[gen_order])
    below = np.searchsorted(gen_asc, thresholds, side="left")  # distinct values < t_k
    errors = genuines.count_less(gen_gone, below)
    remaining = n - gen_gone
    fnmr = np.zeros(levels.size + 1, dtype=np.float64)
    np.divide(errors, remaining, out=fnmr, where=remaining > 0)

    fractions = (gen_gone + imp_gone) / (n + m)
    curve = EDCCurve(fractions, fnmr, float(thresholds[0]), float(fmr), n, m)
    thresholds.setflags(write=False)
    return RecomputedThresholdEDC(curve, thresholds)
