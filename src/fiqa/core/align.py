"""Five-point face alignment: similarity transforms onto named landmark templates.

A template is an output size plus five reference points in the order used throughout fiqa
(right eye, left eye, nose tip, right mouth corner, left mouth corner, *as seen in the image*:
the first point has the smaller x). ``arcface_112`` is the insightface ArcFace template that
SFace, ArcFace, CosFace, AdaFace and MagFace models expect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # array fields: compare by identity
class AlignmentTemplate:
    """Output size and reference landmarks of one alignment template.

    Attributes:
        size: Output ``(width, height)`` in pixels.
        points: ``(5, 2)`` float64 reference landmarks ``(x, y)`` in output pixels.
    """

    size: tuple[int, int]
    points: np.ndarray


ALIGNMENT_TEMPLATES: dict[str, AlignmentTemplate] = {}


def register_template(
    name: str, size: tuple[int, int] | list[int], points: np.ndarray | list[list[float]]
) -> AlignmentTemplate:
    """Add (or replace) a named alignment template, e.g. one declared in the config.

    Args:
        name: Registry key used by ``align_face(..., template=name)``.
        size: Output ``(width, height)`` in pixels.
        points: Five ``(x, y)`` reference points in output pixels, ArcFace order.

    Returns:
        The registered template.

    Raises:
        ValueError: If the size is not two positive integers or the points are not a finite
            ``(5, 2)`` array inside the output image.
    """
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"template {name!r}: size must be two positive integers, got {size}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise ValueError(
            f"template {name!r}: points must be a finite (5, 2) array, got {pts.shape}"
        )
    if (pts < 0).any() or (pts[:, 0] > width).any() or (pts[:, 1] > height).any():
        raise ValueError(f"template {name!r}: points lie outside the {width}x{height} output")
    if pts[0, 0] >= pts[1, 0]:
        raise ValueError(f"template {name!r}: the first eye point must have the smaller x")
    pts.setflags(write=False)
    template = AlignmentTemplate(size=(width, height), points=pts)
    if name in ALIGNMENT_TEMPLATES:
        log.info("replacing alignment template %r", name)
    ALIGNMENT_TEMPLATES[name] = template
    return template


register_template(
    "arcface_112",
    (112, 112),
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
)


# SphereFace / CosFace crops: the same geometry on a 96-wide canvas (x shifted by 8 px).
register_template(
    "sphereface_112x96",
    (96, 112),
    ALIGNMENT_TEMPLATES["arcface_112"].points - np.array([8.0, 0.0]),
)
# FaceQnet-style loose crop: ArcFace geometry at 224 px with the face at 80% of the ArcFace
# scale around the crop centre, keeping hair, ears and background context like a loose box.
register_template(
    "faceqnet_224",
    (224, 224),
    (ALIGNMENT_TEMPLATES["arcface_112"].points - 56.0) * 2.0 * 0.8 + 112.0,
)


def get_template(name: str) -> AlignmentTemplate:
    """Look up a registered template by name.

    Raises:
        KeyError: Naming the unknown template and the registered ones.
    """
    try:
        return ALIGNMENT_TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(ALIGNMENT_TEMPLATES))
        raise KeyError(
            f"unknown alignment template {name!r}; registered: {known} "
            "(add one with fiqa.core.align.register_template)"
        ) from None


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Umeyama (1991) closed form with the reflection case excluded, so a mirrored landmark set
    is never "aligned" by flipping the face.

    Args:
        src: ``(N, 2)`` source points, N >= 2.
        dst: ``(N, 2)`` destination points.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]``.

    Raises:
        ValueError: On mismatched shapes, non-finite values or degenerate (coincident) points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"expected two (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinite values")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("degenerate landmarks: all source points coincide")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (s * sign).sum() / src_var
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points; returns float64 ``(N, 2)``."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def alignment_matrix(landmarks: np.ndarray, template: str = "arcface_112") -> np.ndarray:
    """Similarity transform taking image landmarks onto the template's points.

    Args:
        landmarks: ``(5, 2)`` landmarks in image pixels, template order.
        template: Registered template name.

    Returns:
        ``(2, 3)`` float64 matrix for ``cv2.warpAffine``.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return similarity_transform(pts, get_template(template).points)


def align_face(
    image_rgb: np.ndarray, landmarks: np.ndarray, template: str = "arcface_112"
) -> np.ndarray:
    """Warp a face onto a template with a least-squares similarity transform.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 image (any channel order is kept as is).
        landmarks: ``(5, 2)`` landmarks in image pixels, template order.
        template: Registered template name (default the ArcFace 112x112 template).

    Returns:
        ``(height, width, 3)`` uint8 aligned face; pixels outside the source are black.

    Raises:
        ValueError: If the landmarks are not five finite, non-coincident points.
        KeyError: If the template is not registered.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"expected (5, 2) landmarks, got shape {pts.shape}")
    spec = get_template(template)
    matrix = similarity_transform(pts, spec.points)
    return cv2.warpAffine(
        np.ascontiguousarray(image_rgb),
        matrix,
        spec.size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def retarget_faces(faces: np.ndarray, source: str, target: str) -> np.ndarray:
    """Re-warp faces aligned on one template onto another (e.g. arcface_112 -> facenet_160).

    The map is the similarity between the two templates' five points, so the face geometry
    lands where ``target`` expects it; target pixels outside the source crop are black.

    Args:
        faces: ``(N, H, W, 3)`` uint8 faces aligned on ``source``.
        source: Template the faces were aligned with.
        target: Template to produce.

    Returns:
        ``faces`` itself when the templates are the same, else a new ``(N, h, w, 3)`` array.
    """
    if source == target:
        return faces
    src, dst = get_template(source), get_template(target)
    width, height = src.size
    if faces.ndim != 4 or faces.shape[1:3] != (height, width):
        raise ValueError(
            f"expected (N, {height}, {width}, 3) faces aligned on {source!r}, got {faces.shape}"
        )
    matrix = similarity_transform(src.points, dst.points)
    out = np.empty((len(faces), dst.size[1], dst.size[0], faces.shape[3]), dtype=faces.dtype)
    for index, face in enumerate(faces):
        out[index] = cv2.warpAffine(face, matrix, dst.size, flags=cv2.INTER_LINEAR, borderValue=0)
    return out
