"""Training a quality model end to end: (distillation, then) the regressor, best checkpoint,
ONNX export, model-cost table and metrics.

``fit_quality_model(job, extractor, logger)`` is the whole train stage as a library call:

    models/quality.ckpt           best weights by val/spearman
    models/quality.onnx           the exported model, checked against torch
    models/student.pth            the distilled student (model=distill)
    models/cost.md                params / FLOPs of teacher, student and quality model
    models/lineage.json           the run's config and the hashes of its manifest and labels
    metrics/train.json            the summary

made in ``models.partial/`` with a resumable training state and published in one rename
(``fiqa.train.staging``). The labels must have been made from the prepared set given
(``fiqa.core.lineage``) and for the label settings the job names.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import nn

from fiqa.core.artifacts import (
    COST_TABLE,
    LABELS,
    LABELS_PROVENANCE,
    LAST_CHECKPOINT,
    MANIFEST,
    QUALITY_CHECKPOINT,
    QUALITY_ONNX,
    STUDENT,
)
from fiqa.core.atomic import write_text_atomic
from fiqa.core.containers import differences
from fiqa.core.lineage import check_lineage
from fiqa.core.pairs import PairSampling
from fiqa.data.face_store import PreparedFaces
from fiqa.extract import Extractor, FaceSource, FREntry, Request, unit_rows
from fiqa.quality.calibration import CHECKPOINT_KEY as CALIBRATION_KEY
from fiqa.quality.calibration import Calibration
from fiqa.quality.export import export_onnx
from fiqa.quality.model import QualityRegressor
from fiqa.quality.trunk import pretrained_frozen_part
from fiqa.train.callbacks import UnfreezeBackbone, ValidationEDC
from fiqa.train.cost import cost_markdown, cost_table
from fiqa.train.datamodule import QualityDataModule
from fiqa.train.distill import DistillationModule
from fiqa.train.distill_data import IdentityFacesDataModule
from fiqa.train.frozen import frozen_features
from fiqa.train.settings import DistillSettings, RegressorSettings, TrainSettings
from fiqa.train.staging import (
    AtomicCheckpointIO,
    ResumableState,
    open_staging,
    publish,
    staging_dir,
    train_position,
)

log = logging.getLogger(__name__)

MONITOR = "val/spearman"
DISTILL_ONLY = ("name", "max_epochs", "regressor")  # model=distill keys that are not the module's


class TrainingError(RuntimeError):
    """Training produced no usable model."""


@dataclass(frozen=True)
class LabelsAsked:
    """The label config labels must have been made with to be trained on (the ``label``
    group): a labels table made for another target or with other settings would train, and
    log, another run than the config says.

    Attributes:
        target: ``label.target``.
        settings: Every label method's settings by name, and ``ediffiqa`` (plain values).
        fr_models: The names of ``label.fr_models``.
    """

    target: str
    settings: Mapping[str, Any]
    fr_models: tuple[str, ...]


def labels_mismatch(record: Mapping[str, Any], asked: LabelsAsked) -> list[str]:
    """How the labels a ``labels.json`` ``record`` describes differ from ``asked``, as ``key
    (made -> asked)`` entries (empty: they match): the target, the FR models and, for the same
    target, each setting the record says the target depends on (``target_settings``)."""
    made = {"target": record.get("target"), "fr_models": sorted(record.get("fr_models") or {})}
    want: dict[str, Any] = {"target": asked.target, "fr_models": sorted(asked.fr_models)}
    if made["target"] == asked.target:
        made["settings"] = dict(record.get("target_settings") or {})
        want["settings"] = {key: asked.settings.get(key) for key in made["settings"]}
    plain = json.loads(json.dumps(made, default=str)), json.loads(json.dumps(want, default=str))
    return differences(*plain)


@dataclass
class TrainJob:
    """What to train, on what, and where the outputs go.

    Attributes:
        model: The ``model`` group: ``RegressorSettings`` (``QualityRegressor``'s arguments) or
            ``DistillSettings`` (``DistillationModule``'s, then the regressor's head settings).
        trainer: ``pytorch_lightning.Trainer`` options (the ``trainer`` group).
        settings: The ``train`` group.
        prepared_dir: The prepared faces.
        labels_dir: The labels (their ``quality`` column is regressed).
        labels: The label config the labels must have been made with.
        models_dir: Where checkpoints and exports go.
        metrics_dir: Where ``train.json`` goes.
        validation_fr: The FR model of the validation pAUC and the cost table (the first of
            ``label.fr_models``).
        fmr: FMR of the validation pAUC's threshold.
        val_limit: Discard limit of the validation pAUC.
        val_pairs: The pairs of the validation pAUC (``eval.pairs``).
    """

    model: RegressorSettings | DistillSettings
    trainer: Mapping[str, Any]
    settings: TrainSettings
    prepared_dir: Path
    labels_dir: Path
    labels: LabelsAsked
    models_dir: Path
    metrics_dir: Path
    validation_fr: FREntry
    fmr: float
    val_limit: float
    val_pairs: PairSampling


def fit_quality_model(
    job: TrainJob,
    extractor: Extractor,
    logger: Logger | bool,
    distill_logger: Logger | bool = False,
) -> dict[str, float]:
    """Train the quality model of ``job`` and write its outputs (module docstring).

    Args:
        job: The job.
        extractor: Extraction for the validation pAUC's embeddings (cached).
        logger: Lightning logger of the regressor fit (False: none).
        distill_logger: Lightning logger of the distillation fit (model=distill).

    Returns:
        The summary (``train/...``, ``val/...``, ``cost/...``); the fit's metrics only when
        ``fast_dev_run`` (nothing is written then).

    Raises:
        TrainingError: An input is missing, or the labels were made for other label settings.
        fiqa.core.lineage.LineageError: The labels were made from another prepared set.
        fiqa.train.staging.ResumeError: ``train.resume`` on staged work of another run.
    """
    identity = run_identity(job, check_training_inputs(job))
    final, staged = job, replace(job, models_dir=staging_dir(job.models_dir))
    resume = open_staging(staged.models_dir, identity, job.settings.resume)
    summary = _fit(staged, extractor, logger, distill_logger, resume)
    if summary.get("train/fast_dev_run"):
        shutil.rmtree(staged.models_dir, ignore_errors=True)
        return {k: v for k, v in summary.items() if k != "train/fast_dev_run"}
    publish(staged.models_dir, final.models_dir, final.metrics_dir, identity, summary)
    return summary


def check_training_inputs(job: TrainJob) -> dict[str, str]:
    """The prepared set and the labels are there, the labels were made from this prepared set
    (``fiqa.core.lineage``) and with the label settings of ``job.labels`` (hand-made labels,
    without ``labels.json``, are not checked): training on others would train, and log, another
    run than the config says. Returns the inputs' hashes.

    Raises:
        TrainingError: A missing input, or labels made with other settings (naming how).
        fiqa.core.lineage.LineageError: Labels made from another prepared set.
    """
    for path, stage in (
        (job.prepared_dir / MANIFEST, "prepare"),
        (job.labels_dir / LABELS, "label"),
    ):
        if not path.is_file():
            raise TrainingError(f"{path} not found: run `fiqa {stage}` first (or `dvc repro`)")
    hashes = check_lineage(job.prepared_dir, job.labels_dir)
    record = job.labels_dir / LABELS_PROVENANCE
    if record.is_file():
        made = json.loads(record.read_text(encoding="utf-8"))
        differ = labels_mismatch(made, job.labels)
        if differ:
            asked, there = job.labels.target, made.get("target")
            raise TrainingError(
                f"{record} holds other labels than this config asks for: {'; '.join(differ)}. "
                f"Make them with `fiqa label` and the same label overrides (e.g. `fiqa label "
                f"label.target={asked}`), or train on the labels there with their overrides "
                f"(e.g. `label.target={there}`)"
            )
    return hashes


def run_identity(job: TrainJob, hashes: dict[str, str]) -> dict[str, Any]:
    """What a run is: the config its weights depend on and the hashes of its inputs (the
    resume check and ``models/lineage.json``)."""
    return {
        "model": asdict(job.model),
        "trainer": dict(job.trainer),
        "train": asdict(job.settings),
        "validation_fr": asdict(job.validation_fr),
        "fmr": job.fmr,
        "val_limit": job.val_limit,
        "val_pairs": asdict(job.val_pairs),
        "inputs": hashes,
        "labels": labels_used(job.labels_dir / LABELS_PROVENANCE),
    }


def labels_used(record: Path) -> dict[str, Any]:
    """The target of the labels trained on (from their ``labels.json``; empty for hand-made
    labels), ``<method>+ediffiqa`` for corrected labels: recorded in ``models/lineage.json``,
    ``metrics/train.json`` and the W&B run's config."""
    if not record.is_file():
        return {}
    return {"target": json.loads(record.read_text(encoding="utf-8")).get("target")}


def _fit(job: TrainJob, extractor: Extractor, logger: Logger | bool,
         distill_logger: Logger | bool, resume: Path | None) -> dict[str, float]:  # fmt: skip
    """The training and exports of ``fit_quality_model``, written to ``job.models_dir`` (the
    staging directory)."""
    pl.seed_everything(job.settings.seed, workers=True)
    distilled = None
    if isinstance(job.model, DistillSettings):
        backbone, distilled = distill(job, job.model, distill_logger)
        hparams = {**backbone, **asdict(job.model.regressor)}
    else:
        hparams = {k: v for k, v in asdict(job.model).items() if k != "name"}
    model = QualityRegressor(**hparams)
    s = job.settings
    datamodule = QualityDataModule(job.prepared_dir, job.labels_dir / LABELS, s.batch_size,
                                   s.num_workers, s.seed, s.augment, s.target_scaling,
                                   template=model.template)  # fmt: skip
    datamodule.setup()
    model.target_scaling = datamodule.scaling.as_dict()
    if resume is not None:
        datamodule.start_at(*train_position(resume))
    if s.cache_frozen and pretrained_frozen_part(hparams):
        source = FaceSource.from_prepared(PreparedFaces(job.prepared_dir))
        features = frozen_features(hparams, source, extractor, s.batch_size, model.cut)
        datamodule.use_features(features)
        log.info("training on cached %s (the frozen part runs once per face)",
                 f"{hparams['freeze']} outputs" if model.cut is None
                 else f"activations at trunk block {model.cut}")  # fmt: skip
    best, callbacks = _callbacks(job, model, datamodule, extractor)
    # no sanity check on resume: Lightning would average its metrics into the resumed epoch's
    trainer = _trainer(job, callbacks, logger, **({"num_sanity_val_steps": 0} if resume else {}))
    with warnings.catch_warnings():  # the staging directory holds run.json (and a resume)
        warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        # the train sampler starts where the killed run stopped (QualityDataModule.start_at)
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.fast_dev_run:
        log.info("fast_dev_run: no checkpoint or export")
        return metrics | {"train/fast_dev_run": 1.0}
    if not best.best_model_path:
        raise TrainingError(f"no checkpoint was saved (is {MONITOR!r} logged?)")
    best_model = QualityRegressor.load_from_checkpoint(best.best_model_path, map_location="cpu",
                                                       pretrained=False)  # fmt: skip
    calibration = fit_calibration(best_model, datamodule, s.calibration_faces)
    best_model.calibration = calibration.to_dict()
    store_calibration(Path(best.best_model_path), best_model.calibration)
    export = export_onnx(best_model, job.models_dir / QUALITY_ONNX, atol=s.onnx_max_abs_diff)
    costs = cost_report(job, best_model, distilled, extractor)
    summary = {
        "train/best_val_spearman": float(best.best_model_score),
        "train/epochs": float(trainer.current_epoch),
        "train/global_step": float(trainer.global_step),
        "train/resumed": float(resume is not None),
        "train/onnx_max_abs_diff": float(export["max_abs_diff"]),
        "train/calibration_faces": float(calibration.n_faces),
        **against_constant(best_model, datamodule),
        **{k: v for k, v in metrics.items() if k.startswith("val/")},
        **costs,
    }
    if isinstance(logger, WandbLogger):
        logger.experiment.config.update(
            {"labels_used": labels_used(job.labels_dir / LABELS_PROVENANCE)},
            allow_val_change=True,
        )
        log_to_wandb(logger, summary, costs, best_model, datamodule)
    return summary


def fit_calibration(
    model: QualityRegressor, datamodule: QualityDataModule, max_faces: int
) -> Calibration:
    """The best model's 0-100 calibration from its raw scores of (a seeded sample of at most
    ``max_faces``) training faces, without augmentation (``fiqa.quality.calibration``)."""
    import torch

    model.eval()
    with torch.no_grad():
        raw = [model.predict_batch(batch).float().cpu()
               for batch in datamodule.calibration_dataloader(max_faces)]  # fmt: skip
    calibration = Calibration.fit(torch.cat(raw).numpy())
    log.info("calibration: 0-100 = training percentile over %d faces (raw %.4f .. %.4f)",
             calibration.n_faces, calibration.knots[0], calibration.knots[-1])  # fmt: skip
    return calibration


def store_calibration(checkpoint: Path, calibration: dict[str, Any]) -> None:
    """Add the calibration to a written checkpoint, saved as Lightning saves it (atomically,
    the same bytes for the same content)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state[CALIBRATION_KEY] = calibration
    AtomicCheckpointIO().save_checkpoint(state, checkpoint)


def against_constant(model: QualityRegressor, datamodule: QualityDataModule) -> dict[str, float]:
    """The best model's validation MAE against the constant predictor's (the mean train
    target): ``train/val_mae``, ``train/val_mae_constant``, ``train/beats_constant`` (1 or 0).
    A model that does not beat the constant is useless, whatever its other metrics: warned."""
    import torch

    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            preds.append(model.predict_batch(batch).float())
            targets.append(batch["quality"].float())
    pred, target = torch.cat(preds).numpy(), torch.cat(targets).numpy()
    table = datamodule.table
    mean = float(table.loc[table["split"] == "train", "label"].mean())
    mae, constant = float(np.abs(pred - target).mean()), float(np.abs(mean - target).mean())
    if not mae < constant:
        log.warning(
            "the trained model is no better than predicting the mean label: validation MAE "
            "%.4f vs %.4f for the constant %.4f; check the labels, the target scaling and the "
            "learning rates", mae, constant, mean,
        )  # fmt: skip
    return {"train/val_mae": mae, "train/val_mae_constant": constant,
            "train/beats_constant": float(mae < constant)}  # fmt: skip


def _trainer(job: TrainJob, callbacks: list[Callback], logger: Logger | bool, **overrides):
    return pl.Trainer(**{**job.trainer, **overrides}, callbacks=callbacks, logger=logger,
                      default_root_dir=job.models_dir, plugins=[AtomicCheckpointIO()])  # fmt: skip


def distill(
    job: TrainJob, m: DistillSettings, logger: Logger | bool
) -> tuple[dict[str, Any], DistillationModule]:
    """Fit ``DistillationModule`` (model=distill: ``m``) and write models/student.pth.

    Returns:
        The regressor's backbone arguments (the student) and the fitted module.
    """
    s = job.settings
    data = IdentityFacesDataModule(job.prepared_dir, s.batch_size, s.num_workers, s.seed,
                                   s.augment)  # fmt: skip
    arguments = {k: v for k, v in asdict(m).items() if k not in DISTILL_ONLY}
    module = DistillationModule(num_classes=data.num_classes, **arguments)
    trainer = _trainer(job, [], logger, max_epochs=m.max_epochs, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    path = module.save_student(job.models_dir / STUDENT)
    log.info("distilled %s -> %s: %s", m.teacher.name, m.student.name, path)
    backbone = {
        "backbone": m.student.name,
        "pretrained": True,
        "backbone_weights": str(path),
        "backbone_options": dict(m.student.options),
    }
    return backbone, module


def validation_edc(
    job: TrainJob, datamodule: QualityDataModule, extractor: Extractor
) -> ValidationEDC | None:
    """val/pauc@<limit> with the validation FR model's cached embeddings (None when unusable)."""
    val = datamodule.val_dataframe()
    if val["identity"].nunique() < 2 or val["identity"].duplicated().sum() == 0:
        log.warning("train.val_edc: the validation split needs genuine and impostor pairs")
        return None
    prepared = PreparedFaces(job.prepared_dir)
    source = FaceSource.from_prepared(prepared)
    embeddings = extractor.outputs(job.validation_fr, source, Request())["embedding"]
    rows = prepared.manifest.reset_index(drop=True).reset_index().set_index("sample_id")["index"]
    emb = unit_rows(embeddings, rows.loc[val["sample_id"]].to_numpy())
    return ValidationEDC(val["sample_id"].to_numpy(), val["identity"].to_numpy(), emb,
                         fmr=job.fmr, limits=(job.val_limit,), pairs=job.val_pairs)  # fmt: skip


def _callbacks(
    job: TrainJob, model: QualityRegressor, datamodule: QualityDataModule, extractor: Extractor
) -> tuple[ModelCheckpoint, list[Callback]]:
    best = ModelCheckpoint(
        dirpath=job.models_dir,
        filename=Path(QUALITY_CHECKPOINT).stem,
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    state = ResumableState(job.models_dir / LAST_CHECKPOINT, job.settings.checkpoint_every_n_steps)
    callbacks: list[Callback] = [best, state]
    patience = job.settings.early_stopping_patience
    if patience is not None:  # check_finite: stop on a NaN metric
        callbacks.append(EarlyStopping(MONITOR, patience=int(patience), mode="max",
                                       check_finite=True))  # fmt: skip
    if model.hparams.unfreeze_at_epoch is not None:
        callbacks.append(UnfreezeBackbone(int(model.hparams.unfreeze_at_epoch)))
    if job.settings.val_edc:
        edc = validation_edc(job, datamodule, extractor)
        callbacks += [edc] if edc is not None else []
    return best, callbacks


def cost_report(
    job: TrainJob, model: QualityRegressor, distilled: DistillationModule | None,
    extractor: Extractor,
) -> dict[str, float]:  # fmt: skip
    """Params and FLOPs of the FR teacher, the student and the quality model (as Huo et al. 2022, Table 1):
    models/cost.md, and ``cost/<role>/params_m`` / ``gflops`` metrics."""
    if distilled is not None:
        t, s = distilled.teacher_info, distilled.student_info
        nets: dict[str, tuple[str, nn.Module, tuple[int, int]]] = {
            "teacher": (t.name, distilled.teacher, t.input_size),
            "student": (s.name, distilled.student, s.input_size),
        }
    else:
        fr = extractor.model(job.validation_fr)
        nets = {"fr_model": (fr.info.name, fr.net, fr.info.input_size)}
    head = f"{model.hparams.backbone} + {model.hparams.head} head"
    nets["quality_model"] = (head, model, model.input_size)
    rows = cost_table({f"{role} ({name})": (net, size) for role, (name, net, size) in nets.items()})
    write_text_atomic(job.models_dir / COST_TABLE, cost_markdown(rows))
    metrics = {}
    for role, row in zip(nets, rows, strict=True):
        metrics[f"cost/{role}/params_m"] = float(row["params_m"])
        metrics[f"cost/{role}/gflops"] = float(row["flops_g"])
    return metrics


def log_to_wandb(logger: WandbLogger, summary: dict, costs: dict[str, float],
                 model: QualityRegressor, datamodule: QualityDataModule) -> None:  # fmt: skip
    """Summary, the model-cost table and a grid of validation faces: predicted vs label."""
    import torch
    import wandb

    logger.experiment.summary.update(summary)
    roles = dict.fromkeys(key.split("/")[1] for key in costs)
    table = [[r, costs[f"cost/{r}/params_m"], costs[f"cost/{r}/gflops"]] for r in roles]
    logger.experiment.log({"train/cost": wandb.Table(["model", "params_m", "gflops"], table)})
    batch = datamodule.val_faces(16)
    with torch.no_grad():
        pred = model.eval()(batch["image"]).numpy()
    faces = batch["image"].permute(0, 2, 3, 1).numpy().astype(np.uint8)
    captions = [
        f"pred {p:.3f} / label {q:.3f}" for p, q in zip(pred, batch["quality"], strict=False)
    ]
    logger.log_image("val/samples", list(faces), caption=captions)
