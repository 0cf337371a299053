"""eDifFIQA label correction (Babnik et al., TBIOM 2024): penalise a label by how far the sample's
embedding lies from its identity's high-quality centre. Applies to any base label.

With q_i the base label on [0, 1], e_i the sample's embedding and y_i its identity,

    T        = the global top ``top`` fraction (default 0.2) of samples by base quality
    c_y      = normalise( mean_{i in T, y_i = y} e_i / ||e_i|| )
    q'_i     = clip( q_i - eps * (1 - cos(e_i, c_{y_i})), 0, 1 ),   eps = 0.5

As written in the eDifFIQA presentation (Babnik et al., TBIOM 2024): q^o_x = q_x - eps *
cos(e_x, e_bar_C). The public code (``loss.ExtendedL1`` with
``torch.nn.CosineEmbeddingLoss(target=1)``) subtracts eps times the cosine DISTANCE 1 - cos and
clamps to [0, 1]; that is the form used here. It keeps the label of a sample at its centre
(cos = 1) and removes up to 2 eps from one pointing away (cos = -1); the literal form would
instead penalise the samples nearest the centre.

Rules where the paper and the code are silent or where this module differs from the public code:

- Top fraction: the k = max(1, ceil(top * n)) best samples; ties with the k-th value are included
  (q >= threshold). The public code takes q >= the (floor(top * n) + 1)-th best value.
- Identities with no image in the global top fraction use their single best image (ties -> the
  first row) as centre; the public code drops identities with fewer than 10 such images, but a
  label table must keep every identity.
- The centre is the normalised mean of NORMALISED embeddings (the public code averages raw
  embeddings) and is computed once from fixed embeddings; the public code compares it with the
  embedding of the network being trained.
- ``normalise=True`` min-max rescales the base label to [0, 1] first (a constant label -> 0.5),
  so eps is relative to the label's full range. With ``normalise=False`` the base label must
  already lie in [0, 1].

Embeddings are read in row chunks (float16 memmaps are fine): memory is O(chunk * d + K * d) for
K identities; no N x N or N x K matrix is formed.

In a labels table the corrected labels of a method are the column ``<method>+ediffiqa``
(``label.target`` or ``label.compute`` name it), made, checked and reported by the label stage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fiqa.label.grouping import (
    DEFAULT_CHUNK,
    identity_codes,
    identity_sums,
    iter_row_chunks,
    l2_normalise,
)

log = logging.getLogger(__name__)

SUFFIX = "+ediffiqa"  # a corrected label column is named <base method>+ediffiqa


def corrected_column(base: str) -> str:
    """The name of ``base``'s eDifFIQA-corrected label column (``serfiq+ediffiqa``)."""
    return f"{base}{SUFFIX}"


def split_column(column: str) -> tuple[str, bool]:
    """``(base method, corrected?)`` of a label column name."""
    base = column.removesuffix(SUFFIX)
    return base, base != column


@dataclass
class EdiffiqaSettings:
    """eDifFIQA correction settings (``label.ediffiqa``).

    Attributes:
        eps: Correction strength (0.5 in the public code).
        top: Global fraction of best-quality samples that define the identity centres.
    """

    eps: float
    top: float


def top_quality_rows(
    quality: np.ndarray, codes: np.ndarray, n_ids: int, top: float
) -> tuple[np.ndarray, int]:
    """Rows in the global top ``top`` fraction of quality, plus each uncovered identity's best row.

    Returns:
        (boolean mask over rows, number of identities that needed the best-image fallback).
    """
    n = len(quality)
    k = max(1, math.ceil(top * n))
    threshold = np.partition(quality, n - k)[n - k]
    selected = quality >= threshold
    covered = np.zeros(n_ids, dtype=bool)
    covered[codes[selected]] = True
    # Best row per identity: sort by identity, then by descending quality (stable -> first row).
    order = np.lexsort((-quality, codes))
    _, first = np.unique(codes[order], return_index=True)
    best_row = order[first]
    selected[best_row[~covered]] = True
    return selected, int((~covered).sum())


def _base_labels(quality: np.ndarray, normalise: bool) -> np.ndarray:
    """Check the base label and bring it to [0, 1] (min-max when ``normalise``)."""
    q = np.asarray(quality, dtype=np.float64)
    if q.ndim != 1 or len(q) == 0:
        raise ValueError(f"quality must be a non-empty 1-D array, got shape {q.shape}")
    if not np.isfinite(q).all():
        bad = np.flatnonzero(~np.isfinite(q))
        raise ValueError(f"quality is NaN or infinite at rows {bad[:10].tolist()}")
    lo, hi = q.min(), q.max()
    if normalise:
        return (q - lo) / (hi - lo) if hi > lo else np.full_like(q, 0.5)
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"quality spans [{lo:g}, {hi:g}], outside [0, 1]; pass normalise=True to min-max "
            "rescale a base label on another scale"
        )
    return q


def ediffiqa_correct(
    quality: np.ndarray,
    embeddings: np.ndarray,
    identities: Sequence | np.ndarray | pd.Series,
    *,
    eps: float,
    top: float,
    normalise: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """eDifFIQA-corrected labels q' = clip(q - eps * (1 - cos(e, c_y)), 0, 1).

    Args:
        quality: (n,) base labels, higher = better.
        embeddings: (n, d) FR embeddings (any scale, normalised here; float16 memmaps are fine).
        identities: (n,) identity label per sample.
        eps: correction strength (0.5 in the public code).
        top: global fraction of best-quality samples that define the identity centres.
        normalise: min-max rescale ``quality`` to [0, 1] first (required for other scales).
        chunk: embedding rows read at a time.

    Returns:
        (n,) float64 corrected labels in [0, 1].
    """
    q = _base_labels(quality, normalise)
    n = len(q)
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise ValueError(f"embeddings must be (n={n}, d), got {embeddings.shape}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not 0.0 < top <= 1.0:
        raise ValueError(f"top must be in (0, 1], got {top}")
    codes, n_ids = identity_codes(identities, n)
    selected, fallback = top_quality_rows(q, codes, n_ids, top)
    if fallback:
        log.info(
            "ediffiqa: %d of %d identities have no image in the top %.0f%%; "
            "their centre is their best image",
            fallback,
            n_ids,
            100 * top,
        )
    centres = l2_normalise(identity_sums(embeddings, codes, n_ids, rows=selected, chunk=chunk))
    cos = np.empty(n, dtype=np.float64)
    for sl, block in iter_row_chunks(embeddings, chunk):
        cos[sl] = np.einsum("ij,ij->i", block, centres[codes[sl]])
    return np.clip(q - eps * (1.0 - cos), 0.0, 1.0)


def ediffiqa_correct_labelled(
    quality: np.ndarray, embeddings: np.ndarray, identities: np.ndarray, params: EdiffiqaSettings
) -> np.ndarray:
    """``ediffiqa_correct`` of the samples that have a label; the others (NaN) stay NaN."""
    quality = np.asarray(quality, dtype=np.float64)
    rows = np.flatnonzero(~np.isnan(quality))
    out = np.full(len(quality), np.nan)
    labelled = embeddings if len(rows) == len(quality) else embeddings[rows]
    out[rows] = ediffiqa_correct(quality[rows], labelled, np.asarray(identities)[rows],
                                 eps=params.eps, top=params.top)  # fmt: skip
    return out
