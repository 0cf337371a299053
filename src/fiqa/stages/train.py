"""train: Lightning training of the quality regressor (after distillation with model=distill);
best checkpoint + ONNX, model-cost table, metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from torch import nn

from fiqa.atomic import write_json_atomic, write_text_atomic
from fiqa.config import plain_container
from fiqa.data.prepared import PreparedFaces
from fiqa.extract import FaceSource, Request, unit_rows
from fiqa.extract.configured import FRModels, extract_outputs, fr_config
from fiqa.stages import StageError
from fiqa.stages.label import LABELS
from fiqa.tracking import wandb_init_kwargs, wandb_mode
from fiqa.train.callbacks import UnfreezeBackbone, ValidationEDC
from fiqa.train.cost import cost_markdown, cost_table
from fiqa.train.datamodule import QualityDataModule
from fiqa.train.distill import DistillationModule
from fiqa.train.distill_data import IdentityFacesDataModule
from fiqa.train.export import export_onnx
from fiqa.train.module import QualityRegressor

log = logging.getLogger(__name__)

MONITOR = "val/spearman"
LAST = "checkpoints/last.ckpt"  # under paths.models: full training state for train.resume


def build_logger(cfg: DictConfig, prefix: str = "", run: Any = None) -> Logger | bool:
    """Lightning logger from ``cfg.logger``: W&B (offline by default), CSV, or none.

    Args:
        cfg: The run's config.
        prefix: Metric prefix (the distillation fit logs ``distill-train/loss`` ...).
        run: An open W&B run to log into (both fits of model=distill share one run).
    """
    if cfg.logger.backend == "wandb" and wandb_mode(cfg) != "disabled":
        if run is not None:
            return WandbLogger(experiment=run, prefix=prefix, log_model=False)
        return WandbLogger(**wandb_init_kwargs(cfg, "train"), prefix=prefix, log_model=False)
    if cfg.logger.backend == "csv":
        return CSVLogger(save_dir=cfg.paths.models, name=f"logs{'-' + prefix if prefix else ''}")
    return False


def _trainer(cfg: DictConfig, callbacks: list[Callback], logger: Logger | bool, **overrides):
    options = {**OmegaConf.to_container(cfg.trainer, resolve=True), **overrides}
    return pl.Trainer(**options, callbacks=callbacks, logger=logger,
                      default_root_dir=cfg.paths.models)  # fmt: skip


def distill(cfg: DictConfig, logger: Logger | bool) -> tuple[dict[str, Any], DistillationModule]:
    """Fit ``DistillationModule`` (model=distill) and write models/student.pth.

    Returns:
        The regressor's backbone arguments (the student) and the fitted module.
    """
    m = cfg.model
    data = IdentityFacesDataModule(cfg.paths.prepared, cfg.train.batch_size,
                                   cfg.train.num_workers, cfg.train.seed, cfg.train.augment)  # fmt: skip
    module = DistillationModule(
        num_classes=data.num_classes,
        teacher=m.teacher.name,
        teacher_weights=m.teacher.weights,
        teacher_options=m.teacher.options,
        teacher_class_weights=m.teacher_class_weights,
        teacher_head=m.teacher_head,
        student=m.student.name,
        student_pretrained=m.student.pretrained,
        student_weights=m.student.weights,
        student_options=m.student.options,
        loss_weights=list(m.loss_weights),
        temperature=m.temperature,
        scale=m.scale,
        lr=m.lr,
        weight_decay=m.weight_decay,
        scheduler=m.scheduler,
        lr_step_epochs=m.lr_step_epochs,
        lr_gamma=m.lr_gamma,
    )
    _trainer(cfg, [], logger, max_epochs=int(m.max_epochs), enable_checkpointing=False).fit(
        module, datamodule=data
    )
    path = module.save_student(Path(cfg.paths.models) / "student.pth")
    log.info("distilled %s -> %s: %s", m.teacher.name, m.student.name, path)
    backbone = {
        "backbone": m.student.name,
        "pretrained": True,
        "backbone_weights": str(path),
        "backbone_options": plain_container(m.student.options),
    }
    return backbone, module


def _validation_edc(
    cfg: DictConfig, datamodule: QualityDataModule, models: FRModels
) -> ValidationEDC | None:
    """val/pauc@0.2 with the first label FR model's cached embeddings (None when unusable)."""
    val = datamodule.val_dataframe()
    if val["identity"].nunique() < 2 or val["identity"].duplicated().sum() == 0:
        log.warning("train.val_edc: the validation split needs genuine and impostor pairs")
        return None
    fr = fr_config(cfg, cfg.label.fr_models[0])
    prepared = PreparedFaces(cfg.paths.prepared)
    embeddings = extract_outputs(
        cfg, models.get(fr), fr, FaceSource.from_prepared(prepared), Request()
    )["embedding"]
    rows = prepared.manifest.reset_index(drop=True).reset_index().set_index("sample_id")["index"]
    emb = unit_rows(embeddings, rows.loc[val["sample_id"]].to_numpy())
    e = cfg.eval
    return ValidationEDC(val["sample_id"].to_numpy(), val["identity"].to_numpy(), emb,
                         fmr=float(e.fmr), limits=(float(e.discard_limits[0]),))  # fmt: skip


