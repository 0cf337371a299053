"""Running a stage: validate the composed config, then call the stage's ``run``."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable

from omegaconf import DictConfig

from fiqa.config.validate import validate_config
from fiqa.stages import STAGES

log = logging.getLogger(__name__)


def stage_function(stage: str) -> Callable[[DictConfig], dict[str, float]]:
    """The ``run`` function of ``stage`` (imported lazily: stages pull in heavy libraries)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return importlib.import_module(f"fiqa.stages.{stage}").run


def run_stage(stage: str, cfg: DictConfig) -> dict[str, float]:
    """Validate a composed config, then run ``stage`` on it."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    validate_config(cfg)  # reads every key: done before the stage's own reads
    return execute_stage(stage, cfg)


def execute_stage(stage: str, cfg: DictConfig) -> dict[str, float]:
    """Run ``stage`` on a validated config: what it reads here are the keys its outputs depend
    on (``STAGES[stage].params``) and ``fiqa.stages.RUNTIME_KEYS``."""
    result = stage_function(stage)(cfg)
    log.info("%s finished: %s", stage, {k: round(v, 4) for k, v in result.items()})
    return result
