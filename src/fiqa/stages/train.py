"""train: Lightning training of the quality regressor (after distillation with model=distill);
best checkpoint + ONNX, model-cost table, metrics (``fiqa.train.fit``)."""

from __future__ import annotations

from omegaconf import DictConfig

from fiqa.config.extraction import extractor
from fiqa.config.training import train_job
from fiqa.config.typed import register_templates
from fiqa.core.lineage import LineageError
from fiqa.stages import StageError
from fiqa.tracking import tracked_run
from fiqa.train.fit import MONITOR, TrainingError, fit_quality_model
from fiqa.train.staging import ResumeError


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit the quality regressor (after distillation for model=distill); write
    models/ (quality.ckpt, quality.onnx, cost.md, lineage.json) and metrics/train.json."""
    register_templates(cfg)
    job = train_job(cfg)
    with tracked_run(cfg, "train") as tracking:
        logger = tracking.lightning_logger()
        # both fits of model=distill log into the one run
        distill_logger = (
            tracking.lightning_logger("distill") if job.model["name"] == "distill" else False
        )
        try:
            summary = fit_quality_model(job, extractor(cfg), logger, distill_logger)
        except (TrainingError, ResumeError, LineageError) as err:
            raise StageError(f"train: {err}") from err
    best = summary.get("train/best_val_spearman")
    return summary if best is None else summary | {MONITOR: best}
