"""FR model entries and the extraction engine from the config (label, train, evaluate)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fiqa.config.typed import ConfigError, typed
from fiqa.core.containers import plain_container
from fiqa.extract import ExtractionSettings, Extractor, FREntry


def fr_defaults(cfg: DictConfig) -> FREntry:
    """The ``fr`` group: the selected FR model, and the batch size and flip of the entries of
    ``label.fr_models`` / ``eval.fr_models`` that leave them out."""
    return typed(cfg.fr, FREntry)


def fr_entries(cfg: DictConfig, key: str) -> dict[str, FREntry]:
    """``{name: entry}`` of the FR model list at ``key`` (``label.fr_models`` or
    ``eval.fr_models``): registry names (``cfg.fr`` when it names the selected model) or
    ``{name, weights, options, batch_size?, flip?}`` mappings.

    Raises:
        ConfigError: For a model listed twice.
    """
    defaults = fr_defaults(cfg)
    entries = []
    for item in OmegaConf.select(cfg, key):
        if isinstance(item, Mapping | DictConfig):
            entries.append(FREntry.from_mapping(plain_container(item), defaults))
        elif str(item) == defaults.name:
            entries.append(defaults)
        else:
            entries.append(FREntry.from_mapping({"name": str(item)}, defaults))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{key}: FR models listed twice: {duplicates}")
    return dict(zip(names, entries, strict=True))


def extractor(cfg: DictConfig) -> Extractor:
    """Extraction with ``paths.cache`` and the ``extract`` settings."""
    return Extractor(Path(cfg.paths.cache), typed(cfg.extract, ExtractionSettings))
