"""Black-box FR models: any ONNX graph (``onnx``) and dlib's ResNet (``dlib_resnet``)."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper
from scipy.stats import mannwhitneyu

from fiqa.config import compose_config
from fiqa.config.typed import typed
from fiqa.core.align import (
    get_template,
    retarget_faces,
    similarity_transform,
    transform_points,
)
from fiqa.core.images import read_image
from fiqa.data.preparation import PrepareSettings
from fiqa.fr import FRModel, load_fr_model
from fiqa.fr.dlib_model import DLIB_150_POINTS, DLIB_TEMPLATE, import_dlib
from fiqa.fr.onnx_model import OnnxFRNet
from fiqa.fr.sface import default_sface_path

DLIB_DIR = Path("models") / "dlib_resnet128"
DLIB_WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
INT8_FACES = 8  # real faces run through the int8 SFace graph (one onnxruntime call each)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _verification_auc(embeddings: np.ndarray, identities: np.ndarray) -> float:
    """ROC AUC of same- vs different-identity cosine over all pairs (Mann-Whitney U)."""
    upper = np.triu_indices(len(identities), 1)
    scores = (embeddings @ embeddings.T)[upper]
    same = (identities[:, None] == identities[None, :])[upper]
    return float(mannwhitneyu(scores[same], scores[~same]).statistic / (same.sum() * (~same).sum()))


def _count_runs(net: OnnxFRNet, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every onnxruntime call ``net`` makes."""
    calls: list[int] = []
    run = net._run
    monkeypatch.setattr(net, "_run", lambda batch: calls.append(len(batch)) or run(batch))
    return calls


def _tiny_graph(path: Path, input_shape: list, output_shape: list, axes: list[int]) -> Path:
    """An ONNX file whose output is the input's mean over ``axes`` (hand-computable)."""
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["axes"], value=helper.make_tensor(
                "axes", TensorProto.INT64, [len(axes)], axes)),
            helper.make_node("ReduceMean", ["faces", "axes"], ["embedding"], keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, output_shape)],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture(scope="module")
def sface() -> FRModel:
    return load_fr_model("sface")


