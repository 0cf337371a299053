"""train: Lightning training of the quality regressor on the labels; best checkpoint + ONNX."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from fiqa.atomic import write_json_atomic
from fiqa.stages import StageError
from fiqa.stages.label import LABELS
from fiqa.tracking import wandb_init_kwargs, wandb_mode
from fiqa.train.datamodule import QualityDataModule
from fiqa.train.export import export_onnx
from fiqa.train.module import QualityRegressor

log = logging.getLogger(__name__)

MONITOR = "val/spearman"


def build_logger(cfg: DictConfig) -> Logger | bool:
    """Lightning logger from ``cfg.logger``: W&B (offline by default), CSV, or none."""
    if cfg.logger.backend == "wandb" and wandb_mode(cfg) != "disabled":
        return WandbLogger(**wandb_init_kwargs(cfg, "train"), log_model=False)
    if cfg.logger.backend == "csv":
        return CSVLogger(save_dir=cfg.paths.models, name="logs")
    return False


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit ``QualityRegressor`` and write models/quality.ckpt, models/quality.onnx, metrics."""
    pl.seed_everything(cfg.train.seed, workers=True)
    models_dir = Path(cfg.paths.models)
    datamodule = QualityDataModule(
        prepared_dir=cfg.paths.prepared,
        labels_path=Path(cfg.paths.labels) / LABELS,
        batch_size=cfg.train.batch_size,
        num_workers=cfg.train.num_workers,
        seed=cfg.train.seed,
        augment=cfg.train.augment,
    )
    hparams = {
        k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name"
    }
    model = QualityRegressor(**hparams)
    checkpoint = ModelCheckpoint(
        dirpath=models_dir,
        filename="quality",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    logger = build_logger(cfg)
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        callbacks=[checkpoint],
        logger=logger,
        default_root_dir=models_dir,
    )
    try:
        trainer.fit(model, datamodule=datamodule)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if trainer.fast_dev_run:
            log.info("fast_dev_run: no checkpoint or export")
            return metrics
        best = checkpoint.best_model_path
        if not best:
            raise StageError(f"train: no checkpoint was saved (is {MONITOR!r} logged?)")
        best_model = QualityRegressor.load_from_checkpoint(
            best, map_location="cpu", pretrained=False
        )
        export = export_onnx(
            best_model, models_dir / "quality.onnx", atol=cfg.train.onnx_max_abs_diff
        )
        summary = {
            "train/best_val_spearman": float(checkpoint.best_model_score),
            "train/epochs": float(trainer.current_epoch),
            "train/onnx_max_abs_diff": float(export["max_abs_diff"]),
            **{k: v for k, v in metrics.items() if k.startswith("val/")},
        }
        write_json_atomic(Path(cfg.paths.metrics) / "train.json", summary)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(summary)
        return summary | {MONITOR: summary["train/best_val_spearman"]}
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
