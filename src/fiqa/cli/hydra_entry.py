"""Hydra entry points: every pipeline stage is a ``@hydra.main`` app over ``conf/``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from fiqa.config import config_dir
from fiqa.stages.runner import run_stage


def redirect_multirun_outputs(cfg: DictConfig) -> None:
    """In a Hydra multirun, give each job its own models/metrics directories.

    Sweep jobs must not overwrite each other's checkpoints at the fixed DVC paths; each job writes
    into its own Hydra job directory instead (inputs such as prepared data stay shared).
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    with open_dict(cfg):
        cfg.paths.models = str(job_dir / "models")
        cfg.paths.metrics = str(job_dir / "metrics")


def run_hydra_stage(stage: str, argv: list[str]) -> None:
    """Run ``stage`` as a Hydra app with ``argv`` as its command line (overrides, -m, --cfg...)."""

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _app(cfg: DictConfig) -> float | None:
        redirect_multirun_outputs(cfg)
        result = run_stage(stage, cfg)
        # Returned value is what sweepers (e.g. Optuna) optimise.
        return result.get("val/spearman")

    sys.argv = [f"fiqa {stage}", *argv]
    _app()
