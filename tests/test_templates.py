"""Template features, template quality, percentile weights and TAR@FAR on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from fiqa.core.pairs import Pairs, pair_scores
from fiqa.core.templates import (
    Templates,
    percentile_weights,
    tar_at_far,
    template_features,
    template_pair_scores,
    template_quality,
)

# Template 0: media 0 = images 0, 1; media 1 = image 2. Template 1: media 2 = image 3.
# Image 4 is left out (-1), so its huge embedding must not count anywhere.
TEMPLATES = Templates(template=[0, 0, 0, 1, -1], media=[0, 0, 1, 2, 3], n_templates=2)
EMB = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [100, 100]], np.float32)


def test_plain_template_feature_is_the_sum_of_media_means_normalised():
    feats = template_features(EMB, TEMPLATES)
    # media 0: ([1,0] + [0,1]) / 2 = [.5, .5]; media 1: [1, 0]; sum [1.5, .5] / sqrt(2.5)
    np.testing.assert_allclose(feats[0], [1.5 / np.sqrt(2.5), 0.5 / np.sqrt(2.5)], rtol=1e-6)
    np.testing.assert_allclose(feats[1], [0, 1])
    assert float(feats[0] @ feats[1]) == pytest.approx(0.5 / np.sqrt(2.5), rel=1e-6)  # 0.316


def test_quality_weights_act_inside_each_media():
    feats = template_features(EMB, TEMPLATES, weights=[1, 0, 1, 1, 1])
    # media 0: (1 * [1,0] + 0 * [0,1]) / 2 = [.5, 0]; media 1: [1, 0] -> template 0 = [1, 0]
    np.testing.assert_allclose(feats[0], [1, 0])
    assert float(feats[0] @ feats[1]) == pytest.approx(0.0)
    # all weights 1 is the plain feature; equal weights of any size too (the norm removes them)
    np.testing.assert_allclose(template_features(EMB, TEMPLATES, np.full(5, 0.3)),
                               template_features(EMB, TEMPLATES), rtol=1e-6)  # fmt: skip


def test_template_features_chunks_agree(monkeypatch):
    rng = np.random.default_rng(0)
    n, k = 1000, 37
    templates = Templates(rng.integers(-1, k, n), rng.integers(0, 5, n), k)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    weights = rng.random(n)
    whole = template_features(emb, templates, weights)
    monkeypatch.setattr("fiqa.core.templates.CHUNK", 7)  # templates cut across chunks
    np.testing.assert_allclose(template_features(emb, templates, weights), whole, atol=1e-6)


def test_template_without_images_is_a_zero_row_and_unused():
    templates = Templates([0, 0, -1], [0, 0, 1], 2)
    feats = template_features(np.eye(3, 2, dtype=np.float32), templates)
    np.testing.assert_array_equal(feats[1], [0, 0])
    np.testing.assert_array_equal(templates.used(), [True, False])


@pytest.mark.parametrize(("rule", "expected"), [("min", [0.2, 0.7]), ("mean", [1.6 / 3, 0.7]),
                                                ("max", [0.9, 0.7])])  # fmt: skip
def test_template_quality_rules(rule, expected):
    values = [0.2, 0.9, 0.5, 0.7, -5.0]  # the left-out image's -5 counts nowhere
    np.testing.assert_allclose(template_quality(values, TEMPLATES, rule), expected)


def test_template_quality_rejects_unknown_rule_and_gives_nan_for_empty_template():
    with pytest.raises(ValueError, match="'median'; choose one of min, mean, max"):
        template_quality([1, 2, 3, 4, 5], TEMPLATES, "median")
    empty = Templates([0, -1], [0, 1], 2)
    assert np.isnan(template_quality([1.0, 2.0], empty, "min")[1])


def test_percentile_weights_share_ties_and_zero_nan():
    np.testing.assert_allclose(percentile_weights([3, 1, 2, 2]), [1.0, 0.25, 0.625, 0.625])
    np.testing.assert_allclose(percentile_weights([np.nan, 5.0]), [0.0, 1.0])


def test_tar_at_far_by_hand():
    impostor = np.arange(1, 11) / 10  # 0.1 ... 1.0
    genuine = [0.95, 0.85, 1.0, 0.5]
    tars = tar_at_far(genuine, impostor, [0.05, 0.1, 0.3])
    # FAR 0.1: one false accept allowed -> t just above 0.9 -> 0.95, 1.0 accepted
    assert tars[0.1] == 0.5
    # FAR 0.3: three allowed -> t just above 0.7 -> 0.95, 0.85, 1.0
    assert tars[0.3] == 0.75
    # FAR 0.05 needs 20 impostor pairs to show
    assert np.isnan(tars[0.05])


def test_templates_reject_bad_indices():
    with pytest.raises(ValueError, match=r"outside \[-1, 2\)"):
        Templates([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        Templates([0, 1], [0], 2)


def test_template_pair_scores_equal_row_gathers(monkeypatch):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(50, 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    pairs = Pairs(rng.integers(0, 50, 400), rng.integers(0, 50, 400), rng.random(400) < 0.1)
    monkeypatch.setattr("fiqa.core.templates.BLOCK", 8)  # several blocks, some without pairs
    np.testing.assert_allclose(template_pair_scores(feats, pairs), pair_scores(feats, pairs),
                               atol=1e-12)  # fmt: skip
