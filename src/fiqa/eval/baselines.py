"""Simple blind quality baselines every FIQA comparison needs beside the learned methods.

- ``detector``: the face detector's confidence (YuNet), as recorded when the face was
  detected in its source photo (prepare, or the alignment of a benchmark's raw photos); for
  faces that came aligned or with given landmarks, YuNet's confidence on the aligned face,
  padded by 30% as tight crops need.
- ``sharpness``: the variance of the Laplacian of the aligned face in grey levels, the classic
  focus measure (Pech-Pacheco et al., 2000).
"""

from __future__ import annotations

import cv2
import numpy as np

from fiqa.data.detect import YuNetDetector

SIMPLE_BASELINES = ("detector", "sharpness")
CHUNK = 512  # faces decoded at a time
ALIGNED_PAD = 0.3  # padding of an aligned face for detection, a fraction of its size


def sharpness(faces: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian (3x3 kernel) of each uint8 RGB face's grey image, ``(n,)``."""
    out = np.empty(len(faces), np.float64)
    for i, face in enumerate(faces):
        grey = cv2.cvtColor(np.ascontiguousarray(face), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    return out


def aligned_face_confidence(faces: np.ndarray, detector: YuNetDetector) -> np.ndarray:
    """YuNet's best confidence on each padded aligned face (0 where it finds none), ``(n,)``."""
    out = np.zeros(len(faces), np.float64)
    for i, face in enumerate(faces):
        pad = round(ALIGNED_PAD * max(face.shape[:2]))
        padded = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        found = detector.detect_all(padded)
        out[i] = max((d.score for d in found), default=0.0)
    return out


def baseline_quality(name: str, faces, n: int, det_scores: np.ndarray | None) -> np.ndarray:
    """The ``name`` baseline of ``n`` faces.

    Args:
        name: ``detector`` or ``sharpness``.
        faces: ``rows -> uint8 (k, H, W, 3)`` aligned faces.
        n: Number of faces.
        det_scores: Recorded detector confidences (NaN where none was recorded), or None.
    """
    if name not in SIMPLE_BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {SIMPLE_BASELINES}")
    recorded = np.full(n, np.nan) if det_scores is None else np.asarray(det_scores, np.float64)
    out = recorded.copy() if name == "detector" else np.empty(n, np.float64)
    todo = np.flatnonzero(np.isnan(out)) if name == "detector" else np.arange(n)
    # accept any detection on an aligned face: the score itself is the quality
    detector = YuNetDetector(score_threshold=0.0, pad_ratio=0.0) if name == "detector" else None
    for start in range(0, len(todo), CHUNK):
        rows = todo[start : start + CHUNK]
        batch = faces(rows)
        out[rows] = (
            sharpness(batch) if detector is None else aligned_face_confidence(batch, detector)
        )
    return out
