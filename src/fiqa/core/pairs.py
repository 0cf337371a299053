"""Comparison pairs of an identity-labelled sample set, and their cosine similarity scores.

``identity_pairs`` is the one pair builder: every genuine pair ``i < j`` (or a seeded sample of
at most ``genuine_per_identity`` of each identity) plus either every impostor pair (the default,
``all_pairs``: O(n^2) time and memory, about 17 bytes per pair, so 10 k samples -> 50 M pairs ->
~850 MB; meant for small sets) or a seeded uniform sample of the impostor pairs that never builds
an ``n x n`` matrix (large sets, identity-folder benchmarks). ``PairSampling`` is the rule of a
split of the prepared set: all pairs up to a size, a bounded sample above it.
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


def identity_pairs(
    identities: ArrayLike,
    impostors: int | None = None,
    seed: int = 0,
    genuine_per_identity: int | None = None,
) -> Pairs:
    """Every (or a capped sample of the) genuine pairs and all or ``impostors`` sampled impostor
    pairs, each with ``a < b``.

    Args:
        identities: One identity label per sample (ints or strings), shape ``(n,)``, any order.
        impostors: None (with ``genuine_per_identity`` None): every pair (``all_pairs``,
            row-major ``i < j`` order). A number: that many impostor pairs drawn uniformly
            without replacement (all when fewer exist); the genuine pairs come first.
        seed: Seed of the samples (impostors and capped genuine pairs).
        genuine_per_identity: None: every genuine pair. A number: at most that many genuine
            pairs of each identity, drawn uniformly without replacement from its
            ``c (c - 1) / 2`` pairs (all of them when it has no more).

    Raises:
        ValueError: If ``identities`` is not 1-D or a count is negative.
    """
    if impostors is None and genuine_per_identity is None:
        return all_pairs(identities)
    for key, value in (("impostors", impostors), ("genuine_per_identity", genuine_per_identity)):
        if value is not None and value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    labels = np.asarray(identities)
    if labels.ndim != 1:
        raise ValueError(f"identities must be 1-D, got shape {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")  # identity blocks, each in input order
    grouped = codes[order]
    starts = np.concatenate(([0], np.flatnonzero(grouped[1:] != grouped[:-1]) + 1))
    counts = np.diff(np.concatenate((starts, [grouped.size])))
    rng = np.random.default_rng(seed)
    blocks = [_block_pairs(int(count), genuine_per_identity, rng) for count in counts]
    genuine_a = np.concatenate([a + start for (a, _), start in zip(blocks, starts, strict=True)]
                               or [np.zeros(0, np.int64)])  # fmt: skip
    genuine_b = np.concatenate([b + start for (_, b), start in zip(blocks, starts, strict=True)]
                               or [np.zeros(0, np.int64)])  # fmt: skip
    group_end = np.repeat(starts + counts, counts)
    if impostors is None:  # every impostor pair: each sample with every later block
        impostors = int(np.sum(group_end.size - group_end))
    impostor_a, impostor_b = _sample_impostor_pairs(group_end, int(impostors), rng)
    a = order[np.concatenate([genuine_a, impostor_a]).astype(np.int64)]
    b = order[np.concatenate([genuine_b, impostor_b]).astype(np.int64)]
    genuine = np.arange(a.size) < genuine_a.size
    return Pairs(a=np.minimum(a, b), b=np.maximum(a, b), genuine=genuine)


def _block_pairs(
    count: int, cap: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The ``i < j`` pairs of ``count`` samples, or ``cap`` of them drawn uniformly (sorted)."""
    total = count * (count - 1) // 2
    if cap is None or total <= cap:
        return np.triu_indices(count, k=1)
    flat = np.sort(rng.choice(total, size=cap, replace=False)).astype(np.int64)
    # Row i of the upper triangle holds count - 1 - i pairs and starts at row_start[i].
    row_start = np.concatenate(([0], np.cumsum(np.arange(count - 1, 0, -1))))
    rows = np.searchsorted(row_start, flat, side="right") - 1
    return rows, rows + 1 + (flat - row_start[rows])


@dataclass
class PairSampling:
    """The pairs of a split of the prepared set (the prepared-set benchmark, training's
    validation EDC): all pairs of a split of at most ``all_up_to`` faces, else a bounded,
    seeded sample that never builds an ``n x n`` matrix.

    Attributes:
        all_up_to: A split of at most this many faces compares all its pairs (10 k faces:
            50 M pairs, ~0.85 GB).
        genuine_per_identity: A larger split: at most this many genuine pairs of each identity
            (uniform without replacement; all of an identity with fewer).
        impostors: A larger split: this many impostor pairs, uniform over all cross-identity
            pairs without replacement.
        seed: Seed of both samples.
    """

    all_up_to: int
    genuine_per_identity: int
    impostors: int
    seed: int

    def pairs(self, identities: ArrayLike) -> Pairs:
        """The pairs of samples labelled ``identities`` under this rule."""
        labels = np.asarray(identities)
        if labels.size <= self.all_up_to:
            return all_pairs(labels)
        return identity_pairs(labels, self.impostors, self.seed, self.genuine_per_identity)


def _sample_impostor_pairs(
    group_end: np.ndarray, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform sample without replacement of cross-identity pairs ``i < j``, sorted.

    Samples are grouped by identity, so the impostor partners ``j > i`` of ``i`` are exactly
    ``group_end[i] .. n - 1``: pairs are numbered row by row and sampled numbers mapped back
    through the cumulative row lengths, with no ``n x n`` matrix.
    """
    row_start = np.concatenate(([0], np.cumsum(group_end.size - group_end)))
    total = int(row_start[-1])
    if n_samples >= total:
        flat = np.arange(total, dtype=np.int64)
    else:
        flat = np.sort(rng.choice(total, size=n_samples, replace=False)).astype(np.int64)
    rows = np.searchsorted(row_start, flat, side="right") - 1  # skips empty rows
    return rows, group_end[rows] + (flat - row_start[rows])


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
