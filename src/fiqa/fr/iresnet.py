"""insightface arcface_torch iResNet-18 .. 200 and MagFace's iResNet, loading upstream checkpoints.

Layer names match insightface ``recognition/arcface_torch/backbones/iresnet.py``
(``conv1, bn1, prelu, layer1..4, bn2, fc, features``), so a released ``backbone.pth`` (a bare
state dict) loads strictly. MagFace (``IrvingMeng/MagFace``, ``models/iresnet.py``) trains the
same layout with BatchNorm eps 2e-5 and a channel dropout (``Dropout2d``) before ``fc``; its
checkpoints nest the backbone under ``state_dict`` with a ``features.module.`` prefix next to the
``fc.`` MagLinear classification head, which is dropped.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from fiqa.fr.checkpoint import load_upstream_checkpoint
from fiqa.fr.layers import BlockTrunk, InputNorm, check_dropout, cuda_autocast, pool_low_level
from fiqa.fr.model import FRModel
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

# Basic blocks per stage of each depth (arcface_torch iresnet18 .. iresnet200).
IRESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
STAGE_CHANNELS = (64, 128, 256, 512)
TRUNK_SPATIAL = 7  # 112 input halved by the four stages
FEATURE_SIZE = STAGE_CHANNELS[-1] * TRUNK_SPATIAL * TRUNK_SPATIAL  # 25088
EMBEDDING_SIZE = 512
ARCFACE_BN_EPS = 1e-5
MAGFACE_BN_EPS = 2e-5
MAGFACE_PREFIXES = ("features.module.", "module.features.")  # backbone keys in MagFace files


class IBasicBlock(nn.Module):
    """Pre-activation basic block: BN, 3x3 conv, BN, PReLU, 3x3 conv (stride), BN, + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, eps: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=eps)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=eps)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=eps)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(BlockTrunk):
    """iResNet face-recognition network (112x112 input, 512-D embedding by default).

    Input: float ``(N, 3, 112, 112)`` RGB in 0..255; ``input_norm`` maps it to what the
    weights were trained on. ``forward_low_level`` pools the output of ``layer1``
    (64 x 56 x 56 -> 1024 values). Its trunk blocks (``trunk_blocks``) are the stem (``conv1``,
    ``bn1``, ``prelu``) and each residual unit of ``layer1`` .. ``layer4``, the last with
    ``bn2``: 1 + sum(units) blocks, e.g. 25 for iResNet-50.

    Args:
        depth: 18, 34, 50, 100 or 200.
        dropout: Dropout before ``fc`` used by ``forward`` in train mode.
        num_features: Embedding dimension D.
        input_norm: Input mapping; default arcface_torch's ``(x / 255 - 0.5) / 0.5`` in RGB.
        bn_eps: BatchNorm epsilon (1e-5 arcface_torch, 2e-5 MagFace).
        channel_dropout: Drop whole channels of the 512 x 7 x 7 map (MagFace's ``Dropout2d``)
            instead of single features (arcface_torch's ``Dropout``).
        fp16: Run the trunk under float16 autocast on CUDA, as arcface_torch's ``fp16``.
    """

    def __init__(
        self,
        depth: int,
        dropout: float = 0.0,
        num_features: int = EMBEDDING_SIZE,
        input_norm: InputNorm | None = None,
        bn_eps: float = ARCFACE_BN_EPS,
        channel_dropout: bool = False,
        fp16: bool = False,
    ) -> None:
        super().__init__()
        if depth not in IRESNET_LAYERS:
            raise ValueError(f"iResNet depth must be one of {sorted(IRESNET_LAYERS)}, got {depth}")
        self.dropout_p = check_dropout(dropout)
        self.channel_dropout, self.fp16 = bool(channel_dropout), bool(fp16)
        self.input_norm = input_norm if input_norm is not None else InputNorm(127.5, 127.5)
        self.conv1 = nn.Conv2d(3, STAGE_CHANNELS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0], eps=bn_eps)
        self.prelu = nn.PReLU(STAGE_CHANNELS[0])
        in_ch = STAGE_CHANNELS[0]
        stages = zip(IRESNET_LAYERS[depth], STAGE_CHANNELS, strict=True)
        for index, (blocks, out_ch) in enumerate(stages, start=1):
            units = [IBasicBlock(in_ch, out_ch, 2, bn_eps)]
            units += [IBasicBlock(out_ch, out_ch, 1, bn_eps) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*units))
            in_ch = out_ch
        self.bn2 = nn.BatchNorm2d(in_ch, eps=bn_eps)
        self.fc = nn.Linear(FEATURE_SIZE, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn1(self.conv1(self.input_norm(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, 25088)`` flattened ``bn2`` output."""
        with cuda_autocast(x, self.fp16):
            x = self.layer4(self.layer3(self.layer2(self.layer1(self._stem(x)))))
            x = torch.flatten(self.bn2(x), 1)
        return x.float()

    def trunk_blocks(self) -> list[nn.Module]:
        """The stem, then the residual units in forward order, the last one with ``bn2``."""
        units = [*self.layer1, *self.layer2, *self.layer3, *self.layer4]
        stem = nn.Sequential(self.conv1, self.bn1, self.prelu)
        return [stem, *units[:-1], nn.Sequential(units[-1], self.bn2)]

    def forward_to(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """``BlockTrunk.forward_to`` under the ``fp16`` autocast of ``forward_features``."""
        with cuda_autocast(x, self.fp16):
            return super().forward_to(x, cut).float()

    def forward_from(self, h: torch.Tensor, cut: int) -> torch.Tensor:
        """``BlockTrunk.forward_from`` under the ``fp16`` autocast of ``forward_features``."""
        with cuda_autocast(h, self.fp16):
            return super().forward_from(h, cut).float()

    def forward_low_level(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ``layer1`` activations: ``(N, 64 * 16)``."""
        return pool_low_level(self.layer1(self._stem(x)))

    def forward_head(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Dropout (whenever ``dropout > 0``, whatever the mode), ``fc`` and ``features`` BN.

        Args:
            features: ``(N, 25088)`` output of ``forward_features``.
            dropout: Drop probability (0 = deterministic).

        Returns:
            ``(N, D)`` unnormalised embedding.
        """
        if dropout > 0.0:
            if self.channel_dropout:  # Dropout2d on (N, 512, 7, 7) == dropout1d on (N, 512, 49)
                channels = features.view(len(features), STAGE_CHANNELS[-1], -1)
                features = F.dropout1d(channels, p=dropout, training=True).flatten(1)
            else:
                features = F.dropout(features, p=dropout, training=True)
        return self.features(self.fc(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, D)`` unnormalised embedding."""
        dropout = self.dropout_p if self.training else 0.0
        return self.forward_head(self.forward_features(x), dropout=dropout)


def _depth(name: str) -> int:
    return int(name.rsplit("iresnet", 1)[1])


@register_fr_model("iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200")
def build_iresnet(spec: FRSpec) -> FRModel:
    """arcface_torch iResNet; options ``num_features`` (512) and ``fp16`` (False)."""
    num_features = int(spec.option("num_features", EMBEDDING_SIZE))
    fp16 = bool(spec.option("fp16", False))
    return load_upstream_checkpoint(
        spec,
        lambda: IResNet(_depth(spec.name), spec.dropout, num_features, fp16=fp16),
        what="an insightface arcface_torch backbone .pth",
        embedding_size=num_features,
    )


@register_fr_model("magface_iresnet50", "magface_iresnet100")
def build_magface(spec: FRSpec) -> FRModel:
    """MagFace iResNet: BGR input scaled to [0, 1] (``cv2.imread`` + ``ToTensor``, no mean)."""
    num_features = int(spec.option("num_features", EMBEDDING_SIZE))
    return load_upstream_checkpoint(
        spec,
        lambda: IResNet(
            _depth(spec.name),
            spec.dropout,
            num_features,
            input_norm=InputNorm(0.0, 255.0, bgr=True),
            bn_eps=MAGFACE_BN_EPS,
            channel_dropout=True,
        ),
        what="a MagFace release checkpoint (e.g. magface_epoch_00025.pth)",
        embedding_size=num_features,
        colour="BGR",
        # The MagLinear head is a top-level 'fc.weight' while the backbone's own layer is
        # 'features.module.fc.weight': select the backbone before stripping its prefix.
        keep_prefixes=MAGFACE_PREFIXES,
        strip_prefixes=MAGFACE_PREFIXES,
    )
