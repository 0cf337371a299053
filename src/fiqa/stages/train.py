"""train: Lightning training of the quality regressor (after distillation with model=distill);
best checkpoint + ONNX, model-cost table, metrics (``fiqa.train.fit``)."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from fiqa.config.extraction import extractor
from fiqa.config.training import train_job
from fiqa.config.typed import register_templates
from fiqa.core.lineage import LineageError
from fiqa.stages import StageError
from fiqa.tracking import finish_lightning_run, lightning_logger
from fiqa.train.fit import MONITOR, TrainingError, fit_quality_model
from fiqa.train.staging import ResumeError


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit the quality regressor (after distillation for model=distill); write
    models/ (quality.ckpt, quality.onnx, cost.md, lineage.json) and metrics/train.json."""
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
        except (TrainingError, ResumeError, LineageError) as err:
            raise StageError(f"train: {err}") from err
        best = summary.get("train/best_val_spearman")
        return summary if best is None else summary | {MONITOR: best}
    except BaseException as err:
        finish_lightning_run(logger, err)  # the W&B run ends as failed
        raise
    finally:
        finish_lightning_run(logger)
