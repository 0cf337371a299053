"""train: Lightning training of the quality regressor (after distillation with model=distill);
best checkpoint + ONNX, model-cost table, metrics (``fiqa.train.fit``)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger

from fiqa.config.extraction import extractor, fr_entries
from fiqa.config.training import train_job
from fiqa.config.typed import register_templates
from fiqa.core.artifacts import LABELS_PROVENANCE
from fiqa.core.containers import differences, plain_container
from fiqa.core.lineage import LineageError
from fiqa.stages import StageError
from fiqa.tracking import finish_lightning_run, lightning_logger
from fiqa.train.fit import MONITOR, TrainingError, fit_quality_model
from fiqa.train.staging import ResumeError


def check_labels(cfg: DictConfig) -> None:
    """The labels on disk are those the config's ``label`` group asks for (target, its
    settings, correction, FR models): training on others would train, and log, another run than
    the config says. Hand-made labels (no ``labels.json``) are not checked."""
    record = Path(cfg.paths.labels) / LABELS_PROVENANCE
    if not record.is_file():
        return
    made = json.loads(record.read_text(encoding="utf-8"))
    target, there = str(cfg.label.target), made.get("target")
    asked = {"target": target, "correction": cfg.label.correction,
             "fr_models": sorted(fr_entries(cfg, "label.fr_models"))}  # fmt: skip
    made = {"target": there, "correction": made.get("correction"),
            "fr_models": sorted(made.get("fr_models", {})), "settings": made.get("methods", {})}  # fmt: skip
    if there == target:  # the settings of the same method
        asked[f"methods.{target}"] = plain_container(cfg.label.methods[target])
        made[f"methods.{target}"] = made.pop("settings").get(target)
    made.pop("settings", None)
    differ = differences(json.loads(json.dumps(made, default=str)),
                         json.loads(json.dumps(asked, default=str)))  # fmt: skip
    if differ:
        raise StageError(
            f"train: {record} holds other labels than this config asks for: "
            f"{'; '.join(differ)}. Make them with `fiqa label` and the same label overrides "
            f"(e.g. `fiqa label label={target}`), or train on the labels there with their "
            f"overrides (e.g. `label={there}`)"
        )


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit the quality regressor (after distillation for model=distill); write
    models/ (quality.ckpt, quality.onnx, cost.md, lineage.json) and metrics/train.json."""
    register_templates(cfg)
    check_labels(cfg)
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
