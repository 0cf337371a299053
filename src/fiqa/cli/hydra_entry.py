"""Hydra entry points: every pipeline stage is a ``@hydra.main`` app over ``conf/``; a user
error ends it in one line (``fiqa.cli.errors``)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from fiqa.cli.adhoc import place_adhoc_run
from fiqa.cli.errors import reported_errors, verbose_errors
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


def redirect_adhoc_outputs(stage: str, cfg: DictConfig) -> None:
    """A single run composed from ``conf/`` (not ``dvc repro``'s ``--config-name params``) with
    overrides that change what it computes writes to ``runs/<overrides>/`` (``fiqa.cli.adhoc``)."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN or hydra_cfg.job.config_name != "config":
        return
    place_adhoc_run(stage, cfg, list(hydra_cfg.overrides.task))


def hydra_stage_job(stage: str, cfg: DictConfig, prog: str) -> float | None:
    """The body of a stage's Hydra app: run ``stage`` on ``cfg``, reporting a user error as
    ``<prog>: <message>``; returns ``val/spearman``, what sweepers (e.g. Optuna) optimise."""
    with reported_errors(prog, stage):
        redirect_multirun_outputs(cfg)
        redirect_adhoc_outputs(stage, cfg)
        result = run_stage(stage, cfg)
    return result.get("val/spearman")


def stage_app(stage: str, argv: list[str]) -> None:
    """Run ``stage`` as a Hydra app with ``argv`` as its command line (overrides, -m, --cfg...,
    and ``-v``/``--verbose``: full tracebacks)."""

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _app(cfg: DictConfig) -> float | None:
        return hydra_stage_job(stage, cfg, prog=f"fiqa {stage}")

    sys.argv = [f"fiqa {stage}", *verbose_errors(argv)]
    _app()
