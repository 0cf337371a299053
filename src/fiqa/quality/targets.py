"""What a quality model is trained to predict: each method's labels on one common scale.

Label methods live on very different scales (SER-FIQ in a narrow band around 0.85, SDD-FIQA in
[0, 100], CR-FIQA's code form around 1-2): regressed as they are, a narrow band makes a useless
model. The training targets are therefore normalised with statistics of the *train* split only
and the same map is applied to validation labels:

- ``rank`` (default): the empirical CDF of the train labels with ties at their mid-rank,
  ``F(y) = (#{train < y} + #{train == y} / 2 - 1/2) / (n - 1)``, clipped to [0, 1]; a train
  label gets exactly its normalised average rank ``(r - 1) / (n - 1)``;
- ``minmax``: ``(y - min) / (max - min)`` over the train labels;
- ``none``: the labels as they are.

Only the ranking of qualities matters to an EDC, so the normalised model ranks faces as a model
of the raw labels would, on a scale a regressor can fit. The map is recorded in the checkpoint
and the ONNX metadata (``TargetScaling.as_dict``: 101 quantiles of the train labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCALINGS = ("rank", "minmax", "none")
QUANTILES = 101  # recorded quantiles of the train labels


@dataclass
class TargetScaling:
    """A fitted label-to-target map (see the module docstring)."""

    method: str
    train: np.ndarray = field(repr=False)  # sorted train labels

    @classmethod
    def fit(cls, method: str, train_labels: np.ndarray) -> TargetScaling:
        """Fit ``method`` on the train split's labels (finite values)."""
        if method not in SCALINGS:
            raise ValueError(f"train.target_scaling={method!r}; choose one of {SCALINGS}")
        labels = np.sort(np.asarray(train_labels, np.float64))
        if labels.size == 0 or not np.isfinite(labels).all():
            raise ValueError("target scaling needs finite train labels")
        return cls(method, labels)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """The targets of ``labels``."""
        y = np.asarray(labels, np.float64)
        if self.method == "none":
            return y.copy()
        if self.method == "minmax":
            lo, hi = self.train[0], self.train[-1]
            return (y - lo) / (hi - lo) if hi > lo else np.full_like(y, 0.5)
        n = self.train.size
        if n == 1:
            return np.full_like(y, 0.5)
        below = np.searchsorted(self.train, y, side="left")
        equal = np.searchsorted(self.train, y, side="right") - below
        return np.clip((below + equal / 2 - 0.5) / (n - 1), 0.0, 1.0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able record: the method and quantiles of the train labels."""
        probs = np.linspace(0.0, 1.0, QUANTILES)
        return {"method": self.method, "train_quantiles": np.quantile(self.train, probs).tolist()}
