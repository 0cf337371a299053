"""``FRModel``: a face-recognition network plus its metadata, with batched embedding helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

ImageBatch = TypeVar("ImageBatch", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class FRModelInfo:
    """What a pipeline must know about an FR model to feed it and to record it.

    Attributes:
        name: Registry name (e.g. ``"sface"``).
        embedding_size: Embedding dimension D.
        input_size: Aligned face ``(height, width)``.
        colour: Channel order the network was trained on (``"RGB"`` or ``"BGR"``). Input is
            always RGB; the network converts internally.
        template: Alignment template name in ``fiqa.core.align``.
        weights_path: File the weights were read from.
        weights_sha256: SHA-256 of that file (for provenance in metrics and W&B).
        white_box: A PyTorch network with ``forward_features`` / ``forward_head`` /
            ``forward_low_level`` and gradients (False for ONNX / dlib black boxes, which only
            embed).
    """

    name: str
    embedding_size: int
    input_size: tuple[int, int] = (112, 112)
    colour: str = "RGB"
    template: str = "arcface_112"
    weights_path: str = ""
    weights_sha256: str = ""
    white_box: bool = True


class FRModel:
    """An FR network with batched, validated embedding helpers.

    ``net`` maps float ``(N, 3, H, W)`` RGB 0..255 input to ``(N, D)`` unnormalised embeddings
    (it normalises and reorders channels itself). White-box nets also provide
    ``forward_features(x) -> (N, F)`` (everything before the last dropout),
    ``forward_head(features, dropout) -> (N, D)`` and ``forward_low_level(x) -> (N, C)`` (pooled
    activations of an early block, Huo et al.'s S_v); see ``SFaceNet``.

    Args:
        net: The network; it is moved to ``device`` and put in eval mode.
        info: Metadata of the model.
        device: Torch device to run on.
    """

    def __init__(self, net: nn.Module, info: FRModelInfo, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.info = info

    @property
    def embedding_size(self) -> int:
        """Embedding dimension D."""
        return self.info.embedding_size

    def _check_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Validate a uint8 ``(N, H, W, 3)`` batch and return it as a (CPU or device) tensor."""
        if isinstance(images, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(images))
        elif isinstance(images, torch.Tensor):
            tensor = images
        else:
            raise TypeError(f"expected a numpy array or torch tensor, got {type(images).__name__}")
        height, width = self.info.input_size
        if tensor.ndim != 4 or tuple(tensor.shape[1:]) != (height, width, 3):
            raise ValueError(
                f"{self.info.name}: expected (N, {height}, {width}, 3) images, i.e. {height}x"
                f"{width} {self.info.colour} faces aligned with the '{self.info.template}' "
                f"template (fiqa.core.align.align_face); got shape {tuple(tensor.shape)}"
            )
        if tensor.dtype != torch.uint8:
            raise ValueError(
                f"{self.info.name}: expected uint8 images (0..255), got dtype {tensor.dtype}"
            )
        return tensor

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` RGB (numpy or torch) -> float32 ``(N, 3, H, W)`` on the device.

        Values stay in 0..255: the network normalises internally. The result keeps the
        channels-last strides of the NHWC input, which runs the convolutions faster on CPU.
        """
        tensor = self._check_images(images).to(self.device, non_blocking=True)
        return tensor.permute(0, 3, 1, 2).float()

    def embed(self, images: ImageBatch, batch_size: int = 256, flip: bool = False) -> ImageBatch:
        """L2-normalised embeddings of aligned faces.

        Args:
            images: ``(N, H, W, 3)`` uint8 RGB aligned faces, numpy array or tensor.
            batch_size: Faces per forward pass.
            flip: Average the raw embeddings of each face and its horizontal mirror before
                normalising (the usual test-time augmentation).

        Returns:
            ``(N, D)`` float32, unit L2 norm: a numpy array for numpy input, else a tensor on
            the model's device.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch = self._check_images(images)
        self.net.eval()
        chunks = []
        with torch.inference_mode():
            # max(..., 1): an empty batch still makes one (empty) pass with the right shape
            for start in range(0, max(len(batch), 1), batch_size):
                x = self.preprocess(batch[start : start + batch_size])
                emb = self.net(x)
                if flip:
                    emb = (emb + self.net(torch.flip(x, dims=[3]))) / 2
                chunks.append(F.normalize(emb.float(), dim=1))
        result = torch.cat(chunks)
        if isinstance(images, np.ndarray):
            return result.cpu().numpy()
        return result.clone()  # a normal tensor: inference tensors refuse later in-place ops

    def require_white_box(self, method: str) -> None:
        """Raise naming ``method`` when the network is a black box (ONNX, dlib)."""
        if not self.info.white_box:
            raise ValueError(
                f"{method} needs a PyTorch FR model (features, dropout head, gradients); "
                f"{self.info.name!r} is a black box that only embeds. Use e.g. sface or iresnet*"
            )

    def low_level(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Pooled early-layer activations ``(N, C)`` float32 on the device (Huo et al. S_v)."""
        self.require_white_box("low-level features")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch = self._check_images(images)
        self.net.eval()
        with torch.no_grad():
            chunks = [
                self.net.forward_low_level(self.preprocess(batch[start : start + batch_size]))
                for start in range(0, max(len(batch), 1), batch_size)
            ]
        return torch.cat(chunks).float()

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Trunk features for SER-FIQ: compute once, then call ``head`` many times.

        Args:
            images: ``(N, H, W, 3)`` uint8 RGB aligned faces, numpy array or tensor.
            batch_size: Faces per forward pass.

        Returns:
            ``(N, F)`` float32 tensor on the model's device (no autograd graph).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.require_white_box("backbone features")
        batch = self._check_images(images)
        self.net.eval()
        with torch.no_grad():
            chunks = [
                self.net.forward_features(self.preprocess(batch[start : start + batch_size]))
                for start in range(0, max(len(batch), 1), batch_size)
            ]
        return torch.cat(chunks)

    def head(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Embedding head over ``features`` output, with optional dropout (SER-FIQ passes).

        Args:
            features: ``(N, F)`` tensor from ``features``.
            dropout: Drop probability applied to the features (0 = deterministic).

        Returns:
            ``(N, D)`` unnormalised embeddings (no autograd graph).
        """
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.require_white_box("the embedding head")
        self.net.eval()
        with torch.no_grad():
            return self.net.forward_head(features.to(self.device), dropout=dropout)

    def __repr__(self) -> str:
        return f"FRModel(name={self.info.name!r}, D={self.embedding_size}, device={self.device})"
