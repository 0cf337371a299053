"""The library objects a stage builds from its config: the one place config becomes values.

Stages call these and then one library function; the library itself takes plain values and
typed settings, so it can be used from Python without Hydra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from fiqa.config.validate import ConfigError
from fiqa.core.align import register_template
from fiqa.core.artifacts import LABELS, QUALITY_ONNX, QUALITY_SCORES
from fiqa.core.containers import plain_container
from fiqa.data.face_pipeline import FaceAligner
from fiqa.data.preparation import PrepareSettings
from fiqa.eval.qualities import QualitySources
from fiqa.eval.sets import EvalSet, load_eval_sets
from fiqa.extract import ExtractionSettings, Extractor, FREntry
from fiqa.label import METHODS
from fiqa.label.correction import EdiffiqaParams
from fiqa.label.table import LabelJob
from fiqa.train.fit import TrainJob
from fiqa.train.settings import TrainSettings

T = TypeVar("T")


def typed(node: Any, schema: type[T]) -> T:
    """A config node as an instance of its schema dataclass (validated on the way)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def register_templates(cfg: DictConfig) -> None:
    """Make ``prepare.templates`` (user-defined alignment templates) known to this process."""
    for name, spec in (cfg.prepare.templates or {}).items():
        register_template(name, spec.size, spec.points)


def prepare_settings(cfg: DictConfig) -> PrepareSettings:
    return typed(cfg.prepare, PrepareSettings)


def fr_defaults(cfg: DictConfig) -> FREntry:
    """The ``fr`` group: the selected FR model, and the batch size and flip of the entries of
    ``label.fr_models`` / ``eval.fr_models`` that leave them out."""
    return typed(cfg.fr, FREntry)


def fr_entries(cfg: DictConfig, key: str) -> dict[str, FREntry]:
    """``{name: entry}`` of the FR model list at ``key`` (``label.fr_models`` or
    ``eval.fr_models``): registry names (``cfg.fr`` when it names the selected model) or
    ``{name, weights, options, batch_size?, flip?}`` mappings.

    Raises:
        ConfigError: For a model listed twice.
    """
    defaults = fr_defaults(cfg)
    entries = []
    for item in OmegaConf.select(cfg, key):
        if isinstance(item, Mapping | DictConfig):
            entries.append(FREntry.from_mapping(plain_container(item), defaults))
        elif str(item) == defaults.name:
            entries.append(defaults)
        else:
            entries.append(FREntry.from_mapping({"name": str(item)}, defaults))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{key}: FR models listed twice: {duplicates}")
    return dict(zip(names, entries, strict=True))


def extractor(cfg: DictConfig) -> Extractor:
    """Extraction with ``paths.cache`` and the ``extract`` settings."""
    return Extractor(Path(cfg.paths.cache), typed(cfg.extract, ExtractionSettings))


def label_params(cfg: DictConfig) -> dict[str, Any]:
    """Every label method's settings (``label.methods``), typed, by name."""
    return {name: typed(cfg.label.methods[name], m.params) for name, m in METHODS.items()}


def label_job(cfg: DictConfig) -> LabelJob:
    """The ``label`` group as a ``LabelJob``."""
    lab = cfg.label
    return LabelJob(
        target=str(lab.target),
        compute=tuple(str(m) for m in lab.compute),
        params=label_params(cfg),
        fr_models=fr_entries(cfg, "label.fr_models"),
        fr_defaults=fr_defaults(cfg),
        seed=int(lab.seed),
        correction=str(lab.correction),
        ediffiqa=typed(lab.ediffiqa, EdiffiqaParams),
    )


def aligner_factory(cfg: DictConfig) -> Callable[[bool], FaceAligner]:
    """``pre_aligned -> FaceAligner`` with ``prepare``'s alignment settings (external
    benchmarks are aligned the way the prepared set was)."""
    p = cfg.prepare
    return partial(FaceAligner, str(p.template), str(p.face_selection), float(p.score_threshold),
                   float(p.pad_ratio))  # fmt: skip


def eval_sets(cfg: DictConfig) -> list[EvalSet]:
    """The evaluation sets of ``eval.benchmark`` and ``eval.benchmarks``."""
    specs = [plain_container(cfg.eval.benchmark), *map(plain_container, cfg.eval.benchmarks)]
    return load_eval_sets(specs, prepared_dir=cfg.paths.prepared, labels_dir=cfg.paths.labels,
                          data_name=str(cfg.data.name), aligner=aligner_factory(cfg))  # fmt: skip


def quality_sources(cfg: DictConfig, runner: Extractor) -> QualitySources:
    """Where ``eval.methods`` get their scores (the trained model, other quality models, the
    labels table, blind label methods)."""
    return QualitySources(
        methods=[str(m) for m in cfg.eval.methods],
        model_path=Path(cfg.paths.models) / QUALITY_ONNX,
        quality_models=plain_container(cfg.eval.quality_models or {}),
        label_frs=fr_entries(cfg, "label.fr_models"),
        label_params=label_params(cfg),
        seed=int(cfg.label.seed),
        fr_defaults=fr_defaults(cfg),
        extractor=runner,
        cache_dir=Path(cfg.paths.cache) / QUALITY_SCORES,
    )


def train_job(cfg: DictConfig) -> TrainJob:
    """The ``model``, ``trainer`` and ``train`` groups (with the validation FR model: the first
    of ``label.fr_models``) as a ``TrainJob``."""
    return TrainJob(
        model=plain_container(cfg.model),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        settings=typed(cfg.train, TrainSettings),
        prepared_dir=Path(cfg.paths.prepared),
        labels_path=Path(cfg.paths.labels) / LABELS,
        models_dir=Path(cfg.paths.models),
        metrics_dir=Path(cfg.paths.metrics),
        validation_fr=next(iter(fr_entries(cfg, "label.fr_models").values())),
        fmr=float(cfg.eval.fmr),
        val_limit=float(cfg.eval.discard_limits[0]),
    )