def _callbacks(
    cfg: DictConfig, model: QualityRegressor, datamodule: QualityDataModule, models: FRModels
):
    models_dir = Path(cfg.paths.models)
    best = ModelCheckpoint(
        dirpath=models_dir,
        filename="quality",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(dirpath=models_dir / Path(LAST).parent, save_top_k=0, save_last=True)
    callbacks: list[Callback] = [best, last]
    if cfg.train.early_stopping_patience is not None:  # check_finite: stop on a NaN metric
        callbacks.append(EarlyStopping(MONITOR, patience=int(cfg.train.early_stopping_patience),
                                       mode="max", check_finite=True))  # fmt: skip
    if model.hparams.unfreeze_at_epoch is not None:
        callbacks.append(UnfreezeBackbone(int(model.hparams.unfreeze_at_epoch)))
    if cfg.train.val_edc:
        datamodule.setup()
        edc = _validation_edc(cfg, datamodule, models)
        callbacks += [edc] if edc is not None else []
    return best, callbacks


def _cost_report(
    cfg: DictConfig,
    model: QualityRegressor,
    distilled: DistillationModule | None,
    models: FRModels,
) -> dict[str, float]:
    """Params and FLOPs of the FR teacher, the student and the quality model (seed 004, Table 1):
    models/cost.md, and ``cost/<role>/params_m`` / ``gflops`` metrics."""
    if distilled is not None:
        t, s = distilled.teacher_info, distilled.student_info
        nets: dict[str, tuple[str, nn.Module, tuple[int, int]]] = {
            "teacher": (t.name, distilled.teacher, t.input_size),
            "student": (s.name, distilled.student, s.input_size),
        }
    else:
        fr = models.get(fr_config(cfg, cfg.label.fr_models[0]))
        nets = {"fr_model": (fr.info.name, fr.net, fr.info.input_size)}
    head = f"{model.hparams.backbone} + {model.hparams.head} head"
    nets["quality_model"] = (head, model, model.input_size)
    rows = cost_table({f"{role} ({name})": (net, size) for role, (name, net, size) in nets.items()})
    write_text_atomic(Path(cfg.paths.models) / "cost.md", cost_markdown(rows))
    metrics = {}
    for role, row in zip(nets, rows, strict=True):
        metrics[f"cost/{role}/params_m"] = float(row["params_m"])
        metrics[f"cost/{role}/gflops"] = float(row["flops_g"])
    return metrics


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit the quality regressor (after distillation for model=distill); write
    models/quality.ckpt, models/quality.onnx, models/cost.md and metrics/train.json."""
    pl.seed_everything(cfg.train.seed, workers=True)
    models_dir = Path(cfg.paths.models)
    logger = build_logger(cfg)
    try:
        distilled = None
        if cfg.model.name == "distill":
            run_ = logger.experiment if isinstance(logger, WandbLogger) else None
            backbone, distilled = distill(cfg, build_logger(cfg, "distill", run_))
            hparams = {**backbone, **plain_container(cfg.model.regressor)}
        else:
            hparams = {k: v for k, v in plain_container(cfg.model).items() if k != "name"}
        model = QualityRegressor(**hparams)
        datamodule = QualityDataModule(
            prepared_dir=cfg.paths.prepared,
            labels_path=Path(cfg.paths.labels) / LABELS,
            batch_size=cfg.train.batch_size,
            num_workers=cfg.train.num_workers,
            seed=cfg.train.seed,
            augment=cfg.train.augment,
            template=model.template,
        )
        models = FRModels()  # the label FR model: validation pAUC and cost table share it
        best, callbacks = _callbacks(cfg, model, datamodule, models)
        trainer = _trainer(cfg, callbacks, logger)
        last = models_dir / LAST
        resume = str(last) if cfg.train.resume and last.is_file() else None
        if resume:
            log.info("resuming from %s", resume)
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if trainer.fast_dev_run:
            log.info("fast_dev_run: no checkpoint or export")
            return metrics
        if not best.best_model_path:
            raise StageError(f"train: no checkpoint was saved (is {MONITOR!r} logged?)")
        best_model = QualityRegressor.load_from_checkpoint(
            best.best_model_path, map_location="cpu", pretrained=False
        )
        export = export_onnx(
            best_model, models_dir / "quality.onnx", atol=cfg.train.onnx_max_abs_diff
        )
        costs = _cost_report(cfg, best_model, distilled, models)
        summary = {
            "train/best_val_spearman": float(best.best_model_score),
            "train/epochs": float(trainer.current_epoch),
            "train/global_step": float(trainer.global_step),
            "train/onnx_max_abs_diff": float(export["max_abs_diff"]),
            **{k: v for k, v in metrics.items() if k.startswith("val/")},
            **costs,
        }
        write_json_atomic(Path(cfg.paths.metrics) / "train.json", summary)
        if isinstance(logger, WandbLogger):
            _log_wandb(logger, summary, costs, best_model, datamodule)
        return summary | {MONITOR: summary["train/best_val_spearman"]}
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()


def _log_wandb(logger: WandbLogger, summary: dict, costs: dict[str, float],
               model: QualityRegressor, datamodule: QualityDataModule) -> None:  # fmt: skip
    """Summary, the model-cost table and a grid of validation faces: predicted vs label."""
    import torch
    import wandb

    logger.experiment.summary.update(summary)
    roles = dict.fromkeys(key.split("/")[1] for key in costs)
    table = [[r, costs[f"cost/{r}/params_m"], costs[f"cost/{r}/gflops"]] for r in roles]
    logger.experiment.log({"train/cost": wandb.Table(["model", "params_m", "gflops"], table)})
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        pred = model.eval()(batch["image"][:16]).numpy()
    faces = batch["image"][:16].permute(0, 2, 3, 1).numpy().astype(np.uint8)
    captions = [
        f"pred {p:.3f} / label {q:.3f}" for p, q in zip(pred, batch["quality"], strict=False)
    ]
    logger.log_image("val/samples", list(faces), caption=captions)
