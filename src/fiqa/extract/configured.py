"""FR model entries of a config (``label.fr_models``, ``eval.fr_models``) and extraction with the
run's cache, batch and Trainer settings: the one place stages turn config into ``extract``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fiqa.config import ConfigError, plain_container
from fiqa.extract.cache import FaceSource, Request
from fiqa.extract.predict import extract
from fiqa.fr import FRModel, load_fr_model


def fr_config(cfg: DictConfig, entry: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The FR model config of a ``label.fr_models`` / ``eval.fr_models`` entry: ``cfg.fr`` when it
    names the selected model, ``{"name": entry}`` for another name, a mapping as given."""
    if isinstance(entry, Mapping):
        return entry
    return cfg.fr if cfg.fr.name == entry else {"name": str(entry)}


def fr_entries(
    cfg: DictConfig, entries: Any, key: str = "fr_models"
) -> dict[str, Mapping[str, Any]]:
    """``{name: config}`` of a list of FR model entries; names must be unique.

    Args:
        cfg: The run's config (``cfg.fr`` completes entries that name the selected model).
        entries: Registry names or ``{name, weights, options}`` mappings.
        key: Config key of ``entries`` for error messages.
    """
    configs = [fr_config(cfg, entry) for entry in entries]
    names = [str(c["name"]) for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{key}: FR models listed twice: {duplicates}")
    return dict(zip(names, configs, strict=True))


class FRModels:
    """The FR models of one stage run, each loaded once (keyed by its whole config: name,
    weights, options), however many benchmarks or methods use it."""

    def __init__(self) -> None:
        self._loaded: dict[str, FRModel] = {}

    def get(self, fr: Mapping[str, Any]) -> FRModel:
        """The loaded model of an FR config mapping (``fr_config`` / ``fr_entries`` values)."""
        key = json.dumps(plain_container(fr), sort_keys=True, default=str)
        if key not in self._loaded:
            self._loaded[key] = load_fr_model(fr)
        return self._loaded[key]


def extract_outputs(
    cfg: DictConfig, model: FRModel, fr: Mapping[str, Any], source: FaceSource, request: Request
) -> dict[str, np.ndarray]:
    """``fiqa.extract.extract`` with ``paths.cache``, the entry's (or ``fr``'s) flip and batch
    size, and the ``extract`` group's Trainer settings."""
    x = cfg.extract
    return extract(
        model,
        source,
        request,
        cache_root=cfg.paths.cache,
        flip=bool(fr.get("flip", cfg.fr.flip)),
        batch_size=int(fr.get("batch_size", cfg.fr.batch_size)),
        num_workers=int(x.num_workers),
        part_rows=int(x.part_rows),
        trainer=OmegaConf.to_container(x, resolve=True),
    )
