"""Five-point alignment: exact similarity recovery, least-squares optimality, real faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from fiqa.core.align import (
    ALIGNMENT_TEMPLATES,
    align_face,
    alignment_matrix,
    get_template,
    register_template,
    retarget_faces,
    similarity_transform,
    transform_points,
)
from fiqa.data.detect import YuNetDetector

ARCFACE = ALIGNMENT_TEMPLATES["arcface_112"].points


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, [[tx], [ty]]])


def test_arcface_template_values() -> None:
    template = get_template("arcface_112")
    assert template.size == (112, 112)
    np.testing.assert_allclose(template.points[0], [38.2946, 51.6963])
    np.testing.assert_allclose(template.points[4], [70.7299, 92.2041])


@pytest.mark.parametrize(
    ("angle", "scale", "tx", "ty"),
    [
        (0.0, 1.0, 0.0, 0.0),
        (17.0, 2.3, 140.0, -35.0),
        (-40.0, 0.6, 12.5, 300.25),
        (170.0, 4.0, 500, 80),
    ],
)
def test_known_similarity_is_inverted_exactly(
    angle: float, scale: float, tx: float, ty: float
) -> None:
    forward = _similarity(angle, scale, tx, ty)
    landmarks = transform_points(forward, ARCFACE)
    matrix = alignment_matrix(landmarks)
    np.testing.assert_allclose(transform_points(matrix, landmarks), ARCFACE, atol=1e-4)
    # The recovered matrix is the inverse of the forward one.
    inverse = cv2.invertAffineTransform(forward)
    np.testing.assert_allclose(matrix, inverse, atol=1e-8)


def test_noisy_landmarks_reach_the_least_squares_optimum() -> None:
    rng = np.random.default_rng(0)
    landmarks = transform_points(_similarity(12.0, 1.7, 30.0, 40.0), ARCFACE)
    landmarks = landmarks + rng.normal(0.0, 2.0, landmarks.shape)
    matrix = similarity_transform(landmarks, ARCFACE)
    best = np.sum((transform_points(matrix, landmarks) - ARCFACE) ** 2)
    # Any perturbation of the 4 similarity parameters (a, b, tx, ty) increases the residual.
    a, b = matrix[0, 0], matrix[1, 0]
    params = np.array([a, b, matrix[0, 2], matrix[1, 2]])
    for _ in range(200):
        pa, pb, ptx, pty = params + rng.normal(0.0, 1e-3, 4)
        other = np.array([[pa, -pb, ptx], [pb, pa, pty]])
        assert np.sum((transform_points(other, landmarks) - ARCFACE) ** 2) >= best - 1e-9
    # Normal equations: the residual is orthogonal to each parameter's derivative.
    residual = transform_points(matrix, landmarks) - ARCFACE
    x, y = landmarks[:, 0], landmarks[:, 1]
    grads = [
        residual[:, 0] @ x + residual[:, 1] @ y,
        -residual[:, 0] @ y + residual[:, 1] @ x,
        residual[:, 0].sum(),
        residual[:, 1].sum(),
    ]
    np.testing.assert_allclose(grads, 0.0, atol=1e-8)


def test_mirrored_landmarks_are_not_reflected() -> None:
    mirrored = ARCFACE * [-1.0, 1.0] + [200.0, 0.0]
    matrix = similarity_transform(mirrored, ARCFACE)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_align_face_puts_landmark_pixels_on_the_template() -> None:
    """Subpixel bright spots at the landmarks land on the template points after warping."""
    landmarks = transform_points(_similarity(-9.0, 2.5, 60.3, 20.7), ARCFACE)
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float64)
    canvas = np.zeros((400, 400), dtype=np.float64)
    for x, y in landmarks:
        canvas += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    image = np.repeat((canvas / canvas.max() * 255).round().astype(np.uint8)[:, :, None], 3, 2)
    aligned = align_face(image, landmarks).astype(np.float64)[:, :, 0]
    ay, ax = np.mgrid[0:112, 0:112]
    for tx, ty in ARCFACE:
        window = (np.abs(ax - tx) < 3) & (np.abs(ay - ty) < 3)
        weights = aligned * window
        centroid = np.array([(weights * ax).sum(), (weights * ay).sum()]) / weights.sum()
        np.testing.assert_allclose(centroid, [tx, ty], atol=0.25)


def test_align_face_output_and_errors() -> None:
    image = skimage.data.astronaut()
    landmarks = transform_points(_similarity(0.0, 2.0, 150.0, 30.0), ARCFACE)
    aligned = align_face(image, landmarks)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        align_face(image, landmarks[:4])
    with pytest.raises(ValueError, match="NaN"):
        align_face(image, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="coincide"):
        align_face(image, np.ones((5, 2)))
    with pytest.raises(KeyError, match="arcface_112"):
        align_face(image, landmarks, template="nope")


def test_retarget_matches_aligning_directly_on_the_target() -> None:
    """arcface_112 -> faceqnet_224 re-warp equals aligning the photo on faceqnet_224 where the
    112 crop covers the target (inside the ArcFace crop), and is the identity for one template."""
    image = skimage.data.astronaut()
    landmarks = transform_points(_similarity(4.0, 1.8, 140.0, 25.0), ARCFACE)
    arcface = align_face(image, landmarks)[None]
    assert retarget_faces(arcface, "arcface_112", "arcface_112") is arcface
    direct = align_face(image, landmarks, template="faceqnet_224").astype(np.float64)
    retargeted = retarget_faces(arcface, "arcface_112", "faceqnet_224")[0].astype(np.float64)
    assert retargeted.shape == (224, 224, 3)
    # faceqnet_224 shows the face at 1.6x the 112 scale: its centre 160 px come from the crop
    inner = slice(40, 184)
    assert np.abs(direct[inner, inner] - retargeted[inner, inner]).mean() < 6.0
    assert retargeted[:8].max() == 0  # above the ArcFace crop: black, not invented
    with pytest.raises(ValueError, match="arcface_112"):
        retarget_faces(arcface[:, :100], "arcface_112", "faceqnet_224")


def test_register_template_scales_and_validates() -> None:
    register_template("arcface_224_test", (224, 224), ARCFACE * 2)
    try:
        landmarks = transform_points(_similarity(5.0, 1.5, 10.0, 10.0), ARCFACE)
        crop = align_face(skimage.data.astronaut(), landmarks, template="arcface_224_test")
        assert crop.shape == (224, 224, 3)
    finally:
        ALIGNMENT_TEMPLATES.pop("arcface_224_test")
    with pytest.raises(ValueError, match="smaller x"):
        register_template("swapped", (112, 112), ARCFACE[[1, 0, 2, 4, 3]])
    with pytest.raises(ValueError, match="outside"):
        register_template("outside", (50, 50), ARCFACE)


def test_real_face_alignment_is_consistent() -> None:
    """Astronaut: the aligned crop's re-detected landmarks sit near the template, eyes unswapped."""
    image = skimage.data.astronaut()
    detector = YuNetDetector()
    detection = detector.detect(image)
    assert detection is not None
    assert detection.landmarks[0, 0] < detection.landmarks[1, 0]  # eyes do not swap
    matrix = alignment_matrix(detection.landmarks)
    aligned = align_face(image, detection.landmarks)
    redetected = detector.detect(aligned)
    assert redetected is not None
    assert redetected.landmarks[0, 0] < redetected.landmarks[1, 0]
    mapped = transform_points(matrix, detection.landmarks)
    # YuNet's landmarks on a 112 px crop move by a few pixels (measured: mean 3.5 px).
    assert np.linalg.norm(redetected.landmarks - mapped, axis=1).mean() < 5.0
    eyes_error = np.linalg.norm(redetected.landmarks[:2] - ARCFACE[:2], axis=1)
    assert eyes_error.max() < 6.0
    # Aligning the aligned crop again is nearly the identity.
    again = alignment_matrix(redetected.landmarks)
    scale = np.hypot(again[0, 0], again[1, 0])
    angle = np.degrees(np.arctan2(again[1, 0], again[0, 0]))
    assert abs(scale - 1.0) < 0.15 and abs(angle) < 7.0
