"""Graded image degradations (severity 0..4, 0 = identity) and a small geometric jitter.

Each degradation is ``fn(image_rgb, severity, rng, face_box=None) -> image_rgb`` on uint8
(H, W, 3) arrays. Strengths that depend on size (blur sigma, occluder size) are relative to the
face box when one is given (else to the image), so a severity means about the same for a
400 px portrait and a 128 px face crop. All randomness comes from ``rng``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

MAX_SEVERITY = 4

#: The value each severity sets, per degradation (index = severity).
BLUR_SIGMA_PER_FACE_WIDTH = (0.0, 0.015, 0.03, 0.05, 0.08)
NOISE_STD = (0.0, 5.0, 10.0, 16.0, 24.0)
JPEG_QUALITY = (95, 90, 35, 15, 8)
DOWNSCALE_FACTOR = (1.0, 1 / 2, 1 / 3, 1 / 5, 1 / 8)
OCCLUDED_FRACTION = (0.0, 0.1, 0.2, 0.3, 0.4)
EXPOSURE_GAMMA = (1.0, 1.5, 2.1, 2.8, 3.6)
GRADIENT_STRENGTH = (0.0, 0.15, 0.3, 0.45, 0.6)

Degradation = Callable[..., np.ndarray]


@dataclass(frozen=True)
class AppliedDegradation:
    """What was done to one image.

    Attributes:
        kind: Registry name, or "none" for severity 0.
        severity: 0 (identity) .. 4 (strongest).
        level: The severity's main parameter (sigma in px, noise std, JPEG quality,
            downscale factor, occluded fraction of the face box, or exposure gamma).
    """

    kind: str
    severity: int
    level: float


def _check(image: np.ndarray, severity: int) -> None:
    """Reject severities outside 0..4 and non-RGB-uint8 images."""
    if not isinstance(severity, (int, np.integer)) or not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be an int in 0..{MAX_SEVERITY}, got {severity!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")


def _face_width(image: np.ndarray, face_box: np.ndarray | None) -> float:
    if face_box is not None:
        return float(max(face_box[2], 1.0))
    return float(min(image.shape[:2])) / 2


def gaussian_blur(
    image: np.ndarray, severity: int, rng: np.random.Generator, face_box: np.ndarray | None = None
) -> np.ndarray:
    """Gaussian blur with sigma = a fraction of the face width (about 2-12 px for 100 px)."""
    _check(image, severity)
    sigma = BLUR_SIGMA_PER_FACE_WIDTH[severity] * _face_width(image, face_box)
    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(
    image: np.ndarray, severity: int, rng: np.random.Generator, face_box: np.ndarray | None = None
) -> np.ndarray:
    """Additive white Gaussian noise, std 6..42 grey levels, independent per channel."""
    _check(image, severity)
    std = NOISE_STD[severity]
    if std <= 0:
        return image.copy()
    noise = rng.normal(0.0, std, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def jpeg_compression(
    image: np.ndarray, severity: int, rng: np.random.Generator, face_box: np.ndarray | None = None
) -> np.ndarray:
    """Encode and decode as JPEG with quality 90, 35, 15, 8 (severity 1..4)."""
    _check(image, severity)
    if severity == 0:
        return image.copy()
    encoded = np.frombuffer(encode_jpeg(image, JPEG_QUALITY[severity]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def downscale(
    image: np.ndarray, severity: int, rng: np.random.Generator, face_box: np.ndarray | None = None
) -> np.ndarray:
    """Downscale by 1/2, 1/3, 1/5, 1/8 (area) and back up (bilinear): loss of resolution."""
    _check(image, severity)
    factor = DOWNSCALE_FACTOR[severity]
    if factor >= 1:
        return image.copy()
    h, w = image.shape[:2]
    small = (max(1, round(w * factor)), max(1, round(h * factor)))
    reduced = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(reduced, (w, h), interpolation=cv2.INTER_LINEAR)


def occlusion(
    image: np.ndarray, severity: int, rng: np.random.Generator, face_box: np.ndarray | None = None
) -> np.ndarray:
    """A solid rectangle over 12-55% of the face box (random aspect, place and grey level).

    Args:
        image: uint8 RGB image.
        severity: 0..4.
        rng: Random generator.
        face_box: ``x, y, w, h`` of the face; without it the central half of the image.
    """
    _check(image, severity)
    fraction = OCCLUDED_FRACTION[severity]
    if fraction <= 0:
        return image.copy()
    h, w = image.shape[:2]
    if face_box is None:
        face_box = np.array([w / 4, h / 4, w / 2, h / 2])
    bx, by, bw, bh = (float(v) for v in face_box)
    aspect = float(rng.uniform(0.5, 2.0))  # occluder width / height relative to the box
    ow = min(bw, np.sqrt(fraction * bw * bh * aspect))
    oh = min(bh, fraction * bw * bh / ow)
    x0 = bx + float(rng.uniform(0.0, bw - ow))
    y0 = by + float(rng.uniform(0.0, bh - oh))
    grey = int(rng.integers(0, 256))
    out = image.copy()
    xa, ya = int(np.clip(round(x0), 0, w)), int(np.clip(round(y0), 0, h))
    xb, yb = int(np.clip(round(x0 + ow), 0, w)), int(np.clip(round(y0 + oh), 0, h))
    out[ya:yb, xa:xb] = grey
    return out


def illumination(
    image: np.ndarray, severity: int, rng: np.random.Generator, face_box: np.ndarray | None = None
) -> np.ndarray:
    """Under- or over-exposure (gamma 1.5..3.6 or its inverse) times a linear light gradient."""
    _check(image, severity)
    if severity == 0:
        return image.copy()
    gamma = EXPOSURE_GAMMA[severity]
    if rng.random() < 0.5:
        gamma = 1.0 / gamma  # over-exposure
    h, w = image.shape[:2]
    angle = float(rng.uniform(0.0, 2 * np.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = (xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)
    ramp /= max(np.abs(ramp).max(), 1.0)
    gain = 1.0 + GRADIENT_STRENGTH[severity] * ramp
    light = (image.astype(np.float64) / 255.0) ** gamma * gain[:, :, None]
    return np.clip(light * 255.0, 0, 255).round().astype(np.uint8)


DEGRADATIONS: dict[str, Degradation] = {
    "blur": gaussian_blur,
    "noise": gaussian_noise,
    "jpeg": jpeg_compression,
    "downscale": downscale,
    "occlusion": occlusion,
    "illumination": illumination,
}

_LEVELS: dict[str, tuple[float, ...]] = {
    "blur": BLUR_SIGMA_PER_FACE_WIDTH,
    "noise": NOISE_STD,
    "jpeg": tuple(float(q) for q in JPEG_QUALITY),
    "downscale": DOWNSCALE_FACTOR,
    "occlusion": OCCLUDED_FRACTION,
    "illumination": EXPOSURE_GAMMA,
}


def apply_degradation(
    image: np.ndarray,
    kind: str,
    severity: int,
    rng: np.random.Generator,
    face_box: np.ndarray | None = None,
) -> tuple[np.ndarray, AppliedDegradation]:
    """Apply a registered degradation and describe it.

    Args:
        image: uint8 (H, W, 3) RGB image.
        kind: A key of :data:`DEGRADATIONS` (or "none").
        severity: 0..4; 0 returns a copy and records kind "none".
        rng: Random generator.
        face_box: Optional ``x, y, w, h`` face box (scales blur, places the occluder).

    Returns:
        The degraded image and an :class:`AppliedDegradation` record.

    Raises:
        KeyError: For an unknown kind (the message lists the registered ones).
    """
    if kind not in DEGRADATIONS and kind != "none":
        raise KeyError(f"unknown degradation {kind!r}; registered: {', '.join(DEGRADATIONS)}")
    if kind == "none" or severity == 0:
        _check(image, severity)
        return image.copy(), AppliedDegradation("none", 0, 0.0)
    out = DEGRADATIONS[kind](image, severity, rng, face_box=face_box)
    level = _LEVELS[kind][severity]
    if kind == "blur":
        level *= _face_width(image, face_box)
    return out, AppliedDegradation(kind, int(severity), float(level))


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> bytes:
    """Encode RGB as baseline JPEG bytes with OpenCV (deterministic for a given libjpeg)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 0]
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(image_rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image_rgb.shape}")
    return buffer.tobytes()


