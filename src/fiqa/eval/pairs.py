"""Comparison pairs and their cosine similarity scores.

``all_pairs`` enumerates every ``i < j`` pair of a labelled sample set. It is O(n^2) in time and
memory (about 17 bytes per pair: 10 k samples -> 50 M pairs -> ~850 MB) and is meant for small
benchmark sets; sampled impostor pairs for large sets come later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_CHUNK_SIZE = 65_536


@dataclass(frozen=True, eq=False)
class Pairs:
    """Index pairs into a sample array.

    Attributes:
        a: Index of the first sample of each pair, int64, shape ``(p,)``.
        b: Index of the second sample, int64, ``a < b`` for pairs from ``all_pairs``.
        genuine: True where both samples share an identity (mated comparison).
    """

    a: NDArray[np.int64]
    b: NDArray[np.int64]
    genuine: NDArray[np.bool_]

    def __post_init__(self) -> None:
        a = np.asarray(self.a, dtype=np.int64)
        b = np.asarray(self.b, dtype=np.int64)
        genuine = np.asarray(self.genuine, dtype=bool)
        if not (a.ndim == 1 and a.shape == b.shape == genuine.shape):
            raise ValueError(
                f"Pairs needs 1-D a, b, genuine of equal length, got shapes "
                f"{a.shape}, {b.shape}, {genuine.shape}"
            )
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "genuine", genuine)

    def __len__(self) -> int:
        return int(self.a.size)

    @property
    def n_genuine(self) -> int:
        """Number of genuine (mated) pairs."""
        return int(np.count_nonzero(self.genuine))

    @property
    def n_impostor(self) -> int:
        """Number of impostor (non-mated) pairs."""
        return len(self) - self.n_genuine


def all_pairs(identities: ArrayLike) -> Pairs:
    """All ``i < j`` pairs of ``n`` samples, labelled genuine where identities match.

    Vectorised with ``np.triu_indices(n, k=1)``; yields ``n (n - 1) / 2`` pairs in row-major
    order. O(n^2) time and memory: intended for small benchmark sets.

    Args:
        identities: One identity label per sample (ints or strings), shape ``(n,)``.

    Returns:
        The pairs, with ``genuine[p] = identities[a[p]] == identities[b[p]]``.

    Raises:
        ValueError: If ``identities`` is not 1-D or has fewer than two samples.
    """
    labels = np.asarray(identities)
    if labels.ndim != 1:
        raise ValueError(f"identities must be 1-D, got shape {labels.shape}")
    if labels.size < 2:
        raise ValueError(f"identities has {labels.size} sample(s); at least 2 are needed")
    # Integer codes make the comparison cheap for string labels too.
    _, codes = np.unique(labels, return_inverse=True)
    a, b = np.triu_indices(labels.size, k=1)
    return Pairs(a=a, b=b, genuine=codes[a] == codes[b])


def pair_scores(
    embeddings: ArrayLike, pairs: Pairs, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> NDArray[np.float64]:
    """Cosine similarity of each pair: ``s_p = <e[a_p], e[b_p]>``.

    Embeddings are assumed L2-normalised (as the FR stage stores them), so the dot product is
    the cosine similarity; no renormalisation is done here. Rowwise dot products are computed
    in float64 over chunks of ``chunk_size`` pairs, never building an ``n x n`` matrix, so
    float16 memory-mapped embeddings work without loading them whole.

    Args:
        embeddings: Array of shape ``(n, d)``, rows L2-normalised.
        pairs: Pairs indexing rows of ``embeddings``.
        chunk_size: Pairs per chunk (bounds the temporary memory to ``2 * chunk_size * d``).

    Returns:
        Similarity scores, float64, shape ``(len(pairs),)``.

    Raises:
        ValueError: On a bad shape, an out-of-range index, a non-positive ``chunk_size`` or a
            non-finite score (e.g. NaN embeddings; the message names the pair and samples).
    """
    emb = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {emb.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n_pairs = len(pairs)
    if n_pairs and (
        min(pairs.a.min(), pairs.b.min()) < 0 or max(pairs.a.max(), pairs.b.max()) >= len(emb)
    ):
        raise ValueError(f"pair indices fall outside the {len(emb)} embedding rows")
    scores = np.empty(n_pairs, dtype=np.float64)
    for start in range(0, n_pairs, chunk_size):
        stop = min(start + chunk_size, n_pairs)
        ea = np.asarray(emb[pairs.a[start:stop]], dtype=np.float64)
        eb = np.asarray(emb[pairs.b[start:stop]], dtype=np.float64)
        scores[start:stop] = np.einsum("ij,ij->i", ea, eb)
    finite = np.isfinite(scores)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(
            f"pair {bad} (samples {pairs.a[bad]} and {pairs.b[bad]}) has a non-finite score; "
            "check those embeddings for NaN/inf"
        )
    return scores
