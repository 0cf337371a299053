"""CR-FIQA and SDD-FIQA pseudo-labels: hand-computed cases, chunking, seeding, behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr, wasserstein_distance

from fiqa.label.crfiqa import EPS, crfiqa_from_similarities, crfiqa_scores, unit_class_centres
from fiqa.label.sddfiqa import sample_distinct, scale_to_100, sddfiqa_scores, wasserstein1_equal

PAPER = {"samples": 24, "repeats": 12}  # SDD-FIQA's m and repeats (Ou et al. 2021)

R2, R5 = np.sqrt(2.0), np.sqrt(5.0)


def noisy_identities(
    seed: int = 0, k: int = 30, per_id: int = 20, d: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """e = unit centre + sigma_i * noise (noise norm ~ 1): (embeddings, identities, sigma)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(k), per_id)
    sigma = rng.uniform(0.1, 1.5, len(ids))
    e = centres[ids] + sigma[:, None] * rng.standard_normal((len(ids), d)) / np.sqrt(d)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32), ids, sigma


def as_memmap(x: np.ndarray, path: Path) -> np.memmap:
    mm = np.memmap(path, np.float16, "w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    return np.memmap(path, np.float16, "r", shape=x.shape)


# ---------------------------------------------------------------- CR-FIQA


def test_crfiqa_hand_case() -> None:
    # A: e1 = (1, 0), e2 = (0, 1)     -> c_A = (1, 1)/sqrt2
    # B: e3 = (-1, 0), e5 = (-.6, .8) -> c_B = (-1.6, .8)/|.| = (-2, 1)/sqrt5
    # C: e4 = (0, -1)                 -> c_C = (0, -1)
    e = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [-0.6, 0.8]]) * 3.0  # renormalised inside
    ids = np.array(["A", "A", "B", "C", "B"])
    expected = [
        (1 / R2) / (0 + 1 + EPS),  # e1: CCS 1/sqrt2; to B -2/sqrt5, to C 0 -> NNCCS 0
        (1 / R2) / (1 / R5 + 1 + EPS),  # e2: to B 1/sqrt5, to C -1 -> NNCCS 1/sqrt5
        (2 / R5) / (0 + 1 + EPS),  # e3: CCS 2/sqrt5; to A -1/sqrt2, to C 0 -> NNCCS 0
        1 / (-1 / R5 + 1 + EPS),  # e4: CCS 1; to A -1/sqrt2, to B -1/sqrt5 -> NNCCS -1/sqrt5
        (2 / R5) / (0.2 / R2 + 1 + EPS),  # e5: CCS 2/sqrt5; to A .2/sqrt2, to C -.8
    ]
    centres, codes = unit_class_centres(e, ids)
    np.testing.assert_allclose(centres, [[1 / R2, 1 / R2], [-2 / R5, 1 / R5], [0, -1]], atol=1e-12)
    np.testing.assert_array_equal(codes, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(crfiqa_scores(e, ids, form="paper"), expected, rtol=0, atol=1e-9)


def test_crfiqa_code_form_is_ccs_over_nnccs_and_can_flip_the_ranking() -> None:
    # x: CCS 0.9, NNCCS 0.8; y: CCS 0.5, NNCCS 0.4. Paper: 0.9 / 1.8 = 0.5 > 0.5 / 1.4 = 0.357;
    # the public code's CCS / NNCCS: 1.125 < 1.25. The two forms rank x and y oppositely.
    ccs, nnccs = np.array([0.9, 0.5]), np.array([0.8, 0.4])
    paper = crfiqa_from_similarities(ccs, nnccs, eps=0.0)
    code = crfiqa_from_similarities(ccs, nnccs, form="code")
    np.testing.assert_allclose(paper, [0.5, 0.5 / 1.4])
    np.testing.assert_allclose(code, [1.125, 1.25])
    # on the hand case: e2 and e5 have positive NNCCS; e4's is negative: held at eps
    e = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [-0.6, 0.8]]) * 3.0
    q = crfiqa_scores(e, np.array(["A", "A", "B", "C", "B"]), form="code")
    np.testing.assert_allclose(q[[1, 4]], [(1 / R2) / (1 / R5), (2 / R5) / (0.2 / R2)])
    assert q[3] == pytest.approx(1 / EPS)
    with pytest.raises(ValueError, match="form must be one of"):
        crfiqa_from_similarities(ccs, nnccs, form="blog")


def test_crfiqa_chunking_invariance(tmp_path: Path) -> None:
    e, ids, _ = noisy_identities()
    e64 = e.astype(np.float64)
    whole = crfiqa_scores(e64, ids, form="paper")
    np.testing.assert_allclose(
        crfiqa_scores(e64, ids, chunk_rows=1, form="paper"), whole, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        crfiqa_scores(e64, ids, chunk_rows=7, form="paper"), whole, rtol=0, atol=1e-12
    )
    # float16 memmap storage: same labels up to float16 rounding.
    from_mm = crfiqa_scores(as_memmap(e, tmp_path / "e.f16"), ids, chunk_rows=64, form="paper")
    np.testing.assert_allclose(from_mm, whole, atol=2e-3)


def test_crfiqa_given_centres() -> None:
    # Head weights (unnormalised): c0 = (1, 0), c1 = (0, 1), c2 = (-1, 0).
    centres = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    e = np.array([[0.6, 0.8], [0.0, 1.0]])
    q = crfiqa_scores(e, np.array([0, 1]), centres=centres, form="paper")
    # e0 (class 0): CCS .6; to c1 .8, to c2 -.6 -> NNCCS .8.  e1 (class 1): CCS 1, NNCCS 0.
    np.testing.assert_allclose(q, [0.6 / (1.8 + EPS), 1 / (1 + EPS)], atol=1e-12)
    with pytest.raises(ValueError, match="only 3 centres"):
        crfiqa_scores(e, np.array([0, 3]), centres=centres, form="paper")
    with pytest.raises(ValueError, match="integer class ids"):
        crfiqa_scores(e, np.array(["a", "b"]), centres=centres, form="paper")