@dataclass(frozen=True)
class Jitter:
    """A similarity jitter about the face centre, then an optional horizontal mirror."""

    rotation: float  # degrees, counter-clockwise
    scale: float
    shift_x: float  # px
    shift_y: float
    flip: bool


def random_jitter(
    image: np.ndarray,
    landmarks: np.ndarray,
    face_box: np.ndarray,
    rng: np.random.Generator,
    max_rotation: float = 8.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.06,
) -> tuple[np.ndarray, np.ndarray, Jitter]:
    """Rotate, scale and shift an image about its face, keeping the face inside; maybe mirror.

    The face core (the landmarks' bounding box grown by 40% of the eye-to-mouth distance)
    must stay inside the image: the drawn scale, then the drawn shift, are clamped to fit.

    Args:
        image: uint8 (H, W, 3) RGB image.
        landmarks: (5, 2) face landmarks in image pixels.
        face_box: ``x, y, w, h`` of the face in image pixels.
        rng: Random generator (always consumes the same number of draws).
        max_rotation: Largest rotation in degrees.
        scale_range: Range of the zoom factor.
        max_shift: Largest shift as a fraction of the shorter image side.

    Returns:
        The jittered image (same size; edges replicated), the face box mapped into it
        (bounding box of the transformed corners), and the jitter actually applied.
    """
    h, w = image.shape[:2]
    angle = float(rng.uniform(-max_rotation, max_rotation))
    scale = float(rng.uniform(*scale_range))
    shift = rng.uniform(-max_shift, max_shift, 2) * min(h, w)
    flip = bool(rng.random() < 0.5)
    pts = np.asarray(landmarks, dtype=np.float64)
    margin = 0.4 * np.linalg.norm(pts[3:].mean(axis=0) - pts[:2].mean(axis=0))
    lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
    centre = (lo + hi) / 2
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    unit = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)[:, :2]
    offsets = (corners - centre) @ unit.T  # rotated core corners at scale 1
    limit = np.array([w - 1, h - 1], dtype=np.float64)
    room = np.minimum(
        centre / np.maximum(-offsets.min(axis=0), 1e-6),
        (limit - centre) / np.maximum(offsets.max(axis=0), 1e-6),
    )
    scale = float(np.clip(room.min(), 0.5, scale))  # 0.5: floor for a core larger than the image
    low = -(centre + scale * offsets.min(axis=0))
    high = limit - (centre + scale * offsets.max(axis=0))
    shift = np.clip(shift, np.minimum(low, 0.0), np.maximum(high, 0.0))
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    matrix[:, 2] += shift
    out = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    bx, by, bw, bh = (float(v) for v in face_box)
    box_corners = np.array([[bx, by], [bx + bw, by], [bx + bw, by + bh], [bx, by + bh]])
    mapped = box_corners @ matrix[:, :2].T + matrix[:, 2]
    x0, y0 = mapped.min(axis=0)
    x1, y1 = mapped.max(axis=0)
    if flip:
        out = np.ascontiguousarray(out[:, ::-1])
        x0, x1 = w - x1, w - x0
    box = np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float32)
    return out, box, Jitter(angle, scale, float(shift[0]), float(shift[1]), flip)
