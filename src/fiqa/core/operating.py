"""Operating points: which quality threshold to deploy, and what it buys.

The EDC answers "how fast does FNMR fall as pairs are discarded"; a deployment needs the number
to put in its configuration. For one quality method on one benchmark and FR model, with the
comparison threshold fixed at the FMR (``fiqa.core.edc.fmr_threshold``):

- **discard share** ``p``: the quality threshold ``t`` below which the ``p`` lowest-quality faces
  (templates on IJB) fall: ``t`` is the value at position ``floor(p * n)`` (from 0) of the
  ascending qualities, so faces with ``q < t`` are discarded, at most ``p`` of them (ties at
  ``t`` are kept); and the FNMR of the genuine pairs whose pair quality is ``>= t``;
- **target FNMR** ``f``: the lowest quality threshold (the fewest faces discarded) at which the
  genuine pairs kept reach ``FNMR <= f``, and the share of faces it discards. FNMR is not
  monotone in the threshold; this is the first threshold, from below, that reaches ``f``.
  NaN when no threshold does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def discard_threshold(qualities: ArrayLike, share: float) -> float:
    """The quality below which at most ``share`` of ``qualities`` lie (their minimum for 0)."""
    q = np.sort(np.asarray(qualities, dtype=np.float64))
    k = int(np.floor(share * q.size + 1e-9))
    return float(q[k]) if k < q.size else float("inf")


def kept_fnmr(genuine_scores: ArrayLike, pair_quality: ArrayLike, threshold: float,
              quality_threshold: float) -> float:  # fmt: skip
    """FNMR of the genuine pairs with pair quality ``>= quality_threshold`` (NaN if none)."""
    kept = np.asarray(pair_quality, dtype=np.float64) >= quality_threshold
    if not kept.any():
        return float("nan")
    return float(np.mean(np.asarray(genuine_scores, dtype=np.float64)[kept] < threshold))


def target_threshold(
    genuine_scores: ArrayLike, pair_quality: ArrayLike, threshold: float, target: float
) -> float:
    """The lowest pair-quality threshold at which the kept genuine pairs have FNMR ``<= target``
    (the lowest pair quality when all pairs already do; NaN when no threshold does)."""
    scores = np.asarray(genuine_scores, dtype=np.float64)
    pq = np.asarray(pair_quality, dtype=np.float64)
    if scores.size == 0:
        return float("nan")
    if np.mean(scores < threshold) <= target:
        return float(pq.min())
    order = np.argsort(-pq, kind="stable")  # best pairs first
    pq, errors = pq[order], np.cumsum(scores[order] < threshold)
    ends = np.flatnonzero(np.r_[pq[1:] != pq[:-1], True])  # keep whole tie blocks
    fnmr = errors[ends] / (ends + 1)
    reached = np.flatnonzero(fnmr <= target)
    return float(pq[ends[reached[-1]]]) if reached.size else float("nan")


def operating_points(
    item_qualities: ArrayLike,
    genuine_scores: ArrayLike,
    genuine_pair_quality: ArrayLike,
    threshold: float,
    shares: Sequence[float],
    target_fnmr: float,
) -> dict[str, float]:
    """``op@discard=<p>/threshold`` and ``/fnmr`` per share, ``op@fnmr=<f>/threshold`` and
    ``/discarded`` (the share of items below it) for the target FNMR."""
    q = np.asarray(item_qualities, dtype=np.float64)
    q = q[np.isfinite(q)]
    out: dict[str, float] = {}
    for share in shares:
        t = discard_threshold(q, share)
        out[f"op@discard={share:g}/threshold"] = t
        out[f"op@discard={share:g}/fnmr"] = kept_fnmr(
            genuine_scores, genuine_pair_quality, threshold, t
        )
    t = target_threshold(genuine_scores, genuine_pair_quality, threshold, target_fnmr)
    out[f"op@fnmr={target_fnmr:g}/threshold"] = t
    out[f"op@fnmr={target_fnmr:g}/discarded"] = (
        float("nan") if np.isnan(t) else float(np.mean(q < t))
    )
    return out
