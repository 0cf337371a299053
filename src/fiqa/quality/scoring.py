"""Score faces with a quality model: a Lightning ``.ckpt``, fiqa's exported ``.onnx``, or any
ONNX quality model (e.g. a published eDifFIQA graph) with its input convention as options.

A scorer knows the template and size its model takes. Aligned faces on another template are
re-warped; raw photos are detected and aligned first (``mode="raw"``, or ``"auto"``: images of
exactly the model's input size are taken as aligned). Files that cannot be read, have no face,
or have the wrong size for aligned input become failure rows, never errors. A model file that is
not a quality model (random bytes, a torch file that is no Lightning checkpoint, an FR model's
ONNX graph) is a ``QualityModelError`` naming the file and what it holds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fiqa.core.align import retarget_faces
from fiqa.data.face_pipeline import FaceAligner
from fiqa.quality.calibration import ONNX_KEY as CALIBRATION_ONNX_KEY
from fiqa.quality.calibration import Calibration
from fiqa.quality.model_files import (
    QualityModelError,
    check_checkpoint,
    check_quality_graph,
    onnx_session,
)

log = logging.getLogger(__name__)

NOT_ALIGNED = "not_aligned"  # aligned mode: the image is not the model's input size
SCORE_COLUMNS = ["path", "quality", "failure"]
SCALES = ("raw", "0-100")  # fiqa score --scale
MODES = ("auto", "aligned", "raw")
# Input convention of an external ONNX quality model (fiqa's own graphs record theirs).
ONNX_DEFAULTS = {"template": "arcface_112", "colour": "RGB", "mean": 0.0, "std": 1.0}

Predict = Callable[[np.ndarray], np.ndarray]


class QualityScorer:
    """Batched quality inference with one backend function.

    Args:
        predict: Maps uint8 ``(n, H, W, 3)`` RGB faces to float32 ``(n,)`` quality.
        source: Description of the model (for logs and errors).
        template: Alignment template the model takes.
        input_size: ``(H, W)`` of its faces.
    """

    def __init__(self, predict: Predict, source: str, template: str = "arcface_112",
                 input_size: tuple[int, int] = (112, 112),
                 calibration: Calibration | None = None) -> None:  # fmt: skip
        self._predict = predict
        self.source, self.template, self.input_size = source, template, tuple(input_size)
        self.calibration = calibration

    def check_scale(self, scale: str) -> None:
        """Raise ``QualityModelError`` when ``scale`` is ``0-100`` and the model has no
        calibration (``ValueError`` for an unknown scale)."""
        if scale not in SCALES:
            raise ValueError(f"scale={scale!r}; choose one of {', '.join(SCALES)}")
        if scale == "0-100" and self.calibration is None:
            raise QualityModelError(f"{self.source} has no 0-100 calibration (a model trained "
                                    "before fiqa stored one, or not trained by fiqa)")  # fmt: skip

    def with_scale(self, table: pd.DataFrame, scale: str = "raw") -> pd.DataFrame:
        """``table`` with the calibrated ``quality_0_100`` column beside the raw ``quality``
        (when the model has a calibration); ``scale="0-100"`` puts the calibrated score in
        ``quality`` and the raw one in ``quality_raw`` (``check_scale``'s errors)."""
        self.check_scale(scale)
        if self.calibration is None:
            return table
        calibrated = pd.array(self.calibration(table["quality"].to_numpy()), dtype="Int64")
        if scale == "raw":
            return table.assign(quality_0_100=calibrated)
        return table.rename(columns={"quality": "quality_raw"}).assign(quality=calibrated)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], device: str = "cpu",
                  onnx_options: Mapping[str, Any] | None = None) -> QualityScorer:  # fmt: skip
        """Load a Lightning checkpoint (``.ckpt``) or an ONNX quality model (``.onnx``).

        Args:
            path: Model file.
            device: Torch device for checkpoints; for ONNX, "cuda..." selects onnxruntime's
                CUDA provider (must be available) and anything else the CPU provider.
            onnx_options: For ONNX graphs not exported by fiqa: ``template``, ``colour``
                (RGB | BGR), ``mean`` and ``std`` (input ``(x - mean) / std`` in 0..255 units);
                the input size is read from the graph.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            QualityModelError: If it is no fiqa quality checkpoint / no ONNX quality model.
            ValueError: If the suffix is neither ``.ckpt`` nor ``.onnx``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"quality model {path} not found: run the train stage first")
        if path.suffix == ".ckpt":
            model = _load_checkpoint(path, device)
            return cls(_torch_predictor(model), f"{path} (torch, {device})", model.template,
                       model.input_size, Calibration.from_dict(model.calibration))  # fmt: skip
        if path.suffix == ".onnx":
            predict, template, size, calibration = _onnx_predictor(path, device,
                                                                   onnx_options or {})  # fmt: skip
            return cls(predict, f"{path} (onnxruntime, {device})", template, size, calibration)
        raise ValueError(f"{path}: unknown quality model format; expected a .ckpt or .onnx file")

    def score(self, faces: np.ndarray, batch_size: int = 64,
              template: str | None = None) -> np.ndarray:  # fmt: skip
        """Quality of aligned faces.

        Args:
            faces: uint8 ``(N, h, w, 3)`` RGB faces aligned on ``template``.
            batch_size: Faces per forward pass.
            template: Template of ``faces`` (None: the model's); others are re-warped.

        Returns:
            float32 ``(N,)`` quality, higher = better.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        faces = np.asarray(faces)
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[3] != 3:
            raise ValueError(
                f"expected uint8 (N, H, W, 3) RGB faces, got {faces.dtype} {faces.shape}"
            )
        out = np.empty(len(faces), np.float32)
        for start in range(0, len(faces), batch_size):
            chunk = retarget_faces(faces[start : start + batch_size],
                                   template or self.template, self.template)  # fmt: skip
            if chunk.shape[1:3] != self.input_size:
                raise ValueError(
                    f"{self.source}: faces are {chunk.shape[1:3]}, the model takes "
                    f"{self.input_size} faces aligned on {self.template!r}"
                )
            out[start : start + len(chunk)] = self._predict(np.ascontiguousarray(chunk))
        return out

    def score_files(self, paths: Iterable[str | os.PathLike[str]], batch_size: int = 64,
                    mode: str = "auto", aligner: FaceAligner | None = None) -> pd.DataFrame:  # fmt: skip
        """Score image files, streaming ``batch_size`` at a time.

        Args:
            paths: Image files, in output order.
            batch_size: Faces per forward pass (and most images held in memory).
            mode: ``aligned`` (faces on the model's template), ``raw`` (detect with YuNet and
                align first), ``auto`` (aligned when the image has the model's input size).
            aligner: Detects and aligns the photos of ``raw`` and ``auto`` on the model's
                template (``PrepareSettings.aligner``: how ``prepare`` aligns).

        Returns:
            DataFrame ``path, quality, failure``: ``failure`` is None for scored files, else
            the reason (read failure, ``no_face``, ``not_aligned``); ``quality`` is then NaN.
        """
        from fiqa.core.images import ImageReadError, read_image

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "aligned" and aligner is None:
            raise ValueError(f"mode={mode!r} detects and aligns faces: give the aligner "
                             "(PrepareSettings.aligner with the model's template)")  # fmt: skip
        rows: list[dict[str, Any]] = []
        batch: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            scores = self.score(np.stack([face for _, face in batch]), batch_size)
            for (row, _), value in zip(batch, scores, strict=True):
                rows[row]["quality"] = float(value)
            batch.clear()

        for path in paths:
            rows.append({"path": str(path), "quality": float("nan"), "failure": None})
            try:
                face, reason = self._face(read_image(path), str(path), mode, aligner)
            except ImageReadError as err:
                face, reason = None, err.reason
            if face is None:
                rows[-1]["failure"] = reason
                continue
            batch.append((len(rows) - 1, face))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        table = pd.DataFrame(
            {
                "path": pd.Series([r["path"] for r in rows], dtype=object),
                "quality": np.array([r["quality"] for r in rows], np.float32),
                "failure": pd.Series([r["failure"] for r in rows], dtype=object),
            },
            columns=SCORE_COLUMNS,
        )
        n_failed = int(table["failure"].notna().sum())
        if n_failed:
            log.warning("%d of %d files could not be scored", n_failed, len(table))
        return table

    def _face(self, image: np.ndarray, path: str, mode: str, aligner: FaceAligner | None):
        """(aligned face or None, failure reason or None) of one decoded image."""
        aligned = image.shape[:2] == self.input_size
        if mode == "aligned" or (mode == "auto" and aligned):
            return (image, None) if aligned else (None, NOT_ALIGNED)
        face, result = aligner.align(0, {"path": path}, image)
        return face, result.reason

    def score_prepared(self, prepared_dir: str | os.PathLike[str],
                       batch_size: int = 64) -> pd.DataFrame:  # fmt: skip
        """Every face of a prepared directory: ``sample_id, path, identity, split, quality``."""
        from fiqa.data.face_store import PreparedFaces

        prepared = PreparedFaces(prepared_dir)
        template = prepared.template
        quality = np.empty(len(prepared), np.float32)
        for rows, faces in prepared.chunks(max(batch_size, 512)):
            quality[rows] = self.score(faces, batch_size, template)
        table = prepared.manifest[["sample_id", "path", "identity", "split"]].copy()
        return table.assign(quality=quality)


def _load_checkpoint(path: Path, device: str) -> Any:
    """The ``QualityRegressor`` of a Lightning checkpoint, in eval mode."""
    from fiqa.quality.model import QualityRegressor

    check_checkpoint(path, QualityRegressor)
    try:
        model = QualityRegressor.load_from_checkpoint(path, map_location=device, pretrained=False)
    except RuntimeError as err:  # e.g. a state dict that does not fit its hyper-parameters
        raise QualityModelError(
            f"{path} cannot be loaded as a fiqa quality checkpoint ({str(err).splitlines()[0]})"
        ) from err
    return model.eval()


def _torch_predictor(model: torch.nn.Module) -> Predict:
    """Checkpoint backend; the FR weights are not re-read (the checkpoint holds them)."""

    @torch.inference_mode()
    def predict(faces: np.ndarray) -> np.ndarray:
        # Transfer uint8 and convert on the device (4x less host-to-device traffic).
        batch = torch.from_numpy(faces).to(model.device).permute(0, 3, 1, 2).float()
        return model(batch).float().cpu().numpy()

    return predict


def _onnx_predictor(path: Path, device: str,
                    options: Mapping[str, Any]
                    ) -> tuple[Predict, str, tuple[int, int], Calibration | None]:  # fmt: skip
    """onnxruntime backend: fiqa's graphs carry their template and calibration in the
    metadata; other graphs take ``options`` (ONNX_DEFAULTS) and their first input's (static)
    size."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                f"{path}: device={device!r} but onnxruntime has no CUDA provider "
                f"(available: {ort.get_available_providers()}); use device='cpu'"
            )
        providers.insert(0, "CUDAExecutionProvider")
    session = onnx_session(path, providers)
    check_quality_graph(path, session)
    meta = session.get_modelmeta().custom_metadata_map
    graph_input = session.get_inputs()[0]
    if "fiqa.template" in meta:  # exported by fiqa.quality.export: RGB 0..255 as is
        opts = {**ONNX_DEFAULTS, "template": meta["fiqa.template"]}
        size = tuple(json.loads(meta["fiqa.input_size"]))
    else:
        opts = {**ONNX_DEFAULTS, **dict(options)}
        size = tuple(graph_input.shape[2:4])
        if not all(isinstance(d, int) for d in size):
            from fiqa.core.align import get_template

            width, height = get_template(opts["template"]).size
            size = (height, width)
    output = session.get_outputs()[0].name
    bgr = str(opts["colour"]).upper() == "BGR"
    mean, std = float(opts["mean"]), float(opts["std"])

    def predict(faces: np.ndarray) -> np.ndarray:
        x = faces[..., ::-1] if bgr else faces
        batch = (np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) - mean) / std
        (out,) = session.run([output], {graph_input.name: batch})
        return np.asarray(out, np.float32).reshape(len(faces), -1)[:, 0]

    calibration = Calibration.from_json(meta.get(CALIBRATION_ONNX_KEY))
    return predict, str(opts["template"]), (int(size[0]), int(size[1])), calibration
