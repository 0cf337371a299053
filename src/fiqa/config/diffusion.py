"""The ddpm stage's job from the config, and whether a configured method needs it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fiqa.config.typed import typed
from fiqa.diffusion.fit import DDPMJob
from fiqa.diffusion.settings import DDPMSettings
from fiqa.label.diffiqa import METHOD as DDPM_METHOD


def ddpm_job(cfg: DictConfig) -> DDPMJob:
    """The ``ddpm`` group on ``paths.prepared``, written to ``paths.ddpm``, trained models kept
    in ``<paths.cache>/ddpm``."""
    return DDPMJob(
        settings=ddpm_settings(cfg),
        prepared_dir=Path(cfg.paths.prepared),
        out_dir=Path(cfg.paths.ddpm),
        store=Path(cfg.paths.cache) / "ddpm",
    )


def pipeline_ddpm_users(cfg: DictConfig) -> list[str]:
    """The config keys that make a method read the pipeline's DDPM (``paths.ddpm``): DifFIQA
    as the label target, a computed label column or an evaluated method, while
    ``label.methods.diffiqa.ddpm`` is ``paths.ddpm``. Empty: the ddpm stage has nothing to train."""
    if not reads_pipeline_ddpm(cfg):
        return []
    uses = {
        "label.target": [cfg.label.target],
        "label.compute": list(cfg.label.compute),
        "eval.methods": list(cfg.eval.methods),
    }
    return [key for key, methods in uses.items() if DDPM_METHOD in map(str, methods)]


def reads_pipeline_ddpm(cfg: DictConfig) -> bool:
    """``label.methods.diffiqa.ddpm`` is the pipeline's DDPM (``paths.ddpm``), not the user's."""
    return Path(cfg.label.methods[DDPM_METHOD].ddpm).resolve() == Path(cfg.paths.ddpm).resolve()


def ddpm_settings(cfg: DictConfig) -> DDPMSettings:
    """The ``ddpm`` group, typed."""
    return typed(cfg.ddpm, DDPMSettings)
