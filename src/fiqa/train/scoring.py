"""Score aligned faces with a trained quality model: a Lightning ``.ckpt`` or an ``.onnx`` file.

Inputs are aligned 112x112 RGB faces (ArcFace template). ``score_files`` streams files in
batches and turns unreadable or wrongly sized files into failure rows instead of errors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

FACE_SIZE = 112  # regressor input side: faces aligned to the ArcFace 112x112 template
NOT_ALIGNED = "not_aligned_112x112"
SCORE_COLUMNS = ["path", "quality", "failure"]


def check_faces(faces: np.ndarray) -> np.ndarray:
    """Validate uint8 ``(N, 112, 112, 3)`` RGB faces; returns them as a contiguous array."""
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise ValueError(
            f"expected uint8 (N, {FACE_SIZE}, {FACE_SIZE}, 3) RGB faces aligned to the ArcFace "
            f"template, got {faces.dtype} {faces.shape}"
        )
    return np.ascontiguousarray(faces)


class QualityScorer:
    """Batched quality inference with one backend function.

    Args:
        predict: Maps uint8 ``(n, 112, 112, 3)`` RGB faces to float32 ``(n,)`` quality.
        source: Description of the model (for logs and errors).
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], source: str) -> None:
        self._predict = predict
        self.source = source

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], device: str = "cpu") -> QualityScorer:
        """Load a Lightning checkpoint (``.ckpt``) or an exported ``.onnx`` model.

        Args:
            path: Model file.
            device: Torch device for checkpoints; for ONNX, "cuda..." selects onnxruntime's
                CUDA provider (must be available) and anything else the CPU provider.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the suffix is neither ``.ckpt`` nor ``.onnx``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"quality model {path} not found: run the train stage first")
        if path.suffix == ".ckpt":
            return cls(_torch_predictor(path, device), f"{path} (torch, {device})")
        if path.suffix == ".onnx":
            return cls(_onnx_predictor(path, device), f"{path} (onnxruntime, {device})")
        raise ValueError(f"{path}: unknown quality model format; expected a .ckpt or .onnx file")

    def score(self, faces: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Quality of aligned faces.

        Args:
            faces: uint8 ``(N, 112, 112, 3)`` RGB faces.
            batch_size: Faces per forward pass.

        Returns:
            float32 ``(N,)`` quality, higher = better.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        faces = check_faces(faces)
        out = np.empty(len(faces), np.float32)
        for start in range(0, len(faces), batch_size):
            chunk = faces[start : start + batch_size]
            out[start : start + len(chunk)] = self._predict(chunk)
        return out

    def score_files(
        self, paths: Iterable[str | os.PathLike[str]], batch_size: int = 64
    ) -> pd.DataFrame:
        """Score image files of aligned 112x112 faces, streaming ``batch_size`` at a time.

        Args:
            paths: Image files, in output order.
            batch_size: Faces per forward pass (and most images held in memory).

        Returns:
            DataFrame ``path, quality, failure``: ``failure`` is None for scored files, else
            the read-failure reason or ``"not_aligned_112x112"`` (``quality`` is then NaN).
        """
        from fiqa.data.images import ImageReadError, read_image

        paths_out: list[str] = []
        quality: list[float] = []
        failures: list[str | None] = []
        batch: list[np.ndarray] = []
        batch_rows: list[int] = []

        def flush() -> None:
            scores = self.score(np.stack(batch), batch_size)
            for row, value in zip(batch_rows, scores, strict=True):
                quality[row] = float(value)
            batch.clear()
            batch_rows.clear()

        for path in paths:
            paths_out.append(str(path))
            quality.append(float("nan"))
            failures.append(None)
            try:
                image = read_image(path)
            except ImageReadError as err:
                failures[-1] = err.reason
                log.debug("skipped %s: %s", path, err)
                continue
            if image.shape != (FACE_SIZE, FACE_SIZE, 3):
                failures[-1] = NOT_ALIGNED
                continue
            batch.append(image)
            batch_rows.append(len(paths_out) - 1)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        n_failed = sum(f is not None for f in failures)
        if n_failed:
            log.warning("%d of %d files could not be scored", n_failed, len(paths_out))
        return pd.DataFrame(
            {
                "path": pd.Series(paths_out, dtype=object),
                "quality": np.asarray(quality, np.float32),
                "failure": pd.Series(failures, dtype=object),
            },
            columns=SCORE_COLUMNS,
        )


def _torch_predictor(path: Path, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """Checkpoint backend; the FR weights are not re-read (the checkpoint holds them)."""
    from fiqa.train.module import QualityRegressor

    model = QualityRegressor.load_from_checkpoint(path, map_location=device, pretrained=False)
    model.eval()

    @torch.inference_mode()
    def predict(faces: np.ndarray) -> np.ndarray:
        # Transfer uint8 and convert on the device (4x less host-to-device traffic).
        batch = torch.from_numpy(faces).to(model.device).permute(0, 3, 1, 2).float()
        return model(batch).float().cpu().numpy()

    return predict


def _onnx_predictor(path: Path, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime backend for a graph exported by ``fiqa.train.export.export_onnx``."""
    import onnxruntime as ort

    from fiqa.train.export import INPUT_NAME, OUTPUT_NAME

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                f"{path}: device={device!r} but onnxruntime has no CUDA provider "
                f"(available: {ort.get_available_providers()}); use device='cpu'"
            )
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(path), providers=providers)

    def predict(faces: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32)
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return np.asarray(out, np.float32).reshape(len(faces))

    return predict
