"""Optimiser parameter groups and learning-rate schedules shared by every LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

SCHEDULERS = ("cosine", "step", "none")
STEP_MILESTONES = (0.6, 0.85)  # "step" without an epoch period: x gamma at these run fractions


def param_groups(params: list[nn.Parameter], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices/kernels only, none on biases, norms, PReLU."""
    decay = [p for p in params if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in params if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def with_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: str,
    total_steps: Callable[[], float],
    step_epochs: int | None = None,
    gamma: float = 0.1,
) -> Any:
    """``configure_optimizers``' return value: ``optimizer`` with a learning-rate schedule.

    Args:
        optimizer: The optimiser.
        scheduler: ``cosine`` (per step over the run), ``step`` (x ``gamma`` every
            ``step_epochs`` epochs, or at 60% and 85% of the steps when ``step_epochs`` is
            None) or ``none``.
        total_steps: The run's optimiser steps (``trainer.estimated_stepping_batches``), asked
            only by the schedules that need it.
        step_epochs: Epochs between ``step`` decays (None: the two milestones).
        gamma: ``step`` decay factor.

    Raises:
        ValueError: An unknown schedule, or a per-step schedule without a finite run length.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown model.scheduler {scheduler!r}; choose one of {list(SCHEDULERS)}")
    if scheduler == "none":
        return optimizer
    if scheduler == "step" and step_epochs is not None:
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_epochs, gamma)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "epoch"},
        }
    total = total_steps()
    if not 0 < total < float("inf"):
        raise ValueError(
            f"model.scheduler={scheduler} needs a finite run length: set trainer max_epochs or "
            "max_steps, or use model.scheduler=none"
        )
    if scheduler == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total))
    else:
        milestones = [max(1, int(f * total)) for f in STEP_MILESTONES]
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
