"""FR model entries and the extraction engine from the settings (label, train, evaluate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiqa.config.typed import ConfigError
from fiqa.extract import Extractor, FREntry

if TYPE_CHECKING:  # the stages import this module: only the runner builds Settings
    from fiqa.config.schemas import Settings


def fr_entries(items: Sequence[Any], defaults: FREntry, key: str) -> dict[str, FREntry]:
    """``{name: entry}`` of an FR model list (``label.fr_models`` or ``eval.fr_models``, named
    ``key`` in errors): registry names (``defaults``, the ``fr`` group, when it names the
    selected model) or ``{name, weights, options, batch_size?, flip?}`` mappings.

    Raises:
        ConfigError: For a model listed twice.
    """
    entries = []
    for item in items:
        if isinstance(item, Mapping):
            entries.append(FREntry.from_mapping(item, defaults))
        elif str(item) == defaults.name:
            entries.append(defaults)
        else:
            entries.append(FREntry.from_mapping({"name": str(item)}, defaults))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{key}: FR models listed twice: {duplicates}")
    return dict(zip(names, entries, strict=True))


def label_frs(settings: Settings) -> dict[str, FREntry]:
    """``label.fr_models`` as entries."""
    return fr_entries(settings.label.fr_models, settings.fr, "label.fr_models")


def extractor(settings: Settings) -> Extractor:
    """Extraction with ``paths.cache`` and the ``extract`` settings."""
    return Extractor(Path(settings.paths.cache), settings.extract)
