"""What evaluate measures on and with: evaluation sets (fiqa.eval.sets), the quality of each
method on them (fiqa.eval.qualities) and the matrix cells (fiqa.eval.matrix)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fiqa.config import compose_config
from fiqa.config.evaluation import quality_sources
from fiqa.config.extraction import extractor
from fiqa.config.validate import load_settings
from fiqa.core.edc import pauc
from fiqa.core.pairs import PairSampling, all_pairs
from fiqa.data.face_store import write_table
from fiqa.data.preparation import write_prepared
from fiqa.eval import qualities as qualities_mod
from fiqa.eval.matrix import cell_curves, curve_metrics
from fiqa.eval.qualities import MethodQuality, cached_scores, method_qualities
from fiqa.eval.sets import EvalSet, load_eval_sets, prepared_split
from fiqa.extract import FaceSource


@pytest.fixture
def prepared(tmp_path: Path):
    rng = np.random.default_rng(0)
    ids = ["a", "a", "b", "b", "c", "c"]
    splits = ["train", "train", "val", "val", "val", "val"]
    faces = rng.integers(0, 256, (6, 112, 112, 3), np.uint8)
    p = write_prepared(tmp_path / "prepared", faces, ids, splits)
    labels = p.manifest[["sample_id", "path", "identity", "split"]].assign(
        crfiqa=np.linspace(0.1, 0.6, 6), quality=np.linspace(0.1, 0.6, 6), severity=[0, 1] * 3
    )
    write_table(tmp_path / "labels" / "labels.parquet", labels)
    return p


ALL_PAIRS = PairSampling(all_up_to=10, genuine_per_identity=1, impostors=1, seed=0)


def test_prepared_split_has_the_splits_pairs_and_float_label_columns(prepared, tmp_path: Path):
    labels = pd.read_parquet(tmp_path / "labels" / "labels.parquet")
    val = prepared_split({"format": "prepared", "split": "val", "name": None}, prepared, labels,
                         "demo", ALL_PAIRS)  # fmt: skip
    assert val.name == "demo_val" and val.rows.tolist() == [2, 3, 4, 5]
    assert (val.pairs.n_genuine, val.pairs.n_impostor) == (2, 4)
    # more faces than all_up_to: every genuine pair (one per identity here) and 3 of 4 impostors
    sampled = PairSampling(all_up_to=3, genuine_per_identity=1, impostors=3, seed=0)
    val_sampled = prepared_split({"format": "prepared", "split": "val"}, prepared, labels, "demo",
                                 sampled)  # fmt: skip
    assert (val_sampled.pairs.n_genuine, val_sampled.pairs.n_impostor) == (2, 3)
    assert set(val.label_qualities) == {"crfiqa"}  # not quality, not the integer severity
    np.testing.assert_allclose(val.label_qualities["crfiqa"], np.linspace(0.1, 0.6, 6)[2:])
    assert val.source.n == 6 and val.faces(np.array([0])).shape == (1, 112, 112, 3)
    with pytest.raises(ValueError, match=r"eval\.benchmark\.split='test'"):
        prepared_split({"format": "prepared", "split": "test"}, prepared, labels, "demo",
                       ALL_PAIRS)  # fmt: skip
    spec = {"format": "prepared", "split": "all", "name": "x"}
    with pytest.raises(ValueError, match=r"named twice: \['x'\]"):
        load_eval_sets([spec, spec], prepared_dir=prepared.directory,
                       labels_dir=tmp_path / "labels", data_name="demo", aligner=None,
                       pairs=ALL_PAIRS, cache_dir=tmp_path / "cache")  # fmt: skip


def tiny_set(label_qualities: dict | None = None) -> EvalSet:
    faces = np.stack([np.full((112, 112, 3), 40 * i, np.uint8) for i in range(4)])
    source = FaceSource("tiny", 4, "arcface_112", "tiny-v1", faces.__getitem__)
    return EvalSet("tiny", 4, all_pairs(["a", "a", "b", "b"]), source, np.arange(4),
                   label_qualities or {})  # fmt: skip


def test_method_qualities_sources_and_same_model_records(tmp_path: Path, caplog):
    cfg = compose_config([f"paths.root={tmp_path}", "eval.methods=[crfiqa,crfiqa@dlib,sddfiqa]",
                          "label.fr_models=[sface,dlib_resnet]"])  # fmt: skip
    sources = quality_sources(settings := load_settings(cfg), extractor(settings))
    data = tiny_set({"crfiqa": np.ones(4), "crfiqa@dlib": np.zeros(4)})
    out = method_qualities(data, sources)
    assert out["crfiqa"].fr_models == {"sface", "dlib_resnet"}  # the mean of both models
    assert out["crfiqa@dlib"].fr_models == {"dlib"}
    assert "sddfiqa" not in out
    assert (
        "'sddfiqa' skipped on tiny: not a column of the labels table (add 'sddfiqa'" in caplog.text
    )
    caplog.clear()  # an external benchmark: no labels table at all
    assert "crfiqa" not in method_qualities(tiny_set(), sources)
    assert "identity-based methods are read from the prepared set's labels" in caplog.text
    with pytest.raises(ValueError, match=r"unknown method 'magic'; use one of \['model'"):
        method_qualities(data, replace(sources, methods=["magic"]))
    with pytest.raises(ValueError, match=r"quality model .* not found"):
        method_qualities(data, replace(sources, methods=["model"]))


def test_quality_model_scores_are_cached_per_model_file_and_faces(tmp_path: Path, monkeypatch):
    class Brightness(torch.nn.Module):
        def forward(self, faces: torch.Tensor) -> torch.Tensor:
            return faces.mean(dim=(1, 2, 3)) / 255.0

    path = tmp_path / "brightness.onnx"
    torch.onnx.export(Brightness(), (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False,
                      input_names=["faces"], dynamic_axes={"faces": {0: "batch"}})  # fmt: skip
    data = tiny_set()
    first = cached_scores(data, path, {}, tmp_path / "cache")
    np.testing.assert_allclose(first, np.arange(4) * 40 / 255, atol=1e-6)

    def no_scoring(*args, **kwargs):
        raise AssertionError("a cache hit must not score")

    monkeypatch.setattr(qualities_mod.QualityScorer, "from_path", no_scoring)
    np.testing.assert_array_equal(cached_scores(data, path, {}, tmp_path / "cache"), first)
    with pytest.raises(AssertionError, match="must not score"):  # other faces: another entry
        cached_scores(replace(data, source=replace(data.source, fingerprint="v2")), path, {},
                      tmp_path / "cache")  # fmt: skip


def test_cell_curves_add_both_baselines_and_metrics_key_the_fmrs():
    data = tiny_set()
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): the first and last are genuine; at FMR 0.25
    # the threshold is just above the impostor tie at 0.2, so the genuine 0.15 is the one error
    scores = np.array([0.9, 0.2, 0.1, 0.2, 0.1, 0.15])
    quality = {"q": MethodQuality(np.array([0.9, 0.8, 0.1, 0.7]), frozenset())}
    curves = cell_curves(quality, data, scores, [0.25, 0.5], "min")
    assert set(curves) == {"q", "oracle", "random"}
    metrics = curve_metrics(curves["random"], [1.0], 0.25)
    assert metrics["pauc@1"] == pytest.approx(1.0) and "pauc@1/fmr=0.5" in metrics
    assert metrics["fnmr@0"] == 0.5 and (metrics["n_genuine"], metrics["n_impostor"]) == (2, 4)
    # the low-quality pair (2, 3) is the error: discarding it first is the oracle's curve,
    # FNMR 0.5 on [0, 0.5) then 0: area 0.25, normalised by FNMR(0) * 1 -> 0.5
    assert pauc(curves["q"][0.25], 1.0) == pauc(curves["oracle"][0.25], 1.0) == 0.5


def test_sharpness_is_the_variance_of_the_laplacian_by_hand():
    from fiqa.eval.baselines import sharpness

    face = np.zeros((5, 5, 3), np.uint8)
    face[2, 2] = 10  # grey 10: Laplacian -40 there, +10 at its 4 neighbours, 0 elsewhere
    assert sharpness(face[None])[0] == pytest.approx((40**2 + 4 * 10**2) / 25)
    assert sharpness(np.full((1, 8, 8, 3), 77, np.uint8))[0] == 0.0


def test_detector_baseline_keeps_recorded_scores_and_detects_on_aligned_faces():
    import skimage.data

    from fiqa.core.align import align_face
    from fiqa.data.detect import YuNetDetector
    from fiqa.eval.baselines import baseline_quality

    photo = skimage.data.astronaut()
    face = align_face(photo, YuNetDetector().detect(photo).landmarks)
    faces = np.stack([face, np.full_like(face, 128), face])
    recorded = np.array([np.nan, np.nan, 0.42])  # the third face was detected in its photo
    scores = baseline_quality("detector", faces.__getitem__, 3, recorded)
    assert scores[0] > 0.6 and scores[1] < 0.05 and scores[2] == 0.42  # a grey square: ~0
    with pytest.raises(ValueError, match="unknown baseline 'magic'"):
        baseline_quality("magic", faces.__getitem__, 3, None)
