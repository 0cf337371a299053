"""``fiqa study [hydra overrides...]``: the reproduction study (``fiqa.study``) as a Hydra app
over ``conf/``, tracked as one W&B group ``study-<study.name>``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from fiqa.cli.errors import reported_errors, verbose_errors
from fiqa.config import config_dir
from fiqa.config.study import study_spec
from fiqa.config.typed import register_templates
from fiqa.config.validate import validate_config
from fiqa.stages.runner import stage_lock
from fiqa.study.run import run_study
from fiqa.tracking import finish_lightning_run, lightning_logger, stage_run


def study(cfg: DictConfig) -> dict[str, float]:
    """Validate ``cfg``, then run (or continue) the study of ``cfg.study``, holding the lock of
    its folder; returns the matrix summary (``<benchmark>/<fr>/<method>/pauc@<limit>``...)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    validate_config(cfg)
    register_templates(cfg)
    with open_dict(cfg):
        cfg.study.name = name = str(cfg.study.name)  # resolved before experiment_name changes
        cfg.experiment_name = f"study-{name}"  # the W&B group of all its runs
    spec = study_spec(cfg)

    @contextlib.contextmanager
    def train_logger(method: str) -> Iterator[Any]:
        method_cfg = cfg.copy()
        with open_dict(method_cfg):  # a CSV logger writes beside the method's model
            method_cfg.paths.models = str(spec.model_dir(method))
        logger = lightning_logger(method_cfg, "train", name=f"{cfg.experiment_name}-{method}")
        try:
            yield logger
        except BaseException as err:
            finish_lightning_run(logger, err)  # the W&B run ends as failed
            raise
        finally:
            finish_lightning_run(logger)

    def tracker(job: str) -> contextlib.AbstractContextManager[Any]:
        return stage_run(cfg, job, name=f"{cfg.experiment_name}-{job}")  # one run for all methods

    with stage_lock("study", [spec.directory]):  # one run per study folder at a time
        matrix = run_study(spec, tracker, train_logger)
    return matrix.summary()


def run_study_app(argv: list[str]) -> None:
    """``fiqa study`` with ``argv`` as its Hydra command line."""

    @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    def _app(cfg: DictConfig) -> None:
        with reported_errors("fiqa study", "study"):
            study(cfg)

    sys.argv = ["fiqa study", *verbose_errors(argv)]
    _app()
