"""CR-FIQA (Boutros et al., CVPR 2023) offline labels: certainty ratio to the class centres.

With L2-normalised embeddings e_i of identity y_i and unit class centres c_k (the normalised mean
of the normalised embeddings of identity k, or given centres such as an FR head's weights):

    CCS_i   = cos(e_i, c_{y_i})                    (class centre similarity)
    NNCCS_i = max_{k != y_i} cos(e_i, c_k)         (nearest negative class centre similarity)
    q_i     = CCS_i / (NNCCS_i + 1 + eps),   eps = 1e-9      (form "paper", the default)
    q_i     = CCS_i / max(NNCCS_i, eps)                      (form "code")

The paper's form has a positive denominator (NNCCS is in [-1, 1]). The public training code
(``train_cr_fiqa.py``) regresses on CCS / NNCCS instead, which ranks samples differently and
reaches the CR-FIQA paper's values of 1.5-2.1; it is undefined where NNCCS <= 0 (few, well separated
identities), where the denominator is held at eps. At MS1M scale (5.8 M x 85 k) the N x K
similarity matrix is never materialised: rows are processed in chunks of ``chunk_rows`` whose
chunk x K block stays near 256 MB (float32), and the centres are accumulated chunk by chunk.
Work is in float32 for float16/float32 embeddings and float64 for float64 ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from fiqa.label.context import LabelContext
from fiqa.label.grouping import identity_codes, identity_sums, l2_normalise, work_dtype

log = logging.getLogger(__name__)

EPS = 1e-9
FORMS = ("paper", "code")
BLOCK_ELEMENTS = 2**26  # chunk x K block of ~256 MB in float32
CENTRE_CHUNK_ROWS = 8192  # float64 (8192, d) blocks: 32 MB at d = 512


@dataclass
class CrFiqaSettings:
    """CR-FIQA settings (``label.methods.crfiqa``).

    Attributes:
        form: ``paper`` (CCS / (NNCCS + 1 + eps)) or ``code`` (CCS / NNCCS, the public code).
        chunk_rows: Rows per chunk of the sample x centre product (None: ~256 MB blocks).
    """

    form: str
    chunk_rows: int | None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"label.methods.crfiqa.form={self.form!r}; choose one of {FORMS}")


def unit_class_centres(
    embeddings: np.ndarray, identities: np.ndarray | pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Unit class centres c_k = normalise(sum of normalised e_i with y_i = k) and the codes.

    Sums are accumulated in float64 over row chunks (``identity_sums``), so memory is the
    (K, d) accumulator plus one chunk.

    Returns:
        ``(centres, codes)``: centres (K, d) in the work dtype, row k for the identity with
        code k; codes (n,) int64 from ``identity_codes``.
    """
    codes, k = identity_codes(identities, len(embeddings))
    sums = identity_sums(embeddings, codes, k, chunk=CENTRE_CHUNK_ROWS)
    return l2_normalise(sums).astype(work_dtype(embeddings)), codes


