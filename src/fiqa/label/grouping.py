"""Per-identity building blocks shared by the label methods: identity codes, row normalisation,
chunked reading of (n, d) arrays or memmaps, and per-identity sums without an (n, K) matrix."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

DEFAULT_CHUNK = 16384


def identity_codes(
    identities: Sequence | np.ndarray | pd.Series, n: int | None = None
) -> tuple[np.ndarray, int]:
    """Integer codes 0..K-1 (order of first appearance) for identity labels (any hashable
    values), and K.

    Raises:
        ValueError: if the length is not ``n`` (when given) or a label is missing (None/NaN).
    """
    ids = np.asarray(identities)
    n = len(ids) if n is None else n
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(
            f"identities must be 1-D with {n} entries (one per sample), got {ids.shape}"
        )
    codes, uniques = pd.factorize(ids)
    if (codes < 0).any():
        bad = np.flatnonzero(codes < 0)
        raise ValueError(f"identities are missing for rows {bad[:10].tolist()}")
    return codes.astype(np.int64), len(uniques)


def work_dtype(embeddings: np.ndarray) -> np.dtype:
    """float64 for float64 input, float32 otherwise (float16 storage is widened, never narrowed)."""
    return np.result_type(embeddings.dtype, np.float32)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm, in ``x``'s dtype (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


def iter_row_chunks(
    values: np.ndarray, chunk: int = DEFAULT_CHUNK, unit: bool = True
) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, float64 block) over an (n, d) array or memmap, L2-normalised if ``unit``."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for start in range(0, values.shape[0], chunk):
        rows = slice(start, min(start + chunk, values.shape[0]))
        block = values[rows]
        block = np.asarray(block, dtype=np.float64)
        yield rows, l2_normalise(block) if unit else block


def identity_sums(
    values: np.ndarray,
    codes: np.ndarray,
    n_ids: int,
    rows: np.ndarray | None = None,
    unit: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Per-identity sum (K, d) of the (normalised if ``unit``) rows of ``values``.

    Args:
        values: (n, d) array or memmap.
        codes: (n,) identity codes from :func:`identity_codes`.
        n_ids: number of identities K.
        rows: optional (n,) boolean mask of the rows to include.
        unit: L2-normalise each row before summing.
        chunk: rows read at a time.
    """
    sums = np.zeros((n_ids, values.shape[1]), dtype=np.float64)
    for sl, block in iter_row_chunks(values, chunk, unit):
        c = codes[sl]
        if rows is not None:
            block, c = block[rows[sl]], c[rows[sl]]
        if len(c) == 0:
            continue
        # Sparse (identities in chunk) x (rows) indicator product: one pass, no (n, K) matrix.
        uniq, inv = np.unique(c, return_inverse=True)
        indicator = sp.csr_matrix(
            (np.ones(len(c)), (inv, np.arange(len(c)))), shape=(len(uniq), len(c))
        )
        sums[uniq] += indicator @ block
    return sums
