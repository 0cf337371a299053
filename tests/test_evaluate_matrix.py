"""The cross-model matrix on real faces: 2 benchmarks x SFace and dlib x methods, same-model
marks, several FMRs, an extra quality model, reports, and the per-method score cache."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fiqa.config import compose_config
from fiqa.stages.runner import run_stage

METHODS = ["model", "faceqnet", "serfiq", "crfiqa", "sddfiqa"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def matrix(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """deepface's 13 identities prepared, labelled with SFace, a briefly trained model; LFW-gray
    (12 identities x 8, tight grey crops) as a second, external identity-folder benchmark."""
    pytest.importorskip("dlib", reason="dlib_resnet needs pip install -e '.[dlib]'")
    root = tmp_path_factory.mktemp("matrix")
    deepface = shared_data / "faces" / "deepface_13ids"
    for row in pd.read_csv(deepface / "identities.csv").itertuples():
        (root / "raw" / row.identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(deepface / "images" / row.file, root / "raw" / row.identity / row.file)
    lfw = shared_data / "faces" / "lfw_gray_40ids"
    ids = pd.read_csv(lfw / "identities.csv")
    for row in ids[ids["identity"].isin(sorted(ids["identity"].unique())[:12])].itertuples():
        (root / "lfw" / row.identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(lfw / "images" / row.file, root / "lfw" / row.identity / row.file)
    dlib = shared_data / "models" / "dlib_resnet128" / "dlib_face_recognition_resnet_model_v1.dat"
    overrides = [
        f"paths.root={root}", "data=folder", f"data.root={root / 'raw'}", "logger=none",
        "label.methods.serfiq.passes=10", "debug=limit", "train.batch_size=8",
        "eval.benchmark.split=all",
        f"eval.benchmarks=[{{format: folder, name: lfw_gray, root: '{root / 'lfw'}', impostors: 2000}}]",
        f"eval.fr_models=[sface,{{name: dlib_resnet, weights: '{dlib}'}}]",
        "eval.extra_fmrs=[1.0e-2]",
        f"+eval.quality_models.model_onnx={{path: '{root / 'models' / 'quality.onnx'}', "
        "fr_models: [dlib_resnet]}",
    ]  # fmt: skip
    for stage in ("prepare", "label", "train"):
        run_stage(stage, compose_config(overrides))
    return root, overrides


def evaluate(root: Path, overrides: list[str], methods: list[str]) -> dict:
    run_stage("evaluate", compose_config([*overrides, f"eval.methods=[{','.join(methods)}]"]))
    return json.loads((root / "metrics" / "eval.json").read_text())


def test_cross_model_matrix_on_real_faces(matrix) -> None:
    root, overrides = matrix
    results = evaluate(root, overrides, METHODS)
    assert list(results) == ["folder_all", "lfw_gray"]
    for bench, per_fr in results.items():
        assert list(per_fr) == ["sface", "dlib_resnet"]
        for fr, cell in per_fr.items():
            expected = METHODS if bench == "folder_all" else ["model", "serfiq"]
            assert list(cell) == [*expected, "oracle", "random"], (bench, fr)
            for method in expected:  # labels and the model come from SFace
                assert cell[method]["same_model"] is (fr == "sface"), (bench, fr, method)
            for entry in cell.values():
                for suffix in ("", "/fmr=0.01"):
                    value = entry[f"pauc@0.3{suffix}"]
                    if entry[f"fnmr@0{suffix}"] == 0:  # no error to discard: undefined
                        assert math.isnan(value)
                    else:
                        assert 0 <= value <= 1.5
            if cell["oracle"]["fnmr@0"] > 0:
                assert cell["random"]["pauc@0.3"] == pytest.approx(1.0)
                assert cell["oracle"]["pauc@0.3"] < 1.0
    report = (root / "reports" / "eval.md").read_text()
    assert "sface" in report and "dlib_resnet" in report and "†" in report
    assert (root / "reports" / "edc_lfw_gray__dlib_resnet.svg").is_file()
    assert (root / "reports" / "eval.html").read_text().count("<table") >= 4
    assert (root / "plots" / "edc" / "lfw_gray__sface.json").is_file()


def test_adding_a_method_scores_only_that_method(matrix) -> None:
    """The trained model shares SFace's frozen trunk: its scores are a product of SFace's
    extraction cache entry of each benchmark's faces. A re-run with one more quality model (the
    same network as ONNX, scored from its file and cached per (model file, faces)) reads them
    back and scores only the new one; its same-model mark follows its declared FR models."""
    root, overrides = matrix
    evaluate(root, overrides, ["model", "serfiq"])
    shared = {p: p.stat().st_mtime_ns for p in (root / "cache").glob("sface-*/quality-*.npy")}
    assert len(shared) == 2  # the model on the two benchmarks, from the shared SFace pass
    cache = root / "cache" / "quality"
    before = {p.name for p in cache.iterdir()} if cache.is_dir() else set()
    results = evaluate(root, overrides, ["model", "serfiq", "model_onnx"])
    assert {p: p.stat().st_mtime_ns for p in shared} == shared  # not re-scored
    assert len({p.name for p in cache.iterdir()} - before) == 2  # model_onnx on both benchmarks
    cell = results["lfw_gray"]
    assert cell["dlib_resnet"]["model_onnx"]["same_model"] is True
    assert cell["sface"]["model_onnx"]["same_model"] is False
    same = cell["sface"]["model"]["pauc@0.3"]
    assert cell["sface"]["model_onnx"]["pauc@0.3"] == pytest.approx(same, abs=1e-3)
