"""eDifFIQA label correction, label-column fusion and the Huo et al. terms on hand-computable cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fiqa.label.correction import ediffiqa_correct
from fiqa.label.fusion import fuse, normalise
from fiqa.label.huo import huo_fused, intra_class_score, visual_score

R2 = 1 / math.sqrt(2)
PUBLIC = {"eps": 0.5, "top": 0.2}  # the public eDifFIQA code's settings
EQ5 = (0.2, 0.4, 0.4)  # Huo et al.'s weights of S_v, S_r, S_c
PEN = 0.5 * (1 - R2)  # eps * (1 - cos 45deg) = 0.146447

# Identity A = rows 0-4, B = rows 5-9. Global top 20% of 10 = 2 rows: 0 (1.0) and 1 (0.8), both A.
QUALITY = np.array([1.0, 0.8, 0.5, 0.3, 0.2, 0.6, 0.7, 0.4, 0.0, 0.15])
IDS = np.array(["A"] * 5 + ["B"] * 5)
EMB = np.array(
    [
        [2.0, 0.0],  # A, top: unit (1, 0)
        [0.0, 3.0],  # A, top: unit (0, 1)  -> centre A = (1, 1)/sqrt2 (not (1, 1.5) normalised)
        [1.0, 1.0],  # A: cos 1
        [-1.0, -1.0],  # A: cos -1
        [1.0, 0.0],  # A: cos 1/sqrt2
        [1.0, 0.0],  # B: cos 0
        [0.0, -1.0],  # B: best B image (0.7), none of B in the top -> centre B = (0, -1)
        [0.0, -2.0],  # B: cos 1
        [0.0, 1.0],  # B: cos -1
        [-3.0, -4.0],  # B: cos 0.8
    ]
)
# q' = clip(q - 0.5 (1 - cos), 0, 1):
EXPECTED = np.array(
    [
        1.0 - PEN,  # 0.853553
        0.8 - PEN,  # 0.653553
        0.5,  # cos 1 -> unchanged
        0.0,  # 0.3 - 1.0 -> clipped at 0
        0.2 - PEN,  # 0.053553
        0.1,  # 0.6 - 0.5
        0.7,  # the centre itself
        0.4,
        0.0,  # 0.0 - 1.0 -> clipped at 0
        0.05,  # 0.15 - 0.5 * 0.2
    ]
)


def test_ediffiqa_centres_from_top_images_fallback_and_clipping():
    q = ediffiqa_correct(QUALITY, EMB, IDS, **PUBLIC, normalise=False)
    np.testing.assert_allclose(q, EXPECTED, atol=1e-12)


def test_ediffiqa_chunked_and_float16_memmap(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, EMB.astype(np.float16))  # all values exact in float16
    emb = np.load(path, mmap_mode="r")
    q = ediffiqa_correct(QUALITY, emb, list(IDS), **PUBLIC, normalise=False, chunk=3)
    np.testing.assert_allclose(q, EXPECTED, atol=1e-6)


def test_ediffiqa_normalises_a_0_100_base_scale():
    # QUALITY spans exactly [0, 1], so min-max of 100 * QUALITY gives QUALITY back.
    q = ediffiqa_correct(100 * QUALITY, EMB, IDS, **PUBLIC, normalise=True)
    np.testing.assert_allclose(q, EXPECTED, atol=1e-12)
    # Another affine scale, 20 + 50 q, gives the same labels.
    np.testing.assert_allclose(
        ediffiqa_correct(20 + 50 * QUALITY, EMB, IDS, **PUBLIC), EXPECTED, atol=1e-12
    )
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*normalise=True"):
        ediffiqa_correct(100 * QUALITY, EMB, IDS, **PUBLIC, normalise=False)


def test_ediffiqa_larger_top_uses_identity_top_images():
    # top = 0.3 -> 3 rows: 0, 1 (A) and 6 (B, 0.7): same centres, B now from the top itself.
    q = ediffiqa_correct(QUALITY, EMB, IDS, eps=0.5, top=0.3, normalise=False)
    np.testing.assert_allclose(q, EXPECTED, atol=1e-12)
    # top = 1 -> centre B = normalised sum of B's unit vectors:
    # (1,0) + (0,-1) + (0,-1) + (0,1) + (-0.6,-0.8) = (0.4, -1.8); row 5 cos = 0.4 / 1.843909
    q = ediffiqa_correct(QUALITY, EMB, IDS, eps=0.5, top=1.0, normalise=False)
    cos5 = 0.4 / math.hypot(0.4, 1.8)
    assert q[5] == pytest.approx(0.6 - 0.5 * (1 - cos5), abs=1e-12)


def test_ediffiqa_errors_name_the_argument():
    with pytest.raises(ValueError, match="identities"):
        ediffiqa_correct(QUALITY, EMB, IDS[:9], **PUBLIC)
    with pytest.raises(ValueError, match="embeddings"):
        ediffiqa_correct(QUALITY, EMB[:9], IDS, **PUBLIC)
    with pytest.raises(ValueError, match="quality is NaN"):
        ediffiqa_correct(np.r_[QUALITY[:9], np.nan], EMB, IDS, **PUBLIC)
    with pytest.raises(ValueError, match="top"):
        ediffiqa_correct(QUALITY, EMB, IDS, eps=0.5, top=0.0)


def test_normalise_minmax_rank_z():
    np.testing.assert_allclose(normalise([2.0, 4.0, 6.0], "minmax"), [0.0, 0.5, 1.0])
    # average ranks of [10, 20, 20, 40] = [1, 2.5, 2.5, 4]; (r - 1) / 3 = [0, 0.5, 0.5, 1]
    np.testing.assert_allclose(normalise([10, 20, 20, 40], "rank"), [0.0, 0.5, 0.5, 1.0])
    # [1, 3, 3, 1]: mean 2, std 1 -> z = [-1, 1, 1, -1]; Phi(1) = 0.841345, Phi(-1) = 0.158655
    np.testing.assert_allclose(
        normalise([1.0, 3.0, 3.0, 1.0], "z"), [0.158655, 0.841345, 0.841345, 0.158655], atol=1e-6
    )
    np.testing.assert_allclose(normalise([3.0, -1.0], "none"), [3.0, -1.0])
    for how in ("minmax", "rank", "z"):  # constant column -> mid-scale
        np.testing.assert_allclose(normalise([7.0, 7.0, 7.0], how), [0.5, 0.5, 0.5])


def test_normalise_errors_name_the_column():
    with pytest.raises(ValueError, match="column s_r has NaN"):
        normalise(np.array([1.0, np.nan]), "rank", name="s_r")
    with pytest.raises(ValueError, match="unknown normalisation 'softmax'"):
        normalise([1.0], "softmax")


def test_fuse_weights():
    # minmax: a = [0, 5, 10] -> [0, 0.5, 1]; b = [3, 1, 2] -> [1, 0, 0.5]
    # (3 a + 1 b) / 4 = [0.25, 0.375, 0.875]; column c has no weight and is not used
    cols = {"a": np.array([0.0, 5.0, 10.0]), "b": np.array([3.0, 1.0, 2.0]), "c": np.zeros(3)}
    fused = fuse(cols, {"a": 3.0, "b": 1.0}, how="minmax")
    np.testing.assert_allclose(fused, [0.25, 0.375, 0.875])
    # rank: a -> [0, 0.5, 1], b -> [1, 0, 0.5]; equal weights -> [0.5, 0.25, 0.75]
    np.testing.assert_allclose(fuse(cols, {"a": 1, "b": 1}), [0.5, 0.25, 0.75])


def test_fuse_errors_list_names():
    cols = {"a": np.ones(3), "b": np.ones(3)}
    with pytest.raises(ValueError, match=r"unknown columns \['zz'\]; available: \['a', 'b'\]"):
        fuse(cols, {"a": 1.0, "zz": 1.0})
    with pytest.raises(ValueError, match="total weight must be > 0"):
        fuse(cols, {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match=r"negative for \['b'\]"):
        fuse(cols, {"a": 1.0, "b": -0.5})
    with pytest.raises(ValueError, match="differ in length"):
        fuse({"a": np.ones(3), "b": np.ones(2)}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"columns \['b'\] have infinite values"):
        fuse({"a": np.ones(2), "b": np.array([1.0, np.inf])}, {"a": 1.0, "b": 1.0})


def test_fuse_leaves_samples_without_a_label_out():
    # b has no label for row 1 (e.g. the only image of its identity): the fused value is NaN
    # there, and the normalisation runs on rows 0, 2, 3 only: a -> (0, 0.5, 1), b -> (1, 0, 0.5)
    a, b = np.array([1.0, 9.0, 2.0, 3.0]), np.array([5.0, np.nan, 3.0, 4.0])
    fused = fuse({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, how="rank")
    assert np.isnan(fused[1])
    np.testing.assert_allclose(fused[[0, 2, 3]], [0.5, 0.25, 0.75])


def test_intra_class_score_by_hand():
    # A: (3,0), (0,1), (2,2): cos01 = 0, cos02 = cos12 = 1/sqrt2
    #   S_c0 = ((0+1)/2 + (1/sqrt2+1)/2) / 2 = (0.5 + 0.853553) / 2 = 0.676777 = S_c1
    #   S_c2 = (0.853553 + 0.853553) / 2 = 0.853553
    # B: one image -> 0.5 (single_value); C: (0,1), (0,-1): cos -1 -> 0
    emb = np.array([[3.0, 0.0], [0.0, 1.0], [2.0, 2.0], [5.0, 1.0], [0.0, 1.0], [0.0, -1.0]])
    ids = np.array([0, 0, 0, 1, 2, 2])
    half = (1 + R2) / 2
    expected = [(0.5 + half) / 2, (0.5 + half) / 2, half, 0.5, 0.0, 0.0]
    np.testing.assert_allclose(intra_class_score(emb, ids), expected, atol=1e-12)
    np.testing.assert_allclose(intra_class_score(emb, ids, chunk=2), expected, atol=1e-12)
    single_nan = intra_class_score(emb, ids, single_value=float("nan"))
    assert np.isnan(single_nan[3]) and np.isfinite(np.delete(single_nan, 3)).all()


def test_visual_score_by_hand():
    # A: f = [0, 1, 2, 5], mean 2 -> d = [2, 1, 0, 3], d_min 0, d_max 3 -> 1 - d/3 = [1/3, 2/3, 1, 0]
    # B: f = [0, 1, 5, 6], mean 3 -> d = [3, 2, 2, 3], d_min 2, d_max 3 -> 1 - d/1 = [-2, -1, -1, -2]
    #    (eq. 1 as written goes below 0); identity: 1 - (d - 2)/1 = [0, 1, 1, 0]
    # C: f = [0, 4] -> d = [2, 2], d_max = d_min -> 1;  D: one image -> 1
    # global: max d = 3 -> 1 - d/3 = [1/3, 2/3, 1, 0, 0, 1/3, 1/3, 0, 1/3, 1/3, 1]
    f = np.array([0, 1, 2, 5, 0, 1, 5, 6, 0, 4, 9], dtype=np.float64)[:, None]
    ids = list("AAAABBBBCCD")
    expected = [1 / 3, 2 / 3, 1.0, 0.0, -2.0, -1.0, -1.0, -2.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(visual_score(f, ids), expected, atol=1e-12)
    np.testing.assert_allclose(visual_score(f, ids, chunk=3), expected, atol=1e-12)
    shifted = visual_score(f, ids, form="identity")
    np.testing.assert_allclose(shifted[4:8], [0.0, 1.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(shifted[:4], expected[:4], atol=1e-12)  # d_min = 0: same
    third = 1 / 3
    np.testing.assert_allclose(visual_score(f, ids, form="global"),
                               [third, 2 * third, 1, 0, 0, third, third, 0, third, third, 1],
                               atol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match="visual must be one of"):
        visual_score(f, ids, form="sideways")


def test_huo_fused_default_weights():
    s_v, s_r, s_c = np.array([1.0, 0.0]), np.array([0.5, 1.0]), np.array([0.25, 0.75])
    # none: 0.2*1 + 0.4*0.5 + 0.4*0.25 = 0.5;  0.2*0 + 0.4*1 + 0.4*0.75 = 0.7
    np.testing.assert_allclose(huo_fused(s_v, s_r, s_c, EQ5, how="none"), [0.5, 0.7])
    # rank: s_v -> [1, 0], s_r -> [0, 1], s_c -> [0, 1]: [0.2, 0.8]
    np.testing.assert_allclose(huo_fused(s_v, s_r, s_c, EQ5, how="rank"), [0.2, 0.8])
    missing = huo_fused(s_v, s_r, np.array([0.5, np.nan]), EQ5, how="none")
    assert missing[0] == pytest.approx(0.2 * 1 + 0.4 * 0.5 + 0.4 * 0.5) and np.isnan(missing[1])
