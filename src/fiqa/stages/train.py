"""train: Lightning training of the quality regressor (after distillation with model=distill);
best checkpoint + ONNX, model-cost table, metrics (``fiqa.train.fit``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fiqa.config.extraction import extractor
from fiqa.config.training import train_job
from fiqa.config.typed import register_templates
from fiqa.core.lineage import LineageError
from fiqa.stages import StageError
from fiqa.tracking import tracked_run
from fiqa.train.fit import MONITOR, TrainingError, fit_quality_model
from fiqa.train.settings import DistillSettings
from fiqa.train.staging import ResumeError

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def run(settings: Settings) -> dict[str, float]:
    """Fit the quality regressor (after distillation for model=distill); write
    models/ (quality.ckpt, quality.onnx, cost.md, lineage.json) and metrics/train.json."""
    register_templates(settings.prepare.templates)
    job = train_job(settings)
    with tracked_run(settings, "train") as tracking:
        logger = tracking.lightning_logger()
        # both fits of model=distill log into the one run
        distill = isinstance(job.model, DistillSettings)
        distill_logger = tracking.lightning_logger("distill") if distill else False
        try:
            summary = fit_quality_model(job, extractor(settings), logger, distill_logger)
        except (TrainingError, ResumeError, LineageError) as err:
            raise StageError(f"train: {err}") from err
    best = summary.get("train/best_val_spearman")
    return summary if best is None else summary | {MONITOR: best}
