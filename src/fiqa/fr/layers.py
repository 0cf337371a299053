"""Layers shared by the FR architectures."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

# Grid of Huo et al.'s low-level features: early activations averaged over LOW_LEVEL_GRID^2 cells,
# which keeps coarse layout and the local energy that blur and noise change.
LOW_LEVEL_GRID = 4


def pool_low_level(activations: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` early-block activations -> ``(N, C * 16)`` float32 pooled features."""
    return F.adaptive_avg_pool2d(activations.float(), LOW_LEVEL_GRID).flatten(1)


class InputNorm(nn.Module):
    """Map the pipeline's float RGB 0..255 input to what a network was trained on.

    ``y = (x[:, order] - mean) / std`` with scalar ``mean`` / ``std`` in 0..255 units and ``order``
    reversing the channels for BGR networks. Holds no parameters or buffers, so it adds no
    state-dict keys and upstream checkpoints load unchanged. Its output is channels-last
    whatever the layout of ``x`` (a face batch from ``FRModel.preprocess`` already is; DifFIQA's
    reconstructions or a mirrored batch may not be): the network's convolutions then run
    ~1.5x faster on CPU (oneDNN; SFace: 35 -> 23 ms per face on 2 cores).

    Args:
        mean: Subtracted value (e.g. 127.5).
        std: Divisor (e.g. 127.5 for [-1, 1], 128 for SFace/FaceNet, 255 for [0, 1]).
        bgr: Reverse the channel order first (AdaFace, MagFace, dlib-style BGR networks).
    """

    def __init__(self, mean: float = 127.5, std: float = 127.5, bgr: bool = False) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std, self.bgr = float(mean), float(std), bool(bgr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}, bgr={self.bgr}"


def check_dropout(dropout: float) -> float:
    """``dropout`` as a float, or a ValueError when it is outside [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return float(dropout)


def cuda_autocast(x: torch.Tensor, enabled: bool) -> torch.autocast:
    """arcface_torch's ``fp16`` trunk: float16 autocast on CUDA input, a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.float16, enabled=enabled and x.is_cuda)


class BlockTrunk(nn.Module, ABC):
    """A network whose trunk (``forward_features``) is a sequence of blocks, so that training
    can start part-way up it (``model.train_blocks``, ``fiqa.quality.backbone``).

    Subclasses define ``input_norm`` and ``trunk_blocks``; for every ``cut`` in
    ``[0, len(trunk_blocks())]``, ``forward_from(forward_to(x, cut), cut)`` equals
    ``forward_features(x)``.
    """

    input_norm: InputNorm

    @abstractmethod
    def trunk_blocks(self) -> list[nn.Module]:
        """The trunk's blocks in forward order (the net's own modules, never copies)."""

    def forward_to(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Normalise the 0..255 input and run blocks ``[0, cut)``: the ``(N, C, H, W)``
        activation at ``cut``."""
        x = self.input_norm(x)
        for block in self.trunk_blocks()[:cut]:
            x = block(x)
        return x

    def forward_from(self, h: torch.Tensor, cut: int) -> torch.Tensor:
        """Run blocks ``[cut, end)`` on the activation at ``cut``; flattened as
        ``forward_features`` returns it."""
        for block in self.trunk_blocks()[cut:]:
            h = block(h)
        return torch.flatten(h, 1)
