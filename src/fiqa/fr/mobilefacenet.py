"""insightface arcface_torch MobileFaceNet (``backbones/mobilefacenet.py``, ``get_mbf``).

Layer names match upstream: ``layers.N`` (a ``ConvBlock`` stem, a grouped ``ConvBlock`` or
``Residual``, then alternating ``DepthWise`` / ``Residual`` stages), ``conv_sep`` and the GDC
head ``features.layers`` (depthwise 7x7 ``LinearBlock``, Flatten, bias-free Linear, BatchNorm1d).
Every block keeps its modules in a ``layers`` Sequential, so keys read like
``layers.3.layers.0.layers.1.layers.0.weight``. Released ``backbone.pth`` files are bare state
dicts; input is RGB ``(x / 255 - 0.5) / 0.5`` like iResNet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fiqa.fr.checkpoint import load_upstream_checkpoint
from fiqa.fr.layers import InputNorm, check_dropout, cuda_autocast, pool_low_level
from fiqa.fr.model import FRModel
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

EMBEDDING_SIZE = 512
HEAD_CHANNELS = 512  # conv_sep output, fixed upstream whatever the scale
DEFAULT_BLOCKS = (1, 4, 6, 2)  # get_mbf; get_mbf_large is blocks (2, 8, 12, 4), scale 4
DEFAULT_SCALE = 2
LOW_LEVEL_LAYERS = 2  # forward_low_level pools layers.0 .. layers.1 (64*scale x 56 x 56)
# GDC head indices (upstream Sequential): 0 depthwise LinearBlock, 1 Flatten, 2 Linear, 3 BN1d.
GDC_CONV, GDC_LINEAR, GDC_BN = 0, 2, 3


def _conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1, padding: int | None = None
) -> nn.Conv2d:
    """Bias-free conv; "same" padding (``kernel // 2``) unless ``padding`` is given."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False)


class ConvBlock(nn.Module):
    """``layers``: bias-free conv, BatchNorm2d, PReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            _conv(in_ch, out_ch, kernel, stride, groups), nn.BatchNorm2d(out_ch), nn.PReLU(out_ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """``layers``: bias-free conv, BatchNorm2d (no activation)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
        padding: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.layers = nn.Sequential(
            _conv(in_ch, out_ch, kernel, stride, groups, padding), nn.BatchNorm2d(out_ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``width``, 3x3 depthwise (stride), 1x1 linear project;
    with an identity shortcut when ``residual``."""

    def __init__(self, in_ch: int, out_ch: int, width: int, stride: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_ch, width),
            ConvBlock(width, width, 3, stride, groups=width),
            LinearBlock(width, out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``layers``: ``count`` residual stride-1 ``DepthWise`` units of ``channels``."""

    def __init__(self, channels: int, count: int, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *[DepthWise(channels, channels, width, 1, residual=True) for _ in range(count)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution head: ``layers`` = 7x7 depthwise LinearBlock, Flatten,
    bias-free Linear, BatchNorm1d."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(HEAD_CHANNELS, HEAD_CHANNELS, 7, groups=HEAD_CHANNELS, padding=0),
            nn.Flatten(),
            nn.Linear(HEAD_CHANNELS, num_features, bias=False),
            nn.BatchNorm1d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """arcface_torch MobileFaceNet (112x112 RGB input, 512-D embedding by default).

    Upstream has no dropout; ``forward_head`` applies it to the 512 GDC features right before
    the embedding Linear (``features.layers.2``), the place of iResNet's dropout before ``fc``.
    ``forward_low_level`` pools the output of ``layers.1`` (64*scale x 56 x 56).

    Args:
        dropout: Dropout before the embedding Linear used by ``forward`` in train mode.
        num_features: Embedding dimension D.
        blocks: Units of the four residual stages (a 1 in front means a grouped ConvBlock).
        scale: Width multiplier of the trunk.
        fp16: Run the trunk under float16 autocast on CUDA, as arcface_torch's ``fp16``.
    """

    def __init__(
        self,
        dropout: float = 0.0,
        num_features: int = EMBEDDING_SIZE,
        blocks: Sequence[int] = DEFAULT_BLOCKS,
        scale: int = DEFAULT_SCALE,
        fp16: bool = False,
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"MobileFaceNet blocks must be 4 positive stage sizes, got {blocks}")
        self.dropout_p = check_dropout(dropout)
        self.fp16 = bool(fp16)
        self.input_norm = InputNorm(127.5, 127.5)
        c64, c128 = 64 * scale, 128 * scale
        # Expansion widths are fixed upstream (128 / 256 / 512), independent of scale.
        second = (
            ConvBlock(c64, c64, 3, 1, groups=64)
            if blocks[0] == 1
            else Residual(c64, blocks[0], 128)
        )
        self.layers = nn.ModuleList([
            ConvBlock(3, c64, 3, 2),
            second,
            DepthWise(c64, c64, 128, 2),
            Residual(c64, blocks[1], 128),
            DepthWise(c64, c128, 256, 2),
            Residual(c128, blocks[2], 256),
            DepthWise(c128, c128, 512, 2),
            Residual(c128, blocks[3], 256),
        ])  # fmt: skip
        self.conv_sep = ConvBlock(c128, HEAD_CHANNELS)
        self.features = GDC(num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, 512)`` GDC depthwise-conv output."""
        x = self.input_norm(x)
        with cuda_autocast(x, self.fp16):
            for layer in self.layers:
                x = layer(x)
        x = self.features.layers[GDC_CONV](self.conv_sep(x.float()))
        return torch.flatten(x, 1)

    def forward_low_level(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ``layers.1`` activations: ``(N, 64 * scale * 16)``."""
        x = self.input_norm(x)
        for layer in self.layers[:LOW_LEVEL_LAYERS]:
            x = layer(x)
        return pool_low_level(x)

    def forward_head(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Dropout (whenever ``dropout > 0``, whatever the mode), embedding Linear, BN1d.

        Args:
            features: ``(N, 512)`` output of ``forward_features``.
            dropout: Drop probability (0 = deterministic).

        Returns:
            ``(N, D)`` unnormalised embedding.
        """
        if dropout > 0.0:
            features = F.dropout(features, p=dropout, training=True)
        return self.features.layers[GDC_BN](self.features.layers[GDC_LINEAR](features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, D)`` unnormalised embedding."""
        dropout = self.dropout_p if self.training else 0.0
        return self.forward_head(self.forward_features(x), dropout=dropout)


@register_fr_model("mobilefacenet")
def build_mobilefacenet(spec: FRSpec) -> FRModel:
    """arcface_torch MobileFaceNet; options ``num_features`` (512), ``blocks`` ([1, 4, 6, 2]),
    ``scale`` (2; ``get_mbf_large`` is blocks [2, 8, 12, 4], scale 4) and ``fp16`` (False)."""
    num_features = int(spec.option("num_features", EMBEDDING_SIZE))
    blocks = tuple(int(b) for b in spec.option("blocks", DEFAULT_BLOCKS))
    scale = int(spec.option("scale", DEFAULT_SCALE))
    fp16 = bool(spec.option("fp16", False))
    return load_upstream_checkpoint(
        spec,
        lambda: MobileFaceNet(spec.dropout, num_features, blocks, scale, fp16),
        what="an insightface arcface_torch mbf backbone .pth",
        embedding_size=num_features,
    )
