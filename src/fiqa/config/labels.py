"""The label stage's job from the config."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from fiqa.config.extraction import fr_defaults, fr_entries
from fiqa.config.typed import typed
from fiqa.label import METHODS
from fiqa.label.correction import EdiffiqaSettings
from fiqa.label.table import LabelJob


def label_settings(cfg: DictConfig) -> dict[str, Any]:
    """Every label method's settings (``label.methods``), typed, by name."""
    return {name: typed(cfg.label.methods[name], m.params) for name, m in METHODS.items()}


def label_job(cfg: DictConfig) -> LabelJob:
    """The ``label`` group as a ``LabelJob``."""
    lab = cfg.label
    return LabelJob(
        target=str(lab.target),
        compute=tuple(str(m) for m in lab.compute),
        params=label_settings(cfg),
        fr_models=fr_entries(cfg, "label.fr_models"),
        fr_defaults=fr_defaults(cfg),
        seed=int(lab.seed),
        ediffiqa=typed(lab.ediffiqa, EdiffiqaSettings),
    )
