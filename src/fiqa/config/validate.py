"""``validate_config``: every schema'd group of a composed config checked at stage start."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fiqa.config.schemas import SCHEMAS
from fiqa.config.typed import ConfigError
from fiqa.data.verification import BENCHMARK_FORMATS
from fiqa.label import METHODS
from fiqa.label.correction import CORRECTIONS
from fiqa.tracking import LOGGER_BACKENDS

# Closed choices, derived from the registries they name.
CHOICES: dict[str, tuple[Any, ...]] = {
    "logger.backend": LOGGER_BACKENDS,
    "eval.benchmark.format": ("prepared", *BENCHMARK_FORMATS),
    "label.target": tuple(METHODS),
    "label.correction": CORRECTIONS,
}
LIST_CHOICES: dict[str, tuple[Any, ...]] = {"label.compute": tuple(METHODS)}


def validate_config(cfg: DictConfig) -> None:
    """Check every schema'd group of ``cfg`` (types, missing keys, closed choices).

    Raises:
        ConfigError: Naming the first offending key.
    """
    try:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as err:
        raise ConfigError(f"config key {err.full_key}: {str(err.msg).splitlines()[0]}") from None
    for key, schema in SCHEMAS.items():
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
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"config keys missing: {', '.join(f'{key}.{m}' for m in missing)}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; choose one of {', '.join(map(str, allowed))}")
    for key, allowed in LIST_CHOICES.items():
        unknown = [v for v in OmegaConf.select(cfg, key) if v not in allowed]
        if unknown:
            raise ConfigError(f"{key}: unknown {unknown}; choose from {', '.join(allowed)}")
