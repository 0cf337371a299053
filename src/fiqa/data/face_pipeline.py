"""One input image -> one aligned, encoded face (or a failure reason), in a DataLoader worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from fiqa.core.align import align_face, get_template
from fiqa.core.images import ImageReadError, decode_image
from fiqa.data.detect import Detection, YuNetDetector
from fiqa.data.face_store import encode_face

SELECTIONS = ("largest", "central")
DETECTORS = ("yunet",)  # prepare.detector
MIN_EYE_DISTANCE = 4.0  # px in the source image; closer "eyes" are bad landmarks


@dataclass
class FaceResult:
    """Outcome for one input row (in input order)."""

    index: int
    data: bytes | None = None  # encoded aligned face
    reason: str | None = None  # failure reason when data is None
    landmarks: list[float] | None = None
    det_score: float = float("nan")
    detector: str = ""


def _iou(box: np.ndarray, other: np.ndarray) -> float:
    x0, y0 = np.maximum(box[:2], other[:2])
    x1, y1 = np.minimum(box[:2] + box[2:], other[:2] + other[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = box[2] * box[3] + other[2] * other[3] - inter
    return float(inter / union) if union > 0 else 0.0


def pick_face(
    faces: list[Detection], shape: tuple[int, ...], box: Any, rule: str
) -> Detection | None:
    """The face to keep among several detections.

    Rule: when the dataset gives a box, the detection overlapping it most (IoU >= 0.3, else
    none); otherwise ``largest`` (box area, the default) or ``central`` (box centre nearest the
    image centre).
    """
    if not faces:
        return None
    if box is not None and np.isfinite(np.asarray(box, dtype=float)).all():
        given = np.asarray(box, dtype=np.float64)
        overlaps = [_iou(given, np.asarray(f.box, dtype=np.float64)) for f in faces]
        best = int(np.argmax(overlaps))
        return faces[best] if overlaps[best] >= 0.3 else None
    if rule == "central":
        centre = np.array([shape[1], shape[0]]) / 2.0
        dist = [np.linalg.norm(f.box[:2] + f.box[2:] / 2.0 - centre) for f in faces]
        return faces[int(np.argmin(dist))]
    return faces[0]  # detect_all sorts by area, largest first


class FaceAligner:
    """Decode -> (given landmarks | detect + pick) -> align -> PNG; picklable.

    Built from the ``prepare`` settings (``PrepareSettings.aligner``): the template, the face
    selection, YuNet's score threshold and padding, whether inputs come aligned, and the pixel
    limit (images of more than ``max_image_pixels`` pixels fail as ``too_large`` before
    decoding).
    """

    def __init__(
        self,
        template: str,
        selection: str,
        score_threshold: float,
        pad_ratio: float,
        pre_aligned: bool,
        max_image_pixels: int,
    ) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"prepare.face_selection={selection!r}; choose one of {SELECTIONS}")
        self.template = template
        self.size = get_template(template).size
        self.selection = selection
        self.pre_aligned = pre_aligned
        self.max_image_pixels = max_image_pixels
        self.detector = YuNetDetector(score_threshold=score_threshold, pad_ratio=pad_ratio)

    def __call__(self, index: int, row: dict[str, Any], data: bytes) -> FaceResult:
        """Decode ``data`` and align it; the face is returned PNG-encoded (or as given when
        the input was already aligned, keeping its original bytes)."""
        image = decode_image(data, source=str(row["path"]), max_pixels=self.max_image_pixels)
        face, result = self.align(index, row, image)
        if face is not None:
            result.data = data if self.pre_aligned else encode_face(face)
        return result

    def align(
        self, index: int, row: dict[str, Any], image: np.ndarray
    ) -> tuple[np.ndarray | None, FaceResult]:
        """Align a decoded RGB image: (aligned face or None, result without encoded data)."""
        if self.pre_aligned:
            if (image.shape[1], image.shape[0]) != self.size:
                return None, FaceResult(index, reason="wrong_size")
            points = get_template(self.template).points.reshape(-1).tolist()
            return image, FaceResult(index, None, None, points, 1.0, "pre_aligned")
        given = row.get("landmarks")
        if given is not None and not (isinstance(given, float) and np.isnan(given)):
            landmarks = np.asarray(given, dtype=np.float64).reshape(5, 2)
            score, detector = 1.0, "given"
        else:
            found = pick_face(
                self.detector.detect_all(image), image.shape, row.get("box"), self.selection
            )
            if found is None:
                return None, FaceResult(index, reason="no_face")
            landmarks = np.asarray(found.landmarks, dtype=np.float64)
            score, detector = float(found.score), self.detector.name
        if (
            not np.isfinite(landmarks).all()
            or np.linalg.norm(landmarks[1] - landmarks[0]) < MIN_EYE_DISTANCE
        ):
            return None, FaceResult(index, reason="bad_landmarks")
        face = align_face(image, landmarks, template=self.template)
        return face, FaceResult(index, None, None, landmarks.reshape(-1).tolist(), score, detector)


class PrepareDataset(Dataset):
    """Rows ``indices`` of a source table -> FaceResult, read and aligned in the worker."""

    def __init__(self, table: pd.DataFrame, indices: np.ndarray, read_bytes, aligner: FaceAligner):
        self.table = table  # rows are materialised one at a time, in the worker
        self.indices = indices
        self.read_bytes = read_bytes
        self.aligner = aligner

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> FaceResult:
        index = int(self.indices[i])
        row = self.table.iloc[index].to_dict()
        try:
            return self.aligner(index, row, self.read_bytes(row))
        except ImageReadError as err:
            return FaceResult(index, reason=err.reason)


def worker_init(_: int) -> None:
    """One OpenCV thread per worker: the workers are the parallelism."""
    cv2.setNumThreads(1)
