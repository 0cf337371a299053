"""Typed schemas of every config group (types only, the values live in ``conf/``) and the
``Settings`` of one run: every group as its typed object, built once at start-up
(``fiqa.config.validate.load_settings``) and handed to the stage.

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

from fiqa.core.intervals import Bootstrap
from fiqa.core.pairs import PairSampling
from fiqa.data.preparation import PrepareSettings
from fiqa.data.sources import DataSettings
from fiqa.diffusion.settings import DDPMSettings
from fiqa.extract import ExtractionSettings, FREntry
from fiqa.label import METHODS
from fiqa.label.correction import EdiffiqaSettings
from fiqa.train.settings import DistillSettings, RegressorSettings, TrainSettings


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
    pairs: PairSampling  # pairs of a prepared split (and of train's validation EDC)
    bootstrap: Bootstrap  # pAUC intervals: genuine pairs resampled by identity
    discard_shares: list[float]  # operating points: the quality threshold discarding each share
    target_fnmr: float  # ... and the lowest quality threshold reaching this FNMR
    # eval=insightface only: the folder of the .bin files (required there: `???`). A value
    # merged onto a default keeps the default when it is `???`, so the key has none in YAML.
    bin_root: str | None = None

    @property
    def fmrs(self) -> list[float]:
        """The FMRs of the reports: ``fmr`` first, then the ``extra_fmrs`` not equal to it."""
        return list(dict.fromkeys([self.fmr, *self.extra_fmrs]))


@dataclass
class StudySettings:
    name: str  # the study's folder: paths.studies/<name>
    methods: list[str]  # one regressor per label method or <method>+ediffiqa
    blind: list[str]  # per-image methods and baselines beside the models (eval.methods names)
    benchmarks: list[dict[str, Any]]  # conf/eval/benchmark/ entries
    fr_models: list[Any]  # evaluation FR models: names or {name, weights, options}
    seeds: int  # trainings per method: train.seed, train.seed + 1, ... (1: one, unsuffixed)
    variants: dict[str, dict[str, Any]]  # name -> {dotted key: value}: methods <column>.<name>


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


@dataclass
class Settings:
    """A run's whole config as typed objects: what a stage receives (one conversion, at
    start-up; no stage or library function reads the raw config).

    Attributes:
        experiment_name: The W&B group of the run.
        paths, data, fr, extract, prepare, label, ddpm, model, train, logger, eval, study: The
            config groups, typed by ``SCHEMAS`` (``model``: the regressor's or distillation's).
        trainer: ``pytorch_lightning.Trainer`` arguments (the ``trainer`` group as is).
        resolved: The whole config as plain values: the W&B run's config, for tracking only.
    """

    experiment_name: str
    paths: PathsSettings
    data: DataSettings
    fr: FREntry
    extract: ExtractionSettings
    prepare: PrepareSettings
    label: LabelSettings
    ddpm: DDPMSettings
    model: RegressorSettings | DistillSettings
    trainer: dict[str, Any]
    train: TrainSettings
    logger: LoggerSettings
    eval: EvalSettings
    study: StudySettings
    resolved: dict[str, Any]
