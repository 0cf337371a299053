"""Model cost: parameters and FLOPs for one face, the layout of Huo et al.'s Table 1.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on a single image in eval
mode. Convention: one multiply-add = 2 FLOPs (``flops = 2 * macs``); only matrix products and
convolutions count (bias, BatchNorm, activations, residual adds and the input scaling do not,
about 1% of a CNN). Many papers' "FLOPs" are multiply-adds: Huo et al.'s Table 1 (2022) is, e.g. its
ResNet-101-sized FaceQNet row (44.5 M params) reads 2.02 G, ResNet-101's ~1.95 G MACs at
112x112 (7.8 G at 224x224), and its ResNet-34 student (21.8 M) reads 0.97 G (~0.9 G MACs).
So tables here carry both columns; compare a paper's numbers with ``MACs (G)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def model_cost(
    net: nn.Module, input_size: tuple[int, int] = (112, 112), channels: int = 3
) -> dict[str, int]:
    """Parameters and FLOPs of ``net`` on one ``(1, channels, *input_size)`` zero image.

    The module's train/eval modes are restored afterwards.

    Returns:
        ``{"params": all parameters (trainable or not), "flops": 2 * multiply-adds,
        "macs": multiply-adds}``.
    """
    params = sum(p.numel() for p in net.parameters())
    first = next(iter(net.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    modes = {module: module.training for module in net.modules()}
    net.eval()  # BatchNorm1d refuses a single sample in train mode
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(1, channels, *input_size, device=device))
    finally:
        for module, training in modes.items():
            module.training = training
    flops = int(counter.get_total_flops())
    return {"params": int(params), "flops": flops, "macs": flops // 2}


def cost_table(
    models: Mapping[str, tuple[nn.Module, tuple[int, int]]],
) -> list[dict[str, float | int | str]]:
    """One row per model: ``model``, ``params_m``, ``flops_g``, ``macs_g`` and the raw counts.

    Args:
        models: Display name -> (network, its face ``(height, width)``), e.g. teacher, student
            and quality model.
    """
    rows: list[dict[str, float | int | str]] = []
    for name, (net, input_size) in models.items():
        cost = model_cost(net, input_size)
        rows.append(
            {
                "model": name,
                "params_m": cost["params"] / 1e6,
                "flops_g": cost["flops"] / 1e9,
                "macs_g": cost["macs"] / 1e9,
                **cost,
            }
        )
    return rows


def cost_markdown(rows: list[dict[str, float | int | str]]) -> str:
    """Markdown table of ``cost_table`` rows: Model | Params (M) | FLOPs (G) | MACs (G)."""
    lines = ["| Model | Params (M) | FLOPs (G) | MACs (G) |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['model']} | {r['params_m']:.2f} | {r['flops_g']:.3f} | {r['macs_g']:.3f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
