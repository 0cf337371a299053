"""Label formulas on hand-computable cases (SER-FIQ, FaceQnet) and the label report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from fiqa.label.faceqnet import (
    faceqnet_from_distances,
    faceqnet_scores,
    icao_proxy,
    references_from_list,
    select_reference_images,
)
from fiqa.label.report import check_label_values, identity_spread, label_report, write_label_figures
from fiqa.label.serfiq import calibrate, serfiq_from_embeddings


def test_serfiq_two_orthogonal_passes():
    # d = ||[1,0] - [0,1]|| = sqrt(2); q = 2 / (1 + e^sqrt(2)) = 0.391141
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    q = serfiq_from_embeddings(emb)
    assert q.item() == pytest.approx(2 / (1 + math.exp(math.sqrt(2))), abs=1e-9)
    assert q.item() == pytest.approx(0.391141, abs=1e-6)


def test_serfiq_three_passes_mean_pairwise_distance():
    # pairs (0,1): 0, (0,2): sqrt2, (1,2): sqrt2 -> d = 2 sqrt2 / 3 = 0.942809; q = 0.560667
    emb = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]]])  # normalised inside
    assert serfiq_from_embeddings(emb).item() == pytest.approx(0.560667, abs=1e-6)


def test_serfiq_identical_passes_is_one_and_batch_independent():
    emb = torch.randn(4, 5, 16)
    emb[1] = emb[1, :1].expand(5, 16)  # face 1: every pass identical
    q = serfiq_from_embeddings(emb)
    assert q[1].item() == pytest.approx(1.0)
    assert torch.allclose(serfiq_from_embeddings(emb[2:3]), q[2:3])
    assert ((q > 0) & (q <= 1)).all()


def test_serfiq_rejects_single_pass():
    with pytest.raises(ValueError, match="m >= 2"):
        serfiq_from_embeddings(torch.randn(3, 1, 8))


def test_serfiq_calibration():
    # 1 / (1 + exp(-130 (q - 0.88))): 0.5 at q = r; 1/(1+e^-1.3) at q = 0.89
    np.testing.assert_allclose(calibrate([0.88, 0.89]), [0.5, 1 / (1 + math.exp(-1.3))])


def test_faceqnet_distance_mapping():
    # d = [0, 1, 2]: mean 1, std sqrt(2/3); z = [-1.224745, 0, 1.224745]; q = 1/(1+e^z), e^1.224745 = 3.403295
    q = faceqnet_from_distances(np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(q, [0.772897, 0.5, 0.227103], atol=1e-6)


def test_faceqnet_scores_average_over_models():
    e1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    refs = np.array([0, 0, 2, 2])
    # model 1 distances to refs: [0, sqrt2, 0, sqrt(0.16 + 0.64)] -> per-model q by z-score
    q1 = faceqnet_from_distances(np.array([0.0, math.sqrt(2), 0.0, math.sqrt(0.8)]))
    e2 = e1[:, ::-1].copy()  # same geometry, so the same labels
    np.testing.assert_allclose(faceqnet_scores([e1], refs), q1)
    np.testing.assert_allclose(faceqnet_scores([e1, e2], refs), q1)
    assert q1[0] == q1[2] == q1.max()  # the references get the best label
    with pytest.raises(ValueError, match="at least one FR model"):
        faceqnet_scores([], refs)


def test_select_reference_images_by_mean_rank():
    ids = pd.Series(["a", "a", "a", "b", "b"])
    proxy = pd.DataFrame(
        {
            "sharpness": [1.0, 3.0, 2.0, 5.0, 4.0],
            "frontality": [-0.1, -0.2, -0.3, -0.5, -0.1],
            "illumination": [0.5, 0.9, 0.1, 0.2, 0.8],
            "face_size": [10.0, 12.0, 11.0, 30.0, 40.0],
        }
    )
    # a: row 1 is best on 3 of 4 criteria; b: row 4 wins 3 of 4
    np.testing.assert_array_equal(select_reference_images(ids, proxy), [1, 1, 1, 4, 4])


def test_references_from_list_and_missing_identity():
    ids = pd.Series(["a", "a", "b"])
    paths = pd.Series(["a/1.jpg", "a/2.jpg", "b/1.jpg"])
    refs = pd.DataFrame({"identity": ["a", "b"], "path": ["a/2.jpg", "b/1.jpg"]})
    np.testing.assert_array_equal(references_from_list(ids, paths, refs), [1, 1, 2])
    with pytest.raises(ValueError, match="no usable reference for 1 identities"):
        references_from_list(ids, paths, refs.iloc[:1])


def test_icao_proxy_prefers_sharp_frontal_faces():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    flat = np.full((112, 112, 3), 128, np.uint8)
    frontal = np.array([[38.0, 51.0], [73.0, 51.0], [55.5, 71.0], [41.0, 92.0], [70.0, 92.0]])
    turned = frontal.copy()
    turned[2, 0] += 15.0  # nose far off the eye midline
    proxy = icao_proxy(np.stack([sharp, flat]), np.stack([frontal, turned]))
    assert proxy.loc[0, "sharpness"] > proxy.loc[1, "sharpness"]
    # eye midline x = (38 + 73) / 2 = 55.5, inter-ocular distance 35
    assert proxy.loc[0, "frontality"] == pytest.approx(0.0)
    assert proxy.loc[1, "frontality"] == pytest.approx(-15.0 / 35.0)


def test_label_report_and_checks():
    table = pd.DataFrame(
        {
            "identity": ["a", "a", "b", "b"],
            "path": ["a/1", "a/2", "b/1", "b/2"],
            "m1": [0.9, 0.7, 0.5, 0.3],
            "m2": [0.1, 0.2, 0.3, 0.4],
            "severity": [0, 1, 2, 3],
        }
    )
    report = label_report(table, ["m1", "m2"])
    assert report["spearman_between_methods"]["m1"]["m2"] == pytest.approx(-1.0)
    assert report["spearman_vs_severity"] == {"m1": pytest.approx(-1.0), "m2": pytest.approx(1.0)}
    unit = {"m1": (0.0, 1.0), "m2": (0.0, 1.0)}
    check_label_values(table, unit, {"a", "b"})
    with pytest.raises(ValueError, match="lost 1 identities"):
        check_label_values(table, unit, {"a", "b", "c"})
    with pytest.raises(ValueError, match=r"'m1': 2 values not finite in \[0.0, 0.5\]"):
        check_label_values(table, {"m1": (0.0, 0.5)}, {"a", "b"})
    table.loc[0, "m1"] = np.nan
    with pytest.raises(ValueError, match="not finite in"):
        check_label_values(table, unit, {"a", "b"})


def test_identity_spread_is_scale_free_and_hand_computable():
    # identity a: m1 = 0.2, 0.4 (std 0.1414); all faces: 0.2, 0.4, 0.6, 0.8 (std 0.2582).
    table = pd.DataFrame({"identity": ["a", "a", "b", "b"], "m1": [0.2, 0.4, 0.6, 0.8]})
    table["m100"] = table["m1"] * 100  # the same ranking on a 0-100 scale
    spread = identity_spread(table, ["m1", "m100"])
    assert spread.loc["a", "m1"] == pytest.approx(math.sqrt(0.02) / math.sqrt(0.2 / 3))
    assert spread["m100"].to_numpy() == pytest.approx(spread["m1"].to_numpy())


def test_label_figures_hide_the_empty_cells_of_the_method_grid(tmp_path):
    rng = np.random.default_rng(0)
    methods = [f"m{i}" for i in range(5)]  # a 2 x 4 grid: three empty cells
    table = pd.DataFrame(rng.random((20, 5)), columns=methods)
    table["identity"] = np.repeat(["a", "b", "c", "d"], 5)
    table["severity"] = np.tile(np.arange(5), 4)
    written = write_label_figures(table, methods, tmp_path)
    assert [p.name for p in written] == [
        "distributions.png",
        "correlations.png",
        "identity_spread.png",
        "severity.png",
    ]
    from matplotlib.figure import Figure

    from fiqa.label.report import _method_axes

    fig = Figure()
    axes = _method_axes(fig, 2, 4, 5)
    assert len(axes) == 5
    assert [ax.get_visible() for ax in fig.axes] == [True] * 5 + [False] * 3