def centre_similarities(
    embeddings: np.ndarray,
    codes: np.ndarray,
    centres: np.ndarray,
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CCS_i = cos(e_i, c_{y_i}) and NNCCS_i = max_{k != y_i} cos(e_i, c_k), chunked over rows.

    Args:
        embeddings: (n, d) embeddings (normalised again here per chunk).
        codes: (n,) class index of each row into ``centres``.
        centres: (K, d) unit centres, K >= 2.
        chunk_rows: rows per chunk; default keeps the chunk x K block near 2**26 elements.

    Returns:
        ``(ccs, nnccs)``, both (n,) float64.
    """
    n, k = len(codes), len(centres)
    rows = chunk_rows or max(1, BLOCK_ELEMENTS // k)
    dtype = work_dtype(embeddings)
    centres_t = np.ascontiguousarray(l2_normalise(centres.astype(dtype, copy=False)).T)
    ccs, nnccs = np.empty(n), np.empty(n)
    chunks = range(0, n, rows)
    for start in tqdm(chunks, desc="crfiqa", unit="chunk", mininterval=2, disable=n < 100_000):
        stop = min(start + rows, n)
        sims = l2_normalise(np.asarray(embeddings[start:stop], dtype=dtype)) @ centres_t
        local = np.arange(stop - start)
        own = codes[start:stop]
        ccs[start:stop] = sims[local, own]
        sims[local, own] = -np.inf
        nnccs[start:stop] = sims.max(axis=1)
    return ccs, nnccs


def crfiqa_from_similarities(
    ccs: np.ndarray, nnccs: np.ndarray, eps: float = EPS, form: str = "paper"
) -> np.ndarray:
    """q = CCS / (NNCCS + 1 + eps) (``paper``) or CCS / max(NNCCS, eps) (``code``)."""
    ccs, nnccs = np.asarray(ccs, np.float64), np.asarray(nnccs, np.float64)
    if form not in FORMS:
        raise ValueError(f"CR-FIQA form must be one of {FORMS}, got {form!r}")
    return ccs / (nnccs + 1.0 + eps) if form == "paper" else ccs / np.maximum(nnccs, eps)


def crfiqa_scores(
    embeddings: np.ndarray,
    identities: np.ndarray | pd.Series,
    *,
    form: str,
    centres: np.ndarray | None = None,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """CR-FIQA labels q_i = CCS_i / (NNCCS_i + 1 + eps) (or the code's CCS_i / NNCCS_i),
    higher = better.

    Args:
        embeddings: (n, d) L2-normalised embeddings, float16/float32 (a ``np.memmap`` is read
            chunk by chunk, never copied whole).
        identities: (n,) identity labels. Any hashable labels when ``centres`` is None; with
            ``centres`` they must be integer row indices into ``centres`` (the FR head's class
            ids).
        centres: optional (K, d) class centres, e.g. the FR head weights; default: the
            normalised mean embedding of each identity (``unit_class_centres``).
        chunk_rows: rows per chunk of the chunk x K product; default ``max(1, 2**26 // K)``.
        form: ``paper`` or ``code`` (module docstring).

    Returns:
        (n,) float64 labels.

    Raises:
        ValueError: fewer than two classes (NNCCS is undefined), or identities that do not
            index the given centres.
    """
    n, d = embeddings.shape
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"label.methods.crfiqa.chunk_rows must be >= 1 or null, got {chunk_rows}")
    if centres is None:
        centres, codes = unit_class_centres(embeddings, identities)
    else:
        codes = _codes_for_centres(identities, centres, n, d)
    if len(centres) < 2:
        raise ValueError(
            "CR-FIQA needs at least two identities: NNCCS (the nearest other class centre) is "
            f"undefined for a dataset with {len(centres)} identity"
        )
    ccs, nnccs = centre_similarities(embeddings, codes, centres, chunk_rows)
    return crfiqa_from_similarities(ccs, nnccs, form=form)


def _codes_for_centres(
    identities: np.ndarray | pd.Series, centres: np.ndarray, n: int, d: int
) -> np.ndarray:
    """Validate that ``identities`` are integer row indices into the (K, d) ``centres``."""
    if centres.ndim != 2 or centres.shape[1] != d:
        raise ValueError(f"centres have shape {centres.shape}; expected (K, {d})")
    codes = np.asarray(identities)
    if len(codes) != n:
        raise ValueError(f"{len(codes)} identities for {n} embeddings; expected one per row")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"with given centres, identities must be integer class ids, got dtype {codes.dtype}"
        )
    if n and (codes.min() < 0 or codes.max() >= len(centres)):
        raise ValueError(
            f"identity ids span [{codes.min()}, {codes.max()}] but only {len(centres)} centres "
            "are given; pass the class ids the FR head was trained with"
        )
    return codes.astype(np.int64)


def crfiqa_label(
    ctx: LabelContext, params: CrFiqaSettings, outputs: Mapping[str, np.ndarray]
) -> np.ndarray:
    """CR-FIQA labels of one FR model's embeddings, centres from the identities."""
    identities = ctx.require_identities("crfiqa")
    return crfiqa_scores(outputs["embedding"], identities, chunk_rows=params.chunk_rows,
                         form=params.form)  # fmt: skip
