"""Pair construction and chunked cosine similarity."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa.core.pairs import Pairs, PairSampling, all_pairs, identity_pairs, pair_scores


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


def test_genuine_pairs_are_capped_per_identity_and_cover_the_block_uniformly() -> None:
    # A x4 (6 pairs), B x2 (1 pair), C x1 (none): at most 2 per identity -> 2 + 1 genuine.
    ids = np.array(["A", "B", "A", "A", "C", "B", "A"])
    pairs = identity_pairs(ids, impostors=5, seed=1, genuine_per_identity=2)
    assert pairs.n_genuine == 3 and pairs.n_impostor == 5
    assert (ids[pairs.a] == ids[pairs.b]).tolist() == pairs.genuine.tolist()
    assert (pairs.a < pairs.b).all()
    assert len(set(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True))) == len(pairs)
    # each of A's 6 pairs is drawn with probability 2/6: ~1/3 of 3,000 draws each
    a_rows = np.flatnonzero(ids == "A")
    seen: dict[tuple[int, int], int] = {}
    for seed in range(3000):
        p = identity_pairs(ids, impostors=0, seed=seed, genuine_per_identity=2)
        for a, b in zip(p.a.tolist(), p.b.tolist(), strict=True):
            if a in a_rows:
                seen[(a, b)] = seen.get((a, b), 0) + 1
    assert len(seen) == 6 and all(900 < count < 1100 for count in seen.values())


def test_genuine_cap_keeps_the_impostor_sample_of_the_seed() -> None:
    ids = np.repeat(np.arange(6), 5)
    capped = identity_pairs(ids, impostors=40, seed=7, genuine_per_identity=3)
    uncapped = identity_pairs(ids, impostors=40, seed=7)
    assert capped.n_genuine == 18 and uncapped.n_genuine == 60
    assert not (ids[capped.a[~capped.genuine]] == ids[capped.b[~capped.genuine]]).any()
    again = identity_pairs(ids, impostors=40, seed=7, genuine_per_identity=3)
    assert capped.a.tolist() == again.a.tolist() and capped.b.tolist() == again.b.tolist()


def test_pair_sampling_is_all_pairs_up_to_its_threshold_and_bounded_above() -> None:
    rule = PairSampling(all_up_to=6, genuine_per_identity=1, impostors=4, seed=0)
    small = np.array([0, 0, 1, 1, 2, 2])  # 6 faces: all 15 pairs
    reference = all_pairs(small)
    got = rule.pairs(small)
    assert (
        got.a.tolist() == reference.a.tolist()
        and got.genuine.tolist() == reference.genuine.tolist()
    )
    large = np.array([0, 0, 0, 1, 1, 2, 2])  # 7 faces: 1 genuine per identity + 4 impostors
    sampled = rule.pairs(large)
    assert (sampled.n_genuine, sampled.n_impostor) == (3, 4)
    # millions of faces: bounded by the rule, not by n^2 (1e12 pairs here)
    rng = np.random.default_rng(0)
    huge = rng.integers(0, 20_000, 1_500_000)
    big = PairSampling(all_up_to=10_000, genuine_per_identity=10, impostors=100_000, seed=0)
    pairs = big.pairs(huge)
    assert pairs.n_impostor == 100_000 and pairs.n_genuine <= 10 * 20_000
    assert not (huge[pairs.a[~pairs.genuine]] == huge[pairs.b[~pairs.genuine]]).any()
    assert (huge[pairs.a[pairs.genuine]] == huge[pairs.b[pairs.genuine]]).all()


def test_identity_pairs_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="genuine_per_identity must be >= 0"):
        identity_pairs([0, 0, 1], impostors=1, genuine_per_identity=-1)
