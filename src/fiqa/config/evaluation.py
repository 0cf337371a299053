"""The evaluate stage's sets and quality sources from the settings, and complete benchmark
entries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from fiqa.config.compose import config_dir
from fiqa.config.extraction import label_frs
from fiqa.config.labels import label_settings
from fiqa.config.typed import ConfigError
from fiqa.core.artifacts import QUALITY_CHECKPOINT, QUALITY_ONNX, QUALITY_SCORES
from fiqa.core.containers import plain_container
from fiqa.eval.qualities import QualitySources
from fiqa.eval.sets import EvalSet, load_eval_sets
from fiqa.extract import Extractor

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def benchmark_spec(entry: Any, key: str) -> dict[str, Any]:
    """A benchmark entry (``eval.benchmarks`` item, ``study.benchmarks`` item) with its format's
    keys from ``conf/eval/benchmark/<format>.yaml``: a value is stated once, in that file.

    Raises:
        ConfigError: For an unknown format or a key the format needs and the entry lacks,
            naming ``key``.
    """
    if isinstance(entry, DictConfig):  # its interpolations resolve in its own config
        entry = OmegaConf.to_container(entry, resolve=True)
    fmt = entry.get("format")
    path = config_dir() / "eval" / "benchmark" / f"{fmt}.yaml"
    if not path.is_file():
        formats = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{key}.format={fmt!r}; choose one of {', '.join(formats)}")
    merged = OmegaConf.merge(OmegaConf.load(path), entry)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{key} ({fmt}): keys missing: {', '.join(missing)}")
    return plain_container(OmegaConf.to_container(merged, resolve=True))


def benchmark_specs(settings: Settings) -> list[dict[str, Any]]:
    """``eval.benchmark`` and the ``eval.benchmarks``, each complete (``benchmark_spec``)."""
    entries = [("eval.benchmark", settings.eval.benchmark)]
    entries += [(f"eval.benchmarks[{i}]", b) for i, b in enumerate(settings.eval.benchmarks)]
    return [benchmark_spec(entry, key) for key, entry in entries]


def eval_sets(settings: Settings) -> list[EvalSet]:
    """The evaluation sets of ``eval.benchmark`` and ``eval.benchmarks``; raw benchmark photos
    are aligned as ``prepare`` aligns (``PrepareSettings.aligner``)."""
    paths = settings.paths
    return load_eval_sets(benchmark_specs(settings), prepared_dir=paths.prepared,
                          labels_dir=paths.labels, data_name=settings.data.name,
                          aligner=settings.prepare.aligner, pairs=settings.eval.pairs,
                          cache_dir=paths.cache)  # fmt: skip


def quality_sources(settings: Settings, runner: Extractor) -> QualitySources:
    """Where ``eval.methods`` get their scores (the trained model, other quality models, the
    labels table, blind label methods). The trained model is its ONNX file, or its checkpoint
    beside it when that shares its frozen trunk with its FR network (``fiqa.quality.trunk``)."""
    models = Path(settings.paths.models)
    return QualitySources(
        methods=list(settings.eval.methods),
        model_path=models / QUALITY_ONNX,
        quality_models=dict(settings.eval.quality_models or {}),
        label_frs=label_frs(settings),
        label_settings=label_settings(settings),
        seed=settings.label.seed,
        fr_defaults=settings.fr,
        extractor=runner,
        cache_dir=Path(settings.paths.cache) / QUALITY_SCORES,
        model_checkpoint=models / QUALITY_CHECKPOINT,
    )
