"""Pipeline stages. Each module exposes ``run(cfg) -> dict[str, float]``."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable

from omegaconf import DictConfig

from fiqa.config import validate_config

STAGES = ("prepare", "label", "train", "evaluate")

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot produce its outputs; the message says why and what to do."""


def stage_function(stage: str) -> Callable[[DictConfig], dict[str, float]]:
    """The ``run`` function of ``stage`` (imported lazily: stages pull in heavy libraries)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return importlib.import_module(f"fiqa.stages.{stage}").run


def run_stage(stage: str, cfg: DictConfig) -> dict[str, float]:
    """Run ``stage`` on a composed config, with the process-wide settings every stage needs."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    validate_config(cfg)
    result = stage_function(stage)(cfg)
    log.info("%s finished: %s", stage, {k: round(v, 4) for k, v in result.items()})
    return result
