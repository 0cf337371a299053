"""Experiment tracking: one W&B run per stage execution (offline unless told otherwise)."""

from fiqa.tracking.wandb_run import (
    LOGGER_BACKENDS,
    TrackedRun,
    run_name,
    tracked_run,
    wandb_init_kwargs,
    wandb_mode,
)

__all__ = [
    "LOGGER_BACKENDS",
    "TrackedRun",
    "run_name",
    "tracked_run",
    "wandb_init_kwargs",
    "wandb_mode",
]
