"""The config's defaults as constructor arguments, for the Python API and tests: the
constructors state no defaults of their own, ``conf/`` is their one source, turned into objects
the one way every run's config is (``load_settings``).

    QualityRegressor(**regressor_arguments(backbone="iresnet50", backbone_weights=path))
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from typing import TYPE_CHECKING, Any

from fiqa.config.compose import compose_config
from fiqa.config.validate import load_settings
from fiqa.train.fit import DISTILL_ONLY

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


@cache
def default_settings(*overrides: str) -> Settings:
    """The settings of ``conf/`` with ``overrides`` (composed and checked once per process)."""
    return load_settings(compose_config(list(overrides)))


def regressor_arguments(**overrides: Any) -> dict[str, Any]:
    """``QualityRegressor`` arguments: ``model=regressor`` with ``overrides``."""
    values = asdict(default_settings("model=regressor").model)
    values.pop("name")
    return values | overrides


def distillation_arguments(**overrides: Any) -> dict[str, Any]:
    """``DistillationModule`` arguments but ``num_classes``: ``model=distill``."""
    values = asdict(default_settings("model=distill").model)
    return {k: v for k, v in values.items() if k not in DISTILL_ONLY} | overrides


def datamodule_arguments(**overrides: Any) -> dict[str, Any]:
    """``QualityDataModule`` arguments from ``train`` (``IdentityFacesDataModule`` takes the
    same but ``target_scaling``)."""
    train = asdict(default_settings().train)
    keys = ("batch_size", "num_workers", "seed", "augment", "target_scaling")
    return {k: train[k] for k in keys} | overrides
