"""The train stage's job from the settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fiqa.config.extraction import label_frs
from fiqa.train.fit import LabelsAsked, TrainJob

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def train_job(settings: Settings) -> TrainJob:
    """The ``model``, ``trainer`` and ``train`` groups (with the validation FR model: the first
    of ``label.fr_models``) as a ``TrainJob``."""
    paths, frs = settings.paths, label_frs(settings)
    return TrainJob(
        model=settings.model,
        trainer=dict(settings.trainer),
        settings=settings.train,
        prepared_dir=Path(paths.prepared),
        labels_dir=Path(paths.labels),
        labels=LabelsAsked(
            target=settings.label.target,
            settings={
                **asdict(settings.label.methods),
                "ediffiqa": asdict(settings.label.ediffiqa),
            },
            fr_models=tuple(frs),
        ),
        models_dir=Path(paths.models),
        metrics_dir=Path(paths.metrics),
        validation_fr=next(iter(frs.values())),
        fmr=settings.eval.fmr,
        val_limit=settings.eval.discard_limits[0],
        val_pairs=settings.eval.pairs,
    )
