"""Huo et al. (2022) fused label S = a*S_v + b*S_r + c*S_c (doi 10.3233/ATDE221152).

For sample i of identity y with n_y images:

    S_v,i = 1 - d_i / (d_max - d_min),  d_i = ||f_i - mean_{j in y} f_j||_2     (eq. 1, 2)
    S_r,i = SER-FIQ score                                                        (eq. 3)
    S_c,i = mean_{j in y, j != i} (cos(e_i, e_j) + 1) / 2                        (eq. 4)
    S_i   = 0.2 S_v,i + 0.4 S_r,i + 0.4 S_c,i                                    (eq. 5)

f are LOW-level FR features (any (n, k) array, e.g. pooled early-block activations); d_min and
d_max are taken over identity y. Eq. 1 divides by the range but does not subtract d_min, so S_v
lies in [-d_min / (d_max - d_min), 1 - d_min / (d_max - d_min)] and is negative wherever d_min
> 0 and d_i > d_max - d_min; it is implemented as written (no clipping) as ``visual="paper"``.
Two normalised forms are offered. ``identity``: 1 - (d_i - d_min) / (d_max - d_min), in [0, 1];
still relative to the identity, so an identity of two images (d equal for both) gets 1 twice.
``global``: 1 - d_i / max_k d_k over the whole set, in [0, 1]: comparable across identities, so
a rank fusion (``how="rank"``) ranks a face far from its identity's mean below one close to it
whatever the identity. S_c uses, for unit vectors,
sum_{j != i} cos(e_i, e_j) = e_i . (sum_{j in y} e_j) - e_i . e_i, so no pairwise matrix is formed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from fiqa.extract.products import Batch, BatchProduct
from fiqa.label.context import LabelContext
from fiqa.label.fusion import fuse
from fiqa.label.grouping import (
    DEFAULT_CHUNK,
    identity_codes,
    identity_sums,
    iter_row_chunks,
)

IdentityLabels = Sequence | np.ndarray | pd.Series


def intra_class_score(
    embeddings: np.ndarray,
    identities: IdentityLabels,
    single_value: float = 0.5,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Huo et al. S_c (eq. 4): mean over same-identity j != i of (cos(e_i, e_j) + 1) / 2.

    The paper's eq. 4 divides by N but sums over the OTHER images j of the identity ("image i
    and j are different face images"); the mean over the n_y - 1 others is used here.

    Args:
        embeddings: (n, d) FR features (normalised here; float16 memmaps are fine).
        identities: (n,) identity label per sample.
        single_value: S_c of an image that is its identity's only one. Default 0.5 = the value of
            an orthogonal pair (cos = 0), i.e. no evidence either way; pass ``float("nan")`` to
            mark such rows for the caller to drop (``fuse`` rejects NaN).
        chunk: rows read at a time.

    Returns:
        (n,) float64 scores in [0, 1] (or ``single_value``).
    """
    n = embeddings.shape[0]
    codes, n_ids = identity_codes(identities, n)
    sums = identity_sums(embeddings, codes, n_ids, chunk=chunk)
    sizes = np.bincount(codes, minlength=n_ids)
    out = np.empty(n, dtype=np.float64)
    for sl, block in iter_row_chunks(embeddings, chunk):
        # Sum of cosines to the others = e_i . sum_y - e_i . e_i (1, or 0 for a zero vector).
        others = np.einsum("ij,ij->i", block, sums[codes[sl]]) - np.einsum("ij,ij->i", block, block)
        m = sizes[codes[sl]] - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            out[sl] = np.where(m > 0, (others / np.maximum(m, 1) + 1.0) / 2.0, single_value)
    return out


VISUAL_FORMS = ("paper", "identity", "global")


