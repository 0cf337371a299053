"""One W&B run per stage execution (DESIGN section 7), offline unless told otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

LOGGER_BACKENDS = ("wandb", "csv", "none")  # logger.backend


def wandb_mode(cfg: DictConfig) -> str:
    """The W&B mode: ``WANDB_MODE`` from the environment wins over ``logger.mode``."""
    if cfg.logger.backend != "wandb":
        return "disabled"
    return os.environ.get("WANDB_MODE") or str(cfg.logger.mode)


def wandb_init_kwargs(cfg: DictConfig, stage: str, name: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``wandb.init`` shared by plain stages and Lightning's WandbLogger
    (``name`` defaults to ``<experiment_name>-<stage>``)."""
    root = Path(cfg.paths.root).resolve()
    return {
        "project": cfg.logger.project,
        "entity": cfg.logger.entity,
        "group": cfg.experiment_name,
        "job_type": stage,
        "name": name or f"{cfg.experiment_name}-{stage}",
        "dir": str(root),
        "mode": wandb_mode(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


@contextlib.contextmanager
def stage_run(cfg: DictConfig, stage: str) -> Iterator[Any | None]:
    """Open a W&B run for ``stage`` (or yield None when tracking is off); always finish it.

    ``wandb.finish()`` runs in ``finally`` so a failed job in a multirun does not leave its run
    open and swallow the next job's logs.
    """
    if wandb_mode(cfg) == "disabled":
        yield None
        return
    import wandb

    run = wandb.init(**wandb_init_kwargs(cfg, stage), reinit="finish_previous")
    try:
        yield run
    finally:
        wandb.finish()
        log.info(
            "W&B %s run of %s written under %s/wandb", run.settings.mode, stage, cfg.paths.root
        )


def lightning_logger(
    cfg: DictConfig, stage: str, prefix: str = "", run: Any = None, name: str | None = None
):
    """Lightning logger from ``cfg.logger``: W&B (offline by default), CSV, or none (False).

    Args:
        cfg: The run's config.
        stage: The stage (W&B job type).
        prefix: Metric prefix (the distillation fit logs ``distill-train/loss`` ...).
        run: An open W&B run to log into (both fits of model=distill share one run).
        name: The W&B run's name (default ``<experiment_name>-<stage>``).
    """
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    if cfg.logger.backend == "wandb" and wandb_mode(cfg) != "disabled":
        if run is not None:
            return WandbLogger(experiment=run, prefix=prefix, log_model=False)
        init = wandb_init_kwargs(cfg, stage, name)
        return WandbLogger(**init, prefix=prefix, log_model=False)
    if cfg.logger.backend == "csv":
        return CSVLogger(save_dir=cfg.paths.models, name=f"logs{'-' + prefix if prefix else ''}")
    return False
