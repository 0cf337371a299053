"""Correlation metrics between predicted and label quality, computed over a whole epoch.

Spearman's rho is the Pearson correlation of average ranks, so tied values share the mean of
the ranks they occupy (the textbook definition, as in ``scipy.stats.spearmanr``).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-d tensor, ties receiving the mean of the ranks they span.

    Args:
        values: 1-d tensor.

    Returns:
        float64 tensor of the same length.
    """
    x = values.detach().flatten().to(torch.float64)
    n = x.numel()
    if n == 0:
        return x
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    # Group boundaries of equal values in the sorted order.
    new_group = torch.ones(n, dtype=torch.bool, device=x.device)
    new_group[1:] = sorted_x[1:] != sorted_x[:-1]
    group_id = torch.cumsum(new_group.to(torch.int64), 0) - 1
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    n_groups = int(group_id[-1].item()) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(
        0, group_id, positions
    )
    counts = torch.bincount(group_id, minlength=n_groups).to(torch.float64)
    ranks = torch.empty(n, dtype=torch.float64, device=x.device)
    ranks[order] = (sums / counts)[group_id]
    return ranks


def pearson(preds: torch.Tensor, target: torch.Tensor) -> float:
    """Pearson correlation coefficient; NaN when fewer than 2 values or either is constant.

    Args:
        preds: 1-d tensor.
        target: 1-d tensor of the same length.

    Returns:
        The coefficient as a Python float.
    """
    a = preds.detach().flatten().to(torch.float64)
    b = target.detach().flatten().to(torch.float64)
    if a.numel() != b.numel():
        raise ValueError(f"pearson: lengths differ ({a.numel()} vs {b.numel()})")
    if a.numel() < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denom = torch.sqrt((a * a).sum() * (b * b).sum())
    if denom.item() == 0.0:
        return float("nan")
    return float(((a * b).sum() / denom).clamp(-1.0, 1.0).item())


def spearman(preds: torch.Tensor, target: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when undefined.

    Args:
        preds: 1-d tensor.
        target: 1-d tensor of the same length.

    Returns:
        The coefficient as a Python float.
    """
    return pearson(average_ranks(preds), average_ranks(target))


def mean_absolute_error(preds: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error; NaN for empty input."""
    a = preds.detach().flatten().to(torch.float64)
    b = target.detach().flatten().to(torch.float64)
    if a.numel() == 0:
        return float("nan")
    return float((a - b).abs().mean().item())
