"""The quality regressor's backbone: an FR network of the zoo, and which of it trains.

``model.freeze`` keeps nothing, the trunk (everything but the embedding layers of
``forward_head``) or the whole backbone fixed. CR-FIQA (Boutros et al., CVPR 2023) and eDifFIQA
(Babnik et al., IEEE T-BIOM 2024) fine-tune the whole backbone; on a CPU only its top is
affordable: with ``freeze=trunk`` and ``model.train_blocks`` = k, a backbone whose network
implements ``fiqa.fr.layers.BlockTrunk`` is cut before the last k blocks of its trunk. Blocks
``[0, cut)`` stay frozen (and in eval mode), blocks ``[cut, end)`` train with the embedding
layers and the head; with ``train.cache_frozen`` the activation at the cut is cached once per
face and its mirror (``fiqa.train.frozen.TrunkActivation``) and training runs the blocks above
it only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fiqa.fr import FRModelInfo, load_fr_model
from fiqa.fr.layers import BlockTrunk

# What stays fixed: nothing, the trunk (everything but the embedding layers of forward_head), or
# the whole backbone.
FREEZE = ("none", "trunk", "backbone")


def build_backbone(
    name: str,
    pretrained: bool = True,
    weights: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, FRModelInfo]:
    """A PyTorch FR network of the zoo as a trainable backbone (quality model, student).

    Args:
        name: FR registry name.
        pretrained: Load the FR weights (False: random initialisation).
        weights: Weights file; None = the model's bundled weights (sface only).
        options: Architecture options (e.g. MobileFaceNet ``blocks``).

    Returns:
        The network (float NCHW RGB 0..255 -> (N, D) raw embedding) and the model's info
        (embedding size, input size, template).
    """
    config = {"name": name, "weights": weights, "options": dict(options or {})}
    model = load_fr_model(config, pretrained=pretrained)
    model.require_white_box(f"a trainable backbone ({name})")
    return model.net, model.info


def head_parameter_names(net: nn.Module, input_size: tuple[int, int]) -> set[str]:
    """Names of the parameters ``net.forward_head`` uses (its embedding layers), found by which
    parameters receive a gradient from the head on a dummy input: no per-architecture list."""
    was_training = net.training
    named = list(net.named_parameters())
    flags = [p.requires_grad for _, p in named]
    net.eval()
    try:
        with torch.no_grad():
            features = net.forward_features(torch.zeros(2, 3, *input_size))
        features.requires_grad_(True)
        for _, p in named:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = net.forward_head(features).sum()
            grads = torch.autograd.grad(out, [p for _, p in named], allow_unused=True)
    finally:
        for (_, p), flag in zip(named, flags, strict=True):
            p.requires_grad_(flag)
        net.train(was_training)
    return {n for (n, _), g in zip(named, grads, strict=True) if g is not None}


def trunk_cut(net: nn.Module, backbone: str, train_blocks: int) -> int | None:
    """The index of the first trunk block that trains (``len(blocks) - train_blocks``).

    Args:
        net: The backbone's network.
        backbone: Its FR registry name (for the error).
        train_blocks: ``model.train_blocks``.

    Returns:
        The cut, or None for ``train_blocks`` = 0 (the whole trunk frozen).

    Raises:
        ValueError: ``train_blocks`` > 0 on a network without trunk blocks, or outside
            ``[0, number of blocks]``.
    """
    if train_blocks == 0:
        return None
    if not isinstance(net, BlockTrunk):
        raise ValueError(
            f"model.train_blocks={train_blocks}: backbone {backbone!r} "
            f"({type(net).__name__}) does not split its trunk into blocks "
            "(fiqa.fr.layers.BlockTrunk); use model.train_blocks=0, or a backbone whose "
            "network does (docs/training.md lists them)"
        )
    blocks = len(net.trunk_blocks())
    if not 0 < train_blocks <= blocks:
        raise ValueError(
            f"model.train_blocks={train_blocks}: backbone {backbone!r} has {blocks} trunk "
            f"blocks; choose 0 .. {blocks}"
        )
    return blocks - train_blocks


def top_block_parameter_names(net: BlockTrunk, cut: int) -> set[str]:
    """Names of the parameters of the trunk blocks ``[cut, end)``."""
    top = {id(p) for block in net.trunk_blocks()[cut:] for p in block.parameters()}
    return {name for name, p in net.named_parameters() if id(p) in top}


def activation_shape(
    net: BlockTrunk, cut: int, input_size: tuple[int, int]
) -> tuple[int, int, int]:
    """``(C, H, W)`` of the activation at ``cut`` (a pass of a blank face in eval mode, so no
    BatchNorm statistics move)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            channels, height, width = net.forward_to(torch.zeros(1, 3, *input_size), cut).shape[1:]
    finally:
        net.train(was_training)
    return int(channels), int(height), int(width)