def test_crfiqa_single_identity_raises() -> None:
    e = np.eye(3)
    with pytest.raises(ValueError, match="at least two identities"):
        crfiqa_scores(e, np.array(["x", "x", "x"]), form="paper")


# ---------------------------------------------------------------- SDD-FIQA


def test_wasserstein1_equal_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 24)), rng.normal(0.3, 2.0, size=(5, 24))
    expected = [wasserstein_distance(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(wasserstein1_equal(a, b), expected, atol=1e-12)


def test_sample_distinct_is_uniform_and_distinct() -> None:
    u = np.random.default_rng(2).random((40_000, 5))
    draws = sample_distinct(u, np.full(40_000, 8))
    assert all(len(set(row)) == 5 for row in draws[:2000])
    counts = np.bincount(draws.ravel(), minlength=8)
    np.testing.assert_allclose(counts / len(u), 5 / 8, atol=0.01)  # each value in 5/8 of rows
    few = sample_distinct(u[:100], np.full(100, 3))  # fewer than m: with replacement
    assert few.min() >= 0 and few.max() <= 2


def hand_sdd_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identities in orthogonal 2-D subspaces, so every inter similarity is 0. Identities 0-3 have
    two images at cosine s_k: every intra similarity is s_k, hence W1 = |s_k - 0| = s_k. Identity
    4 has three identical images (intra 1, W1 = 1); identity 5 has one image (no intra set)."""
    s = np.array([1.0, 0.8, 0.5, 0.2])
    rows, ids = [], []
    for k, sk in enumerate(s):
        for v in ([1.0, 0.0], [sk, np.sqrt(1 - sk**2)]):
            x = np.zeros(12)
            x[2 * k : 2 * k + 2] = v
            rows.append(x)
            ids.append(f"id{k}")
    for _ in range(3):
        rows.append(np.eye(12)[8])
        ids.append("id4")
    rows.append(np.eye(12)[10])
    ids.append("id5")
    raw = np.concatenate([np.repeat(s, 2), [1.0, 1.0, 1.0], [s.min()]])
    return np.array(rows), np.array(ids), raw


@pytest.mark.parametrize("m", [1, 2, 24])
def test_sddfiqa_hand_case(m: int) -> None:
    e, ids, raw = hand_sdd_case()
    got_raw = sddfiqa_scores(e, ids, samples=m, repeats=3, seed=0, scale=False)
    np.testing.assert_allclose(got_raw, raw, atol=1e-12)
    # Scaled: 100 (raw - 0.2) / (1 - 0.2); the one-image identity gets the minimum -> 0.
    scaled = sddfiqa_scores(e, ids, samples=m, repeats=3, seed=0)
    np.testing.assert_allclose(scaled, 100 * (raw - 0.2) / 0.8, atol=1e-9)
    assert scaled[-1] == 0.0


def test_sddfiqa_seed_determinism() -> None:
    e, ids, _ = noisy_identities()
    a = sddfiqa_scores(e, ids, **PAPER, seed=3)
    np.testing.assert_array_equal(a, sddfiqa_scores(e, ids, **PAPER, seed=3))
    assert not np.allclose(a, sddfiqa_scores(e, ids, **PAPER, seed=4))


@pytest.mark.parametrize("pool_size", [None, 100])  # 100 < repeats * m: drawn with replacement
def test_sddfiqa_chunk_size_invariance(pool_size: int | None) -> None:
    e, ids, _ = noisy_identities(k=75, per_id=20)  # 1500 samples: two blocks, a random pool
    e64 = e.astype(np.float64)
    ref = sddfiqa_scores(e64, ids, **PAPER, seed=1, scale=False, pool_size=pool_size)
    for rows in (1, 7, 5000):
        got = sddfiqa_scores(
            e64, ids, **PAPER, seed=1, scale=False, chunk_rows=rows, pool_size=pool_size
        )
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_sddfiqa_scaling_and_memmap(tmp_path: Path) -> None:
    e, ids, _ = noisy_identities()
    raw = sddfiqa_scores(e, ids, **PAPER, seed=0, scale=False)
    scaled = sddfiqa_scores(e, ids, **PAPER, seed=0)
    assert scaled.min() == 0.0 and scaled.max() == 100.0
    np.testing.assert_allclose(scaled, scale_to_100(raw), atol=1e-9)
    from_mm = sddfiqa_scores(as_memmap(e, tmp_path / "e.f16"), ids, **PAPER, seed=0, scale=False)
    np.testing.assert_allclose(from_mm, raw, atol=2e-3)  # same draws, float16 rounding only


def test_sddfiqa_invalid_inputs() -> None:
    e = np.eye(4)
    with pytest.raises(ValueError, match="at least two identities"):
        sddfiqa_scores(e, np.zeros(4, int), **PAPER, seed=0)
    with pytest.raises(ValueError, match=">= 2 images"):
        sddfiqa_scores(e, np.arange(4), **PAPER, seed=0)


def test_noisier_samples_rank_lower() -> None:
    e, ids, sigma = noisy_identities()
    for q in (crfiqa_scores(e, ids, form="paper"), sddfiqa_scores(e, ids, **PAPER, seed=0)):
        assert spearmanr(q, sigma)[0] < -0.5
