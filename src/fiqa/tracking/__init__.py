"""Experiment tracking (W&B)."""

from fiqa.tracking.wandb_run import stage_run, wandb_init_kwargs, wandb_mode

__all__ = ["stage_run", "wandb_init_kwargs", "wandb_mode"]
