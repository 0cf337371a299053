"""The train stage's job from the config, and the model defaults as constructor arguments."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fiqa.config.compose import compose_config
from fiqa.config.extraction import fr_entries
from fiqa.config.typed import typed
from fiqa.core.containers import plain_container
from fiqa.train.fit import DISTILL_ONLY, LabelsAsked, TrainJob
from fiqa.train.settings import TrainSettings


def train_job(cfg: DictConfig) -> TrainJob:
    """The ``model``, ``trainer`` and ``train`` groups (with the validation FR model: the first
    of ``label.fr_models``) as a ``TrainJob``."""
    return TrainJob(
        model=plain_container(cfg.model),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        settings=typed(cfg.train, TrainSettings),
        prepared_dir=Path(cfg.paths.prepared),
        labels_dir=Path(cfg.paths.labels),
        labels=labels_asked(cfg),
        models_dir=Path(cfg.paths.models),
        metrics_dir=Path(cfg.paths.metrics),
        validation_fr=next(iter(fr_entries(cfg, "label.fr_models").values())),
        fmr=float(cfg.eval.fmr),
        val_limit=float(cfg.eval.discard_limits[0]),
    )


def labels_asked(cfg: DictConfig) -> LabelsAsked:
    """The ``label`` group's target, settings and FR models, as the labels must have them."""
    settings = {
        **plain_container(cfg.label.methods),
        "ediffiqa": plain_container(cfg.label.ediffiqa),
    }
    return LabelsAsked(str(cfg.label.target), settings, tuple(fr_entries(cfg, "label.fr_models")))


@cache
def _group_defaults(group: str, option: str) -> dict[str, Any]:
    return plain_container(compose_config([f"{group}={option}"])[group])


def regressor_arguments(**overrides: Any) -> dict[str, Any]:
    """``QualityRegressor`` arguments: ``conf/model/regressor.yaml`` with ``overrides`` (the
    constructor states no defaults of its own; the config is their one source)."""
    values = copy.deepcopy(_group_defaults("model", "regressor"))
    values.pop("name")
    return values | overrides


def distillation_arguments(**overrides: Any) -> dict[str, Any]:
    """``DistillationModule`` arguments but ``num_classes``: ``conf/model/distill.yaml``."""
    values = copy.deepcopy(_group_defaults("model", "distill"))
    return {k: v for k, v in values.items() if k not in DISTILL_ONLY} | overrides


def datamodule_arguments(**overrides: Any) -> dict[str, Any]:
    """``QualityDataModule`` arguments from ``train`` (``IdentityFacesDataModule`` takes the
    same but ``target_scaling``)."""
    train = compose_config()["train"]
    keys = ("batch_size", "num_workers", "seed", "augment", "target_scaling")
    return {k: plain_container(train[k]) for k in keys} | overrides
