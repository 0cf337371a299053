"""Plain Python values from config containers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig


def plain_container(value: Any) -> Any:
    """Hydra/OmegaConf containers -> plain dicts and lists, so hyper-parameters saved in a
    checkpoint load without omegaconf."""
    if isinstance(value, Mapping | DictConfig):
        return {str(k): plain_container(v) for k, v in value.items()}
    if isinstance(value, list | tuple | ListConfig):
        return [plain_container(v) for v in value]
    return value
