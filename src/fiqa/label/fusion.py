"""Fusion of label columns: the ``fused`` method (Huo et al.'s label is in ``fiqa.label.huo``).

Generic fusion of columns x_k with weights w_k >= 0 after a per-column normalisation N:

    S = sum_k w_k * N(x_k) / sum_k w_k

N is one of ``none``, ``minmax`` ((x - min) / (max - min)), ``rank`` ((r - 1) / (n - 1) with r the
average rank, ties averaged) or ``z`` (Phi((x - mean) / std), Phi the standard normal CDF, std
with ddof 0). The last three map to [0, 1] (z to (0, 1)), so S does too. A constant column maps to
0.5 under all three (no information, mid-scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata

from fiqa.label.context import LabelContext

NORMALISATIONS = ("none", "minmax", "rank", "z")


def normalise(values: np.ndarray, how: str, name: str = "values") -> np.ndarray:
    """Normalise one label column.

    Args:
        values: (n,) scores, higher = better.
        how: ``none`` (unchanged), ``minmax`` ((x - min) / (max - min)), ``rank``
            ((r - 1) / (n - 1), r = average rank) or ``z`` (Phi((x - mean) / std)).
        name: column name used in error messages.

    Returns:
        (n,) float64 array; constant columns (and n = 1) give 0.5 for minmax/rank/z.

    Raises:
        ValueError: unknown ``how``, non-1-D input, or a NaN/infinite value (names the column).
    """
    if how not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {how!r} for {name}; use one of {NORMALISATIONS}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"column {name} must be 1-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))
        raise ValueError(f"column {name} has NaN or infinite values at rows {bad[:10].tolist()}")
    if how == "none":
        return x.copy()
    if len(x) == 0:
        return x.copy()
    if how == "minmax":
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5)
    if how == "rank":
        if len(x) == 1:
            return np.full_like(x, 0.5)
        return (rankdata(x, method="average") - 1.0) / (len(x) - 1)
    std = x.std()
    return ndtr((x - x.mean()) / std) if std > 0 else np.full_like(x, 0.5)


def fuse(
    columns: dict[str, np.ndarray], weights: dict[str, float], how: str = "rank"
) -> np.ndarray:
    """Weighted mean of normalised columns: sum_k w_k N(x_k) / sum_k w_k.

    Args:
        columns: name -> (n,) scores; columns without a weight are not used.
        weights: name -> weight >= 0 (relative: divided by their sum).
        how: per-column normalisation, see :func:`normalise`.

    A row where a weighted column is NaN (a sample without that label, e.g. the only image of
    its identity under an identity-based method) gets NaN; the normalisation uses the rows
    where every weighted column has a value.

    Raises:
        ValueError: weights naming unknown columns, a negative weight, a total weight <= 0,
            columns of different lengths, or an infinite value.
    """
    unknown = sorted(set(weights) - set(columns))
    if unknown:
        raise ValueError(f"weights name unknown columns {unknown}; available: {sorted(columns)}")
    negative = sorted(k for k, w in weights.items() if w < 0)
    if negative:
        raise ValueError(f"weights must be >= 0; negative for {negative}")
    total = float(sum(weights.values()))
    if not total > 0:
        raise ValueError(f"total weight must be > 0, got {total} for {sorted(weights)}")
    lengths = {k: len(np.asarray(columns[k])) for k in weights}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns differ in length: {lengths}")
    values = {k: np.asarray(columns[k], dtype=np.float64) for k in weights}
    infinite = sorted(k for k, v in values.items() if np.isinf(v).any())
    if infinite:
        raise ValueError(f"columns {infinite} have infinite values")
    known = np.logical_and.reduce([~np.isnan(v) for v in values.values()])
    fused = np.full(len(known), np.nan)
    fused[known] = sum(w * normalise(values[k][known], how, name=k) for k, w in weights.items())
    return fused / total


@dataclass
class FusedSettings:
    """Fused label settings (``label.methods.fused``).

    Attributes:
        how: Normalisation of each column first (``normalise``).
        weights: Column name (a method, or ``method@model``) -> weight.
    """

    how: str
    weights: dict[str, float]


def fused_label(
    ctx: LabelContext, params: FusedSettings, outputs: Mapping[str, Any] | None
) -> np.ndarray:
    """The fused method: ``fuse`` of the columns computed before it."""
    return fuse(ctx.columns, dict(params.weights), how=params.how)


def fused_inputs(params: FusedSettings) -> list[str]:
    """The methods whose columns the weights name (``crfiqa@sface`` is a ``crfiqa`` column)."""
    return list(dict.fromkeys(column.partition("@")[0] for column in params.weights))


def fused_range(params: FusedSettings) -> tuple[float, float]:
    """[0, 1] after a normalisation; unbounded for ``how=none`` (a weighted mean of raw columns)."""
    return (-np.inf, np.inf) if params.how == "none" else (0.0, 1.0)
