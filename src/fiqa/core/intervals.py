"""Bootstrap intervals of the EDC's pAUC: how much a cell would move on other identities.

A pAUC rests on the genuine pairs that fail at the fixed threshold; on a small benchmark a
handful of them decide it. The interval resamples the benchmark's *identities* with replacement
(the genuine pairs of an identity go together, since they share faces) and recomputes the pAUC
on the drawn genuine pairs, with the comparison threshold kept where the protocol fixed it (from
all impostor pairs). The percentile interval of the resampled values is reported.

Every method of a cell is resampled with the same draws (seeded), so their intervals are
comparable: where two methods' values fall inside each other's interval, the benchmark cannot
tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fiqa.core.edc import EDCCurve, edc_at_threshold, pauc


@dataclass
class Bootstrap:
    """How ``evaluate`` draws its pAUC intervals (``eval.bootstrap``).

    Attributes:
        resamples: Draws of the identities (0: no intervals).
        level: Coverage of the percentile interval.
        seed: Seed of the draws.
    """

    resamples: int
    level: float
    seed: int


def bootstrap_pauc(
    genuine_scores: ArrayLike,
    genuine_pair_quality: ArrayLike,
    clusters: ArrayLike,
    fixed: EDCCurve,
    limits: Sequence[float],
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[float, tuple[float, float]]:
    """``{limit: (low, high)}``: the ``level`` percentile interval of the normalised pAUC over
    ``resamples`` draws of the clusters (identities) with replacement.

    Args:
        genuine_scores: Comparison scores of the genuine pairs.
        genuine_pair_quality: Their pair qualities.
        clusters: The cluster (identity) of each genuine pair.
        fixed: The cell's curve: its threshold, FMR and impostor count are kept.
        limits: Discard limits of the pAUCs.
        resamples: Number of draws (0: no interval, NaN bounds).
        seed: Seed of the draws (the same for every method of a cell).
        level: Coverage of the interval.

    Returns:
        NaN bounds where fewer than half the draws give a defined pAUC (FNMR(0) = 0).
    """
    scores = np.asarray(genuine_scores, dtype=np.float64)
    quality = np.asarray(genuine_pair_quality, dtype=np.float64)
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    members = np.split(np.argsort(cluster, kind="stable"), np.cumsum(np.bincount(cluster))[:-1])
    rng = np.random.default_rng(seed)
    values = np.full((resamples, len(limits)), np.nan)
    for r in range(resamples):
        drawn = rng.integers(0, len(members), len(members))
        rows = np.concatenate([members[c] for c in drawn])
        curve = edc_at_threshold(scores[rows], quality[rows], fixed.threshold, fixed.fmr,
                                 fixed.n_impostor)  # fmt: skip
        if curve.fnmr[0] > 0:
            values[r] = [pauc(curve, limit) for limit in limits]
    tail = (1 - level) / 2 * 100
    out = {}
    for k, limit in enumerate(limits):
        defined = values[:, k][np.isfinite(values[:, k])]
        if resamples == 0 or defined.size < resamples / 2:
            out[float(limit)] = (float("nan"), float("nan"))
        else:
            low, high = np.percentile(defined, [tail, 100 - tail])
            out[float(limit)] = (float(low), float(high))
    return out