def visual_score(
    features: np.ndarray,
    identities: IdentityLabels,
    form: str = "paper",
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Huo et al. S_v (eq. 1, 2): 1 - d_i / (d_max - d_min) over the identity's images.

    Args:
        features: (n, k) LOW-level features (used as given, not normalised).
        identities: (n,) identity label per sample.
        form: ``paper`` (eq. 1 as written: not clipped, can go below 0), ``identity``
            (1 - (d_i - d_min) / (d_max - d_min), in [0, 1]) or ``global`` (1 - d_i / max d
            over all samples, in [0, 1]); see the module docstring.
        chunk: rows read at a time.

    Returns:
        (n,) float64 scores. With ``paper`` or ``identity``, an identity whose distances are
        all equal (one image included) has d_max = d_min and gets S_v = 1 for every image;
        with ``global``, every d = 0 gives 1.
    """
    if form not in VISUAL_FORMS:
        raise ValueError(f"visual must be one of {VISUAL_FORMS}, got {form!r}")
    if features.ndim != 2:
        raise ValueError(f"features must be (n, k), got shape {features.shape}")
    n = features.shape[0]
    codes, n_ids = identity_codes(identities, n)
    sizes = np.bincount(codes, minlength=n_ids)
    means = identity_sums(features, codes, n_ids, unit=False, chunk=chunk) / sizes[:, None]
    d = np.empty(n, dtype=np.float64)
    for sl, block in iter_row_chunks(features, chunk, unit=False):
        d[sl] = np.linalg.norm(block - means[codes[sl]], axis=1)
    if form == "global":
        top = d.max(initial=0.0)
        return 1.0 - d / top if top > 0 else np.ones(n)
    d_min = np.full(n_ids, np.inf)
    d_max = np.full(n_ids, -np.inf)
    np.minimum.at(d_min, codes, d)
    np.maximum.at(d_max, codes, d)
    span = (d_max - d_min)[codes]
    num = d - d_min[codes] if form == "identity" else d
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, 1.0 - num / span, 1.0)


def huo_fused(
    s_v: np.ndarray,
    s_r: np.ndarray,
    s_c: np.ndarray,
    weights: tuple[float, float, float],
    how: str,
) -> np.ndarray:
    """Huo et al. fused label (eq. 5): (a N(S_v) + b N(S_r) + c N(S_c)) / (a + b + c).

    ``how="none"`` with weights (0.2, 0.4, 0.4) (sum 1) is eq. 5 as in the paper.
    The three terms sit on different scales (SER-FIQ in a narrow band, S_v unbounded below), so
    ``rank`` or ``z`` normalisation is offered. Weights not summing to 1 are divided by their sum.
    """
    a, b, c = weights
    return fuse({"s_v": s_v, "s_r": s_r, "s_c": s_c}, {"s_v": a, "s_r": b, "s_c": c}, how=how)


@dataclass
class HuoSettings:
    """Huo et al. settings (``label.methods.huo``).

    Attributes:
        weights: a, b, c of S = a S_v + b S_r + c S_c (eq. 5: 0.2, 0.4, 0.4).
        how: Normalisation of each term first (``fiqa.label.fusion.normalise``).
        visual: The form of S_v: ``paper`` (eq. 1), ``identity`` or ``global``
            (``visual_score``).
    """

    weights: list[float]
    how: str
    visual: str

    def __post_init__(self) -> None:
        if self.visual not in VISUAL_FORMS:
            raise ValueError(f"visual must be one of {VISUAL_FORMS}, got {self.visual!r}")


@dataclass(frozen=True)
class LowLevelFeatures(BatchProduct):
    """Pooled activations of an early FR block (``net.forward_low_level``), Huo et al.'s S_v."""

    name: ClassVar[str] = "low_level"
    dtype: ClassVar[type] = np.float16
    ndim: ClassVar[int] = 2
    white_box: ClassVar[str | None] = "low-level features"

    def compute(self, batch: Batch) -> torch.Tensor:
        return batch.net.forward_low_level(batch.x).half()


def huo_label(
    ctx: LabelContext, params: HuoSettings, outputs: Mapping[str, np.ndarray]
) -> np.ndarray:
    """S of one FR model's outputs: S_v from its low-level features, S_r its SER-FIQ scores,
    S_c from its embeddings."""
    ids = ctx.require_identities("huo")
    s_v = visual_score(outputs["low_level"], ids, form=params.visual)
    s_c = intra_class_score(outputs["embedding"], ids)
    return huo_fused(s_v, outputs["serfiq"], s_c, weights=tuple(params.weights), how=params.how)