@pytest.fixture(scope="module")
def sface_dynamic(sface: FRModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our PyTorch SFace exported to ONNX with a dynamic batch axis (normalises internally)."""
    path = tmp_path_factory.mktemp("onnx") / "sface_dynamic.onnx"
    torch.onnx.export(
        sface.net, (torch.rand(2, 3, 112, 112) * 255,), str(path), dynamo=False,
        input_names=["faces"], output_names=["embedding"], opset_version=17,
        dynamic_axes={"faces": {0: "batch"}, "embedding": {0: "batch"}},
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def deepface(shared_data: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The 61 deepface photos: images, ArcFace-112 faces (our pipeline), landmarks, identities."""
    root = shared_data / "faces" / "deepface_13ids"
    table = pd.read_csv(root / "identities.csv")
    aligner = typed(compose_config().prepare, PrepareSettings).aligner()  # arcface_112
    images, faces, landmarks = [], [], []
    for index, name in enumerate(table["file"]):
        image = read_image(root / "images" / name)
        face, result = aligner.align(index, {}, image)
        assert face is not None, f"no face aligned in {name}: {result.reason}"
        images.append(image)
        faces.append(face)
        landmarks.append(np.reshape(result.landmarks, (5, 2)))
    return images, np.stack(faces), np.stack(landmarks), table["identity"].to_numpy()


@pytest.fixture(scope="module")
def dlib_files(shared_data: Path) -> Path:
    pytest.importorskip("dlib")
    folder = shared_data / DLIB_DIR
    if not (folder / DLIB_WEIGHTS).is_file() or not (folder / DLIB_PREDICTOR).is_file():
        pytest.skip(f"dlib model files are absent from {folder}")
    return folder


def test_dynamic_onnx_export_matches_torch(
    sface: FRModel, sface_dynamic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_fr_model(
        {"name": "onnx", "weights": str(sface_dynamic), "options": {"mean": 0, "std": 1}}
    )
    assert not model.info.white_box
    assert (model.info.embedding_size, model.info.input_size) == (128, (112, 112))
    assert model.net.batch is None and model.info.template == "arcface_112"
    faces = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    x = model.preprocess(faces[:2])
    clone = pickle.loads(pickle.dumps(model.net))  # DDP spawn: the session is reopened
    torch.testing.assert_close(clone(x), model.net(x))
    calls = _count_runs(model.net, monkeypatch)
    cosine = (model.embed(faces) * sface.embed(faces)).sum(axis=1)
    assert calls == [5], "a dynamic-batch graph runs the whole batch in one call"
    assert cosine.min() > 0.9999, cosine
    assert model.embed(faces[:0]).shape == (0, 128)
    with pytest.raises(ValueError, match="needs a PyTorch FR model"):
        model.features(faces)


def test_int8_sface_graph_matches_torch_on_real_faces(
    sface: FRModel, deepface: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    faces = deepface[1][:INT8_FACES]
    model = load_fr_model(
        {"name": "onnx", "weights": str(default_sface_path()), "options": {"mean": 0, "std": 1}}
    )
    assert model.net.batch == 1 and len(model.net.extra_feeds) == 29
    calls = _count_runs(model.net, monkeypatch)
    cosine = (model.embed(faces, batch_size=4) * sface.embed(faces)).sum(axis=1)
    assert calls == [1] * INT8_FACES, "a batch-1 graph runs row by row"
    assert cosine.min() > 0.999, cosine


def test_layout_colour_normalisation_and_fixed_batch(tmp_path: Path) -> None:
    # NHWC graph of the sphereface_112x96 size with a fixed batch of 2: per-channel means.
    path = _tiny_graph(tmp_path / "nhwc.onnx", [2, 112, 96, 3], [2, 3], axes=[1, 2])
    model = load_fr_model({"name": "onnx", "weights": str(path), "options": {
        "colour": "BGR", "mean": [10, 0, 0], "std": [2, 1, 5], "template": "sphereface_112x96",
    }})  # fmt: skip
    assert model.net.nhwc and model.net.batch == 2
    assert (model.info.input_size, model.info.embedding_size) == ((112, 96), 3)
    faces = np.zeros((3, 112, 96, 3), np.uint8)
    faces[..., 0], faces[..., 1], faces[..., 2] = 20, 40, 60  # R, G, B
    faces[2] //= 2
    with torch.inference_mode():
        raw = model.net(model.preprocess(faces)).numpy()
    # BGR order, then (x - mean) / std: B (60 - 10) / 2, G 40 / 1, R 20 / 5
    np.testing.assert_allclose(raw, [[25, 40, 4], [25, 40, 4], [10, 20, 2]], rtol=1e-6)


def test_onnx_model_errors(tmp_path: Path, sface_dynamic: Path) -> None:
    with pytest.raises(ValueError, match="an ONNX face-recognition model"):
        load_fr_model("onnx")
    missing = tmp_path / "missing.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_fr_model({"name": "onnx", "weights": str(missing)})
    text = tmp_path / "notes.onnx"
    text.write_text("not a graph\n")
    with pytest.raises(ValueError, match=re.escape(str(text)) + ".*not an ONNX model"):
        load_fr_model({"name": "onnx", "weights": str(text)})
    with pytest.raises(ValueError, match=re.escape(str(sface_dynamic)) + ".*input_size"):
        load_fr_model({"name": "onnx", "weights": str(sface_dynamic),
                       "options": {"input_size": [100, 100]}})  # fmt: skip
    flat = _tiny_graph(tmp_path / "flat.onnx", ["n", 12], ["n"], axes=[1])
    with pytest.raises(ValueError, match=re.escape(str(flat)) + ".*4-D float image"):
        load_fr_model({"name": "onnx", "weights": str(flat)})
    maps = _tiny_graph(tmp_path / "maps.onnx", ["n", 3, 112, 112], ["n", 112, 112], axes=[1])
    with pytest.raises(ValueError, match=re.escape(str(maps)) + r".*outputs \(N, D\)"):
        load_fr_model({"name": "onnx", "weights": str(maps)})
    with pytest.raises(ValueError, match="template 'faceqnet_224'"):
        load_fr_model({"name": "onnx", "weights": str(sface_dynamic),
                       "options": {"template": "faceqnet_224"}})  # fmt: skip


def test_dlib_needs_weights_and_the_dlib_module(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=re.escape(DLIB_WEIGHTS)):
        load_fr_model("dlib_resnet")
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(ImportError, match=re.escape("pip install -e '.[dlib]'")):
        import_dlib()


def test_dlib_rejects_a_wrong_file(dlib_files: Path) -> None:
    predictor = dlib_files / DLIB_PREDICTOR
    with pytest.raises(ValueError, match=re.escape(str(predictor))):
        load_fr_model({"name": "dlib_resnet", "weights": str(predictor)})


def test_dlib_150_template_reproduces_dlib_chips(dlib_files: Path, deepface: tuple) -> None:
    """Re-measure the template: where dlib's own chips put the faces' ArcFace-order points."""
    dlib = import_dlib()
    predictor = dlib.shape_predictor(str(dlib_files / DLIB_PREDICTOR))
    hog = dlib.get_frontal_face_detector()
    images, _, landmarks, _ = deepface
    arcface, in_chip = [], []
    for image, points in zip(images, landmarks, strict=True):
        box = max(hog(image, 1), key=lambda rect: rect.area())
        chip = dlib.get_face_chip_details(predictor(image, box), size=150, padding=0.25)
        # chip pixel -> image coordinates, read off bilinear chips of coordinate ramps
        ys, xs = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float32)
        ramps = [dlib.extract_image_chip(ramp, chip)[10:-10:20, 10:-10:20] for ramp in (xs, ys)]
        to_image = np.stack(ramps, axis=-1).reshape(-1, 2).astype(np.float64)
        grid = np.mgrid[10:140:20, 10:140:20][::-1].reshape(2, -1).T.astype(np.float64)
        inside = ((to_image > 1) & (to_image < np.array(image.shape[1::-1]) - 2)).all(axis=1)
        to_chip = similarity_transform(to_image[inside], grid[inside])
        in_chip.append(transform_points(to_chip, points))
        arcface.append(transform_points(similarity_transform(points, get_template(
            "arcface_112").points), points))  # fmt: skip
    fit = similarity_transform(np.concatenate(arcface), np.concatenate(in_chip))
    measured = transform_points(fit, get_template("arcface_112").points)
    np.testing.assert_allclose(measured, DLIB_150_POINTS, atol=0.5)
    assert get_template(DLIB_TEMPLATE).size == (150, 150)


def test_dlib_resnet_verifies_real_faces(
    dlib_files: Path, deepface: tuple, record_property: pytest.RecordProperty
) -> None:
    _, faces, _, identities = deepface
    model = load_fr_model({"name": "dlib_resnet", "weights": str(dlib_files / DLIB_WEIGHTS)})
    assert model.info.template == DLIB_TEMPLATE and model.info.input_size == (150, 150)
    assert not model.info.white_box and model.embedding_size == 128
    chips = retarget_faces(faces, "arcface_112", model.info.template)
    aligned = _verification_auc(model.embed(chips, batch_size=32), identities)
    naive = _verification_auc(
        model.embed(np.stack([cv2.resize(face, (150, 150)) for face in faces])), identities
    )
    record_property("dlib_auc_template", aligned)
    record_property("dlib_auc_naive_resize", naive)
    assert aligned >= 0.98, f"dlib_150 AUC {aligned:.4f} (naive resize {naive:.4f})"
    assert aligned > naive, f"dlib_150 AUC {aligned:.4f} <= naive resize {naive:.4f}"
    assert model.embed(chips[:0]).shape == (0, 128)
