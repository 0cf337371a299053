"""Experiment tracking: one W&B run per stage execution (offline unless told otherwise)."""

from fiqa.tracking.wandb_run import (
    LOGGER_BACKENDS,
    finish_lightning_run,
    lightning_logger,
    run_name,
    stage_run,
    wandb_init_kwargs,
    wandb_mode,
)

__all__ = [
    "LOGGER_BACKENDS",
    "finish_lightning_run",
    "lightning_logger",
    "run_name",
    "stage_run",
    "wandb_init_kwargs",
    "wandb_mode",
]
