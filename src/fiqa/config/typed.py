"""Config values as the library's typed objects (entry points and tools outside the stages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from fiqa.core.align import register_template

T = TypeVar("T")


class ConfigError(ValueError):
    """The composed config does not match its schema; the message names the key."""


def typed(node: Any, schema: type[T]) -> T:
    """A config node as an instance of its schema dataclass (validated on the way); its
    interpolations are resolved in the node's own config first (``${paths.ddpm}``)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def register_templates(templates: Mapping[str, Any]) -> None:
    """Make ``prepare.templates`` (user-defined alignment templates) known to this process."""
    for name, spec in (templates or {}).items():
        register_template(name, spec["size"], spec["points"])
