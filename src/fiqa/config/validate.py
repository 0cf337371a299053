"""``load_settings``: a composed config checked and turned into its typed ``Settings``, once.

It runs before any model or image is loaded (``fiqa.stages.runner.start_up``: every stage and
``fiqa study``): types and missing keys (the schemas), closed choices, empty folder keys
(``data.root=``), value ranges (``fiqa.config.ranges``) and the settings dataclasses' own checks
(their ``__post_init__``), each failure a ``ConfigError`` naming the key. What it builds is what
the stage receives.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fiqa.config.ranges import check_ranges
from fiqa.config.schemas import SCHEMAS, Settings
from fiqa.config.typed import ConfigError
from fiqa.data.verification import BENCHMARK_FORMATS
from fiqa.label import METHODS
from fiqa.label.correction import corrected_column
from fiqa.tracking import LOGGER_BACKENDS

# Closed choices, derived from the registries they name.
LABEL_COLUMNS = (*METHODS, *map(corrected_column, METHODS))  # a method or its corrected labels
CHOICES: dict[str, tuple[Any, ...]] = {
    "logger.backend": LOGGER_BACKENDS,
    "eval.benchmark.format": ("prepared", "ijb", *BENCHMARK_FORMATS),
    "label.target": LABEL_COLUMNS,
}
LIST_CHOICES: dict[str, tuple[Any, ...]] = {"label.compute": LABEL_COLUMNS}
# Folders an empty value would silently turn into another one: `data.root=` into the current
# directory (the repository, scanned as a dataset), `paths.root=` into `/` (outputs at /models).
NON_EMPTY: dict[str, str] = {
    "data.root": "the dataset's folder, e.g. data.root=/datasets/my_faces",
    "paths.root": "the folder the stages write under (default `.`)",
}


def load_settings(cfg: DictConfig) -> Settings:
    """Check every schema'd group of ``cfg`` (types, missing keys, closed choices, ranges) and
    build the typed ``Settings``.

    Raises:
        ConfigError: Naming the first offending key.
    """
    try:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as err:
        raise ConfigError(f"config key {err.full_key}: {str(err.msg).splitlines()[0]}") from None
    groups = {key: _typed_group(cfg, key, schema) for key, schema in SCHEMAS.items()}
    _check_choices(cfg)
    _check_non_empty(cfg)
    check_ranges(cfg)
    typed = {key: _settings(group) for key, group in groups.items()}
    return Settings(
        experiment_name=str(cfg.experiment_name),
        trainer=OmegaConf.to_container(cfg.trainer),
        resolved=OmegaConf.to_container(cfg),
        **typed,
    )


def _typed_group(cfg: DictConfig, key: str, schema: type | dict[str, type]) -> DictConfig:
    """Group ``key`` of ``cfg`` merged onto its schema (types checked, nothing missing)."""
    if key not in cfg:
        raise ConfigError(f"config group {key!r} is missing")
    if isinstance(schema, dict):  # one schema per option, chosen by the group's name
        name = cfg[key].get("name")
        if name not in schema:
            raise ConfigError(f"{key}.name={name!r}; choose one of {', '.join(schema)}")
        schema = schema[name]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg[key])
    except OmegaConfBaseException as err:
        reason = str(err.msg).splitlines()[0]
        raise ConfigError(f"invalid config key {key}.{err.full_key}: {reason}") from None
    # A ??? in the config does not replace a schema default when merged (data=table's
    # data.table): look for missing values in the group itself too.
    missing = {f"{key}.{m}" for m in OmegaConf.missing_keys(merged)}
    missing |= OmegaConf.missing_keys(cfg[key])
    if missing:
        raise ConfigError(f"config keys missing: {', '.join(sorted(missing))}")
    return merged


def _check_choices(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; choose one of {', '.join(map(str, allowed))}")
    for key, allowed in LIST_CHOICES.items():
        unknown = [v for v in OmegaConf.select(cfg, key) if v not in allowed]
        if unknown:
            raise ConfigError(f"{key}: unknown {unknown}; choose from {', '.join(allowed)}")


def _check_non_empty(cfg: DictConfig) -> None:
    for key, what in NON_EMPTY.items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{key} is empty: set it to {what}")


def _settings(group: DictConfig) -> Any:
    """A group's settings dataclass: its ``__post_init__`` checks (``prepare.detector``,
    ``label.methods.faceqan.eps``...) run now, before any work."""
    try:
        return OmegaConf.to_object(group)
    except ValueError as err:  # the checks name their keys
        raise ConfigError(str(err)) from None
