"""train: Lightning training of the quality regressor (after distillation with model=distill);
best checkpoint + ONNX, model-cost table, metrics (``fiqa.train.fit``)."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from fiqa.config.extraction import extractor
from fiqa.config.training import train_job
from fiqa.config.typed import register_templates
from fiqa.stages import StageError
from fiqa.tracking import lightning_logger
from fiqa.train.fit import MONITOR, TrainingError, fit_quality_model


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit the quality regressor (after distillation for model=distill); write
    models/quality.ckpt, models/quality.onnx, models/cost.md and metrics/train.json."""
    register_templates(cfg)
    job = train_job(cfg)
    logger = lightning_logger(cfg, "train")
    try:
        distill_logger = False
        if job.model["name"] == "distill":  # both fits log into one W&B run
            run_ = logger.experiment if isinstance(logger, WandbLogger) else None
            distill_logger = lightning_logger(cfg, "train", "distill", run_)
        try:
            summary = fit_quality_model(job, extractor(cfg), logger, distill_logger)
        except TrainingError as err:
            raise StageError(str(err)) from err
        best = summary.get("train/best_val_spearman")
        return summary if best is None else summary | {MONITOR: best}
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
