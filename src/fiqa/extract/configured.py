"""FR model entries of a config (``label.fr_models``, ``eval.fr_models``) and extraction with the
run's cache, batch and Trainer settings: the one place stages turn config into ``extract``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fiqa.config import ConfigError
from fiqa.extract.cache import FaceSource, Request
from fiqa.extract.predict import extract
from fiqa.fr import FRModel


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
