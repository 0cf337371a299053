"""Calibrated 0-100 quality scores: what a trained model's number means.

A regressor's raw output lives on the scale of its training targets (rank-scaled labels of one
FR model on one training set): 0.74 says nothing by itself. ISO/IEC 29794-1 reports quality as
an integer 0-100 and OFIQ maps its unified score onto that range. fiqa's mapping is the
**training percentile**: after training, the best model scores (a seeded sample of) its own
training faces, without augmentation, and the calibration stores the raw score at each
percentile 0, 1, ..., 100 of that distribution. A face's 0-100 score is the percentile its raw
score reaches, linearly interpolated between those knots and rounded: **a face scoring 70 is of
higher predicted quality than about 70 % of the faces the model was trained on.** Scores below
the training minimum map to 0, above its maximum to 100.

The map is monotone non-decreasing, so it never reorders two faces (it may tie faces whose raw
scores differ by less than a percentile step); the EDC, which depends only on the order, is the
same on either scale. It is stored in the checkpoint (``fiqa_calibration``) and in the ONNX
metadata (``fiqa.calibration``), so both files give the same 0-100 scores. Which threshold to
deploy is a separate question, answered per benchmark and FR model by ``evaluate``'s operating
points (``fiqa thresholds``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

CHECKPOINT_KEY = "fiqa_calibration"
ONNX_KEY = "fiqa.calibration"
PERCENTILES = np.arange(101)
METHOD = "training_percentile"


@dataclass(frozen=True)
class Calibration:
    """The raw score at each percentile 0..100 of the training faces' raw scores.

    Attributes:
        knots: 101 non-decreasing raw scores.
        n_faces: How many training faces they come from.
        method: How it was fitted (``training_percentile``).
    """

    knots: tuple[float, ...]
    n_faces: int
    method: str = METHOD

    def __post_init__(self) -> None:
        knots = np.asarray(self.knots, dtype=np.float64)
        if knots.shape != PERCENTILES.shape or not np.isfinite(knots).all():
            raise ValueError(f"a calibration needs {PERCENTILES.size} finite knots")
        if (np.diff(knots) < 0).any():
            raise ValueError("calibration knots must be non-decreasing")

    @classmethod
    def fit(cls, raw_scores: ArrayLike) -> Calibration:
        """The calibration of the training faces' ``raw_scores``.

        Raises:
            ValueError: With no finite score.
        """
        raw = np.asarray(raw_scores, dtype=np.float64)
        raw = raw[np.isfinite(raw)]
        if raw.size == 0:
            raise ValueError("no finite raw score to fit a calibration on")
        knots = np.percentile(raw, PERCENTILES)
        return cls(tuple(float(k) for k in np.maximum.accumulate(knots)), int(raw.size))

    def __call__(self, raw_scores: ArrayLike) -> NDArray[np.float64]:
        """Integer 0-100 scores (as float, NaN where the raw score is NaN)."""
        raw = np.asarray(raw_scores, dtype=np.float64)
        knots = np.asarray(self.knots)
        # repeated knots (a flat stretch of the training distribution): their mean percentile
        unique, inverse = np.unique(knots, return_inverse=True)
        percentile = np.bincount(inverse, PERCENTILES) / np.bincount(inverse)
        if unique.size == 1:  # a constant model: every face at the middle
            scaled = np.full(raw.shape, 50.0)
        else:
            scaled = np.interp(raw, unique, percentile)
        return np.where(np.isnan(raw), np.nan, np.rint(scaled))

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for the checkpoint and JSON."""
        return asdict(self) | {"knots": list(self.knots)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Calibration | None:
        """The calibration of ``to_dict``'s output (None stays None: an older model)."""
        if data is None:
            return None
        return cls(tuple(data["knots"]), int(data["n_faces"]), str(data.get("method", METHOD)))

    @classmethod
    def from_json(cls, text: str | None) -> Calibration | None:
        """The calibration of ONNX metadata (None without)."""
        return cls.from_dict(json.loads(text)) if text else None
