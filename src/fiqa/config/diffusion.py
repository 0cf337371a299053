"""The ddpm stage's job from the settings, and whether a configured method needs it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fiqa.diffusion.fit import DDPMJob
from fiqa.label.diffiqa import METHOD as DDPM_METHOD

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
    as the label target, a computed label column or an evaluated method, while
    ``label.methods.diffiqa.ddpm`` is ``paths.ddpm``. Empty: the ddpm stage has nothing to
    train."""
    if not reads_pipeline_ddpm(settings):
        return []
    uses = {
        "label.target": [settings.label.target],
        "label.compute": settings.label.compute,
        "eval.methods": settings.eval.methods,
    }
    return [key for key, methods in uses.items() if DDPM_METHOD in methods]


def reads_pipeline_ddpm(settings: Settings) -> bool:
    """``label.methods.diffiqa.ddpm`` is the pipeline's DDPM (``paths.ddpm``), not the user's."""
    ddpm = getattr(settings.label.methods, DDPM_METHOD).ddpm
    return Path(ddpm).resolve() == Path(settings.paths.ddpm).resolve()
