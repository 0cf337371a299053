"""The label stage's job from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fiqa.config.extraction import label_frs
from fiqa.label import METHODS
from fiqa.label.table import LabelJob

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def label_settings(settings: Settings) -> dict[str, Any]:
    """Every label method's settings (``label.methods``), by name."""
    return {name: getattr(settings.label.methods, name) for name in METHODS}


def label_job(settings: Settings) -> LabelJob:
    """The ``label`` group as a ``LabelJob``."""
    label = settings.label
    return LabelJob(
        target=label.target,
        compute=tuple(label.compute),
        params=label_settings(settings),
        fr_models=label_frs(settings),
        fr_defaults=settings.fr,
        seed=label.seed,
        ediffiqa=label.ediffiqa,
    )
