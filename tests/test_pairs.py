"""Pair construction and chunked cosine similarity."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa.core.pairs import Pairs, all_pairs, pair_scores


def test_all_pairs_counts_and_labels() -> None:
    # Identities: A x3, B x2, C x1 -> 6 samples, 15 pairs.
    # Genuine: C(3,2) + C(2,2) + 0 = 3 + 1 = 4; impostor: 15 - 4 = 11.
    pairs = all_pairs(["A", "B", "A", "C", "B", "A"])
    assert len(pairs) == 15
    assert (pairs.n_genuine, pairs.n_impostor) == (4, 11)
    assert pairs.a.dtype == np.int64 and pairs.b.dtype == np.int64
    assert np.all(pairs.a < pairs.b)
    genuine = {
        (int(a), int(b))
        for a, b in zip(pairs.a[pairs.genuine], pairs.b[pairs.genuine], strict=True)
    }
    assert genuine == {(0, 2), (0, 5), (2, 5), (1, 4)}
    # Every unordered pair exactly once.
    assert len({(int(a), int(b)) for a, b in zip(pairs.a, pairs.b, strict=True)}) == 15


def test_all_pairs_integer_labels_and_errors() -> None:
    pairs = all_pairs(np.array([7, 7]))
    np.testing.assert_array_equal(pairs.genuine, [True])
    with pytest.raises(ValueError, match="at least 2"):
        all_pairs([3])
    with pytest.raises(ValueError, match="1-D"):
        all_pairs([[1, 2], [3, 4]])


def test_pair_scores_match_direct_cosine() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(20, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = all_pairs(rng.integers(0, 4, 20))
    expected = np.array([emb[a] @ emb[b] for a, b in zip(pairs.a, pairs.b, strict=True)])
    for chunk_size in (1, 7, 190, 10_000):
        np.testing.assert_allclose(pair_scores(emb, pairs, chunk_size), expected, atol=1e-12)
    # float16 input is upcast per chunk; hand-checked 2-D case: cos(0) = 1, cos(90 deg) = 0.
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float16)
    scores = pair_scores(unit, all_pairs([0, 1, 0]))
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, [0.0, 1.0, 0.0])


def test_pair_scores_errors() -> None:
    emb = np.eye(3)
    with pytest.raises(ValueError, match="outside the 3 embedding rows"):
        pair_scores(emb, Pairs(a=[0], b=[3], genuine=[False]))
    with pytest.raises(ValueError, match="2-D"):
        pair_scores(np.ones(3), all_pairs([0, 1, 2]))
    with pytest.raises(ValueError, match="chunk_size"):
        pair_scores(emb, all_pairs([0, 1, 2]), chunk_size=0)
    emb[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"samples 0 and 1"):
        pair_scores(emb, all_pairs([0, 1, 2]))
