"""Plain Python values from config containers, and what differs between two of them."""

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


def differences(old: Mapping[str, Any], new: Mapping[str, Any], ignore: tuple[str, ...] = ()
                ) -> list[str]:  # fmt: skip
    """``key (old -> new)`` for every dotted key whose value differs, but ``ignore``."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in ignore)
    return [f"{k} ({a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r})" for k in keys]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat |= _flatten(item, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    return flat
