"""The ddpm stage's job from the settings, and whether a configured method needs it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiqa.config.labels import label_settings
from fiqa.diffusion.fit import DDPMJob
from fiqa.label.diffiqa import METHOD as DDPM_METHOD
from fiqa.label.registry import column_dependencies

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def ddpm_job(settings: Settings) -> DDPMJob:
    """The ``ddpm`` group on ``paths.prepared``, written to ``paths.ddpm``, trained models kept
    in ``<paths.cache>/ddpm``."""
    paths = settings.paths
    return DDPMJob(
        settings=settings.ddpm,
        prepared_dir=Path(paths.prepared),
        out_dir=Path(paths.ddpm),
        store=Path(paths.cache) / "ddpm",
    )


def pipeline_ddpm_users(settings: Settings) -> list[str]:
    """The config keys that make a method read the pipeline's DDPM (``paths.ddpm``): DifFIQA
    (or a column computed from it: ``diffiqa+ediffiqa``) as the label target, a computed label
    column or an evaluated method, while ``label.methods.diffiqa.ddpm`` is ``paths.ddpm``.
    Empty: the ddpm stage has nothing to train."""
    if not reads_pipeline_ddpm(settings):
        return []
    uses = {
        "label.target": [settings.label.target],
        "label.compute": settings.label.compute,
        "eval.methods": settings.eval.methods,
    }
    params = label_settings(settings)
    return [key for key, columns in uses.items() if any(reads_ddpm(c, params) for c in columns)]


def reads_ddpm(column: str, params: Mapping[str, Any]) -> bool:
    """Whether a label column (or evaluation method) is computed from DifFIQA's scores."""
    return DDPM_METHOD in column_dependencies(column, params)


def reads_pipeline_ddpm(settings: Settings) -> bool:
    """``label.methods.diffiqa.ddpm`` is the pipeline's DDPM (``paths.ddpm``), not the user's."""
    ddpm = getattr(settings.label.methods, DDPM_METHOD).ddpm
    return Path(ddpm).resolve() == Path(settings.paths.ddpm).resolve()
