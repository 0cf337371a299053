"""AdaFace IR-50 / IR-101 (mk-minchul/AdaFace ``net.py``), loading the released ``.ckpt`` files.

Layer names match AdaFace's ``Backbone``: ``input_layer`` (conv, BN, PReLU), ``body.N`` units with
``res_layer`` (BN, conv, BN, PReLU, conv, BN) and ``shortcut_layer`` (a parameter-free 1x1
max-pool when the width is unchanged, else conv + BN), and ``output_layer`` (BN2d, Dropout,
Flatten, Linear, BN1d without affine). The release checkpoints are Lightning ``.ckpt`` files: the
state dict under ``state_dict`` with a ``model.`` prefix, next to the ``head.kernel`` AdaFace
margin head, which is dropped. AdaFace feeds BGR faces scaled to [-1, 1]; its ``forward``
returns the L2-normalised embedding and its norm, ours the unnormalised embedding.
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F
from torch import nn

from fiqa.fr.checkpoint import load_upstream_checkpoint
from fiqa.fr.iresnet import EMBEDDING_SIZE, FEATURE_SIZE, STAGE_CHANNELS
from fiqa.fr.layers import BlockTrunk, InputNorm, check_dropout, pool_low_level
from fiqa.fr.model import FRModel
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

# Units per stage; AdaFace's IR_101 is its ``Backbone(num_layers=100)``.
ADAFACE_LAYERS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 14, 3), 101: (3, 13, 30, 3)}
# output_layer indices (upstream Sequential): 0 BN2d, 1 Dropout, 2 Flatten, 3 Linear, 4 BN1d.
OUT_BN, OUT_DROPOUT, OUT_LINEAR, OUT_EMBEDDING_BN = 0, 1, 3, 4


class BasicBlockIR(nn.Module):
    """AdaFace IR unit: ``res_layer`` (BN, 3x3 conv, BN, PReLU, 3x3 conv with stride, BN) plus
    ``shortcut_layer``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if in_ch == out_ch:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # strided identity, no parameters
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(BlockTrunk):
    """AdaFace IR backbone (112x112 BGR-trained, 512-D embedding).

    Input: float ``(N, 3, 112, 112)`` RGB in 0..255; ``input_norm`` reverses the channels and
    maps to [-1, 1]. ``forward_low_level`` pools the output of the first stage (``body.0`` ..
    ``body.2``, 64 x 56 x 56 -> 1024 values). Its trunk blocks (``trunk_blocks``) are
    ``input_layer`` and each unit of ``body``, the last with ``output_layer.0`` (BN2d).

    Args:
        depth: 50 or 101.
        dropout: Dropout before the embedding ``Linear`` used by ``forward`` in train mode.
    """

    def __init__(self, depth: int, dropout: float = 0.0) -> None:
        super().__init__()
        if depth not in ADAFACE_LAYERS:
            raise ValueError(
                f"AdaFace IR depth must be one of {sorted(ADAFACE_LAYERS)}, got {depth}"
            )
        self.dropout_p = check_dropout(dropout)
        self.input_norm = InputNorm(127.5, 127.5, bgr=True)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, STAGE_CHANNELS[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(STAGE_CHANNELS[0]),
            nn.PReLU(STAGE_CHANNELS[0]),
        )
        units: list[nn.Module] = []
        in_ch = STAGE_CHANNELS[0]
        for count, out_ch in zip(ADAFACE_LAYERS[depth], STAGE_CHANNELS, strict=True):
            units.append(BasicBlockIR(in_ch, out_ch, 2))
            units += [BasicBlockIR(out_ch, out_ch, 1) for _ in range(count - 1)]
            in_ch = out_ch
        self.body = nn.Sequential(*units)
        self.first_stage_units = ADAFACE_LAYERS[depth][0]
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Dropout(self.dropout_p),  # keeps upstream's indices; forward_head applies dropout
            nn.Flatten(),
            nn.Linear(FEATURE_SIZE, EMBEDDING_SIZE),
            nn.BatchNorm1d(EMBEDDING_SIZE, affine=False),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, 25088)`` flattened ``output_layer.0`` output."""
        x = self.body(self.input_layer(self.input_norm(x)))
        return torch.flatten(self.output_layer[OUT_BN](x), 1)

    def trunk_blocks(self) -> list[nn.Module]:
        """``input_layer``, then the ``body`` units, the last one with ``output_layer.0``."""
        last = nn.Sequential(self.body[-1], self.output_layer[OUT_BN])
        return [self.input_layer, *self.body[:-1], last]

    def forward_low_level(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled activations of the first stage: ``(N, 64 * 16)``."""
        x = self.input_layer(self.input_norm(x))
        return pool_low_level(self.body[: self.first_stage_units](x))

    def forward_head(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Dropout (whenever ``dropout > 0``, where upstream's ``output_layer.1`` sits), the
        embedding ``Linear`` and the non-affine BatchNorm1d.

        Args:
            features: ``(N, 25088)`` output of ``forward_features``.
            dropout: Drop probability (0 = deterministic).

        Returns:
            ``(N, 512)`` unnormalised embedding.
        """
        if dropout > 0.0:
            features = F.dropout(features, p=dropout, training=True)
        embedding = self.output_layer[OUT_LINEAR](features)
        return self.output_layer[OUT_EMBEDDING_BN](embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, 512)`` unnormalised embedding."""
        dropout = self.dropout_p if self.training else 0.0
        return self.forward_head(self.forward_features(x), dropout=dropout)


def lightning_safe_globals() -> list[type]:
    """Non-tensor classes a Lightning ``.ckpt`` may pickle besides its state dict.

    Older Lightning versions key callback states by the callback class and keep
    hyper-parameters in an ``AttributeDict`` or ``argparse.Namespace``; allowing these lets
    ``torch.load(weights_only=True)`` read the file without running arbitrary code.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint  # deferred: a slow import
    from pytorch_lightning.utilities.parsing import AttributeDict

    return [argparse.Namespace, AttributeDict, ModelCheckpoint]


@register_fr_model("adaface_ir50", "adaface_ir101")
def build_adaface(spec: FRSpec) -> FRModel:
    """AdaFace IR-50 / IR-101 from a release ``.ckpt`` (e.g. ``adaface_ir101_webface12m.ckpt``)."""
    depth = int(spec.name.removeprefix("adaface_ir"))
    return load_upstream_checkpoint(
        spec,
        lambda: AdaFaceIR(depth, dropout=spec.dropout),
        what=f"an AdaFace IR-{depth} Lightning checkpoint (.ckpt)",
        embedding_size=EMBEDDING_SIZE,
        colour="BGR",
        strip_prefixes=("model.", "module."),
        drop_prefixes=("head.",),
        safe_globals=lightning_safe_globals(),
    )
