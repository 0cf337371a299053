"""Typed schemas of every config group: types only, the values live in ``conf/``.

Merging the composed config into these dataclasses rejects wrong types (``model.lr=fast``) and
missing keys at stage start, naming the key (Hydra's struct mode already rejects unknown keys,
``model.lrr=1``). Where a library function consumes a group, its settings dataclass is the schema
(``PrepareSettings``, ``ExtractionSettings``, ``FREntry``, ``DDPMSettings``, each label method's settings), so
the names and types are stated once; the ``model`` schemas list the LightningModules'
constructor arguments (a test keeps them equal). ``trainer`` is passed to
``pytorch_lightning.Trainer`` as is and validated there.
"""

from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from typing import Any

from fiqa.data.preparation import PrepareSettings
from fiqa.diffusion.settings import DDPMSettings
from fiqa.extract import ExtractionSettings, FREntry
from fiqa.label import METHODS
from fiqa.label.correction import EdiffiqaSettings
from fiqa.train.settings import TrainSettings


@dataclass
class PathsSettings:
    root: str
    raw: str
    prepared: str
    labels: str
    models: str
    ddpm: str
    metrics: str
    plots: str
    reports: str
    cache: str
    studies: str


@dataclass
class DataSettings:
    name: str
    format: str
    root: str
    metadata: str | None
    # Format-specific keys (None where a format does not use them).
    subsets: list[str] | None = None  # vggface2
    use_landmarks: bool | None = None  # vggface2
    references: str | None = None  # vggface2: FaceQnet reference list
    rec: str | None = None  # ms1m
    idx: str | None = None  # ms1m
    table: str | None = None  # table: CSV / parquet of (path, identity)
    path_column: str | None = None  # table
    identity_column: str | None = None  # table
    min_images: int | None = None  # table: identities with at least this many images
    exclude: Any = None  # table: identities left out (a list, or a CSV with an identity column)
    max_identities: int | None = None  # any format: only this many identities (debug=small)
    max_images_per_identity: int | None = None  # any format: at most this many images each


# label.methods: one field per registered method, typed by its settings dataclass.
LabelMethods = make_dataclass("LabelMethods", [(m.name, m.params) for m in METHODS.values()])


@dataclass
class LabelSettings:
    target: str
    compute: list[str]
    fr_models: list[Any]  # registry names or {name, weights, options} mappings
    seed: int
    ediffiqa: EdiffiqaSettings
    methods: LabelMethods  # type: ignore[valid-type]


@dataclass
class RegressorHeadSettings:
    """The regressor settings that do not name the backbone (also the second fit of distill)."""

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


@dataclass
class RegressorSettings(RegressorHeadSettings):
    name: str  # the option's name (model=regressor)
    backbone: str
    pretrained: bool
    backbone_weights: str | None
    backbone_options: dict[str, Any]


@dataclass
class NetSettings:
    name: str
    weights: str | None
    options: dict[str, Any]


@dataclass
class StudentSettings(NetSettings):
    pretrained: bool


@dataclass
class DistillSettings:
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


@dataclass
class LoggerSettings:
    backend: str
    project: str
    entity: str | None
    mode: str


@dataclass
class EvalSettings:
    benchmark: dict[str, Any]  # format + its keys (conf/eval/benchmark/)
    benchmarks: list[dict[str, Any]]  # more benchmarks of the matrix
    fr_models: list[Any]  # registry names or {name, weights, options} mappings
    methods: list[str]
    quality_models: dict[str, Any]  # name -> {path, template, colour, mean, std, fr_models}
    fmr: float
    extra_fmrs: list[float]
    discard_limits: list[float]
    pair_quality: str
    # eval=insightface only: the folder of the .bin files (required there: `???`). A value
    # merged onto a default keeps the default when it is `???`, so the key has none in YAML.
    bin_root: str | None = None


@dataclass
class StudySettings:
    name: str  # the study's folder: paths.studies/<name>
    methods: list[str]  # one regressor per label method or <method>+ediffiqa
    blind: list[str]  # per-image methods and baselines beside the models (eval.methods names)
    benchmarks: list[dict[str, Any]]  # conf/eval/benchmark/ entries
    fr_models: list[Any]  # evaluation FR models: names or {name, weights, options}


SCHEMAS: dict[str, type | dict[str, type]] = {
    "paths": PathsSettings,
    "data": DataSettings,
    "fr": FREntry,
    "extract": ExtractionSettings,
    "prepare": PrepareSettings,
    "label": LabelSettings,
    "ddpm": DDPMSettings,
    "model": {"regressor": RegressorSettings, "distill": DistillSettings},  # by model.name
    "train": TrainSettings,
    "logger": LoggerSettings,
    "eval": EvalSettings,
    "study": StudySettings,
}
