"""The training config groups: ``TrainSettings`` (``train``: data loading, seeds, checkpoints,
export) and the ``model`` options, ``RegressorSettings`` (``model=regressor``) and
``DistillSettings`` (``model=distill``). The ``model`` settings are the constructor arguments of
``QualityRegressor`` and ``DistillationModule`` (a test keeps them equal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TrainSettings:
    """How a quality model is trained and exported (the ``train`` config group).

    Attributes:
        batch_size: Batch size of the train and validation loaders.
        num_workers: DataLoader workers.
        augment: Apply the geometry-neutral train augmentation.
        target_scaling: How labels become regression targets: ``rank``, ``minmax`` or ``none``
            (``fiqa.quality.targets``; fitted on the train split).
        cache_frozen: Train on cached outputs of the frozen part when it is exactly the
            pretrained FR model's (``fiqa.train.frozen``; flip augmentation only).
        seed: Seed of everything (shuffle, augmentation, initialisation).
        onnx_max_abs_diff: Export check: largest ONNX vs torch difference accepted.
        resume: Continue a killed run of the same config and inputs from its staged
            checkpoint (``fiqa.train.staging``); refused for another run's.
        checkpoint_every_n_steps: Also save the resumable state every that many optimiser
            steps (it is always saved at the end of each epoch); None = epochs only.
        early_stopping_patience: Validation epochs without a better ``val/spearman`` before
            stopping; None = off.
        val_edc: Log ``val/pauc@<limit>`` on the validation pairs (first ``label.fr_models``).
        calibration_faces: Training faces (a seeded sample) the best model scores to fit its
            0-100 calibration (``fiqa.quality.calibration``).
    """

    batch_size: int
    num_workers: int
    augment: bool
    target_scaling: str
    cache_frozen: bool
    seed: int
    onnx_max_abs_diff: float
    resume: bool
    checkpoint_every_n_steps: int | None
    early_stopping_patience: int | None
    val_edc: bool
    calibration_faces: int


@dataclass
class RegressorHeadSettings:
    """The regressor settings that do not name the backbone (``conf/model/head/``: also the
    regressor model=distill trains on its student)."""

    head: str
    head_hidden: int
    loss: str
    lr: float
    backbone_lr: float
    weight_decay: float
    scheduler: str
    freeze: str
    unfreeze_at_epoch: int | None
    consistency_weight: float
    train_blocks: int


@dataclass
class RegressorSettings(RegressorHeadSettings):
    """``model=regressor``: the quality regressor on a pretrained FR backbone."""

    name: str  # the option's name (model=regressor)
    backbone: str
    pretrained: bool
    backbone_weights: str | None
    backbone_options: dict[str, Any]


@dataclass
class NetSettings:
    """An FR network of the zoo (``fiqa.fr``): the teacher of model=distill."""

    name: str
    weights: str | None
    options: dict[str, Any]


@dataclass
class StudentSettings(NetSettings):
    """The student of model=distill (from scratch unless ``pretrained``)."""

    pretrained: bool


@dataclass
class DistillSettings:
    """``model=distill``: teacher-student distillation (Huo et al. 2022), then the regressor
    (``regressor``) on the student."""

    name: str
    teacher: NetSettings
    teacher_class_weights: str | None
    teacher_head: str
    student: StudentSettings
    loss_weights: list[float]
    temperature: float
    scale: float
    lr: float
    weight_decay: float
    scheduler: str
    lr_step_epochs: int
    lr_gamma: float
    max_epochs: int
    regressor: RegressorHeadSettings
