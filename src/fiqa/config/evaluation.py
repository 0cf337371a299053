"""The evaluate stage's sets and quality sources from the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fiqa.config.compose import config_dir
from fiqa.config.extraction import fr_defaults, fr_entries
from fiqa.config.labels import label_settings
from fiqa.config.typed import ConfigError, typed
from fiqa.core.artifacts import QUALITY_CHECKPOINT, QUALITY_ONNX, QUALITY_SCORES
from fiqa.core.containers import plain_container
from fiqa.data.face_pipeline import FaceAligner
from fiqa.data.preparation import PrepareSettings
from fiqa.eval.qualities import QualitySources
from fiqa.eval.sets import EvalSet, load_eval_sets
from fiqa.extract import Extractor


def aligner_factory(cfg: DictConfig) -> Callable[[bool], FaceAligner]:
    """``pre_aligned -> FaceAligner`` with ``prepare``'s alignment settings (external
    benchmarks are aligned the way the prepared set was)."""
    return typed(cfg.prepare, PrepareSettings).aligner


def benchmark_spec(entry: Any, key: str) -> dict[str, Any]:
    """A benchmark entry (``eval.benchmarks`` item, ``study.benchmarks`` item) with its format's
    keys from ``conf/eval/benchmark/<format>.yaml``: a value is stated once, in that file.

    Raises:
        ConfigError: For an unknown format or a key the format needs and the entry lacks,
            naming ``key``.
    """
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


def benchmark_specs(cfg: DictConfig) -> list[dict[str, Any]]:
    """``eval.benchmark`` and the ``eval.benchmarks``, each complete (``benchmark_spec``)."""
    entries = [("eval.benchmark", cfg.eval.benchmark)]
    entries += [(f"eval.benchmarks[{i}]", b) for i, b in enumerate(cfg.eval.benchmarks)]
    return [benchmark_spec(entry, key) for key, entry in entries]


def eval_sets(cfg: DictConfig) -> list[EvalSet]:
    """The evaluation sets of ``eval.benchmark`` and ``eval.benchmarks``."""
    specs = benchmark_specs(cfg)
    return load_eval_sets(specs, prepared_dir=cfg.paths.prepared, labels_dir=cfg.paths.labels,
                          data_name=str(cfg.data.name), aligner=aligner_factory(cfg))  # fmt: skip


def quality_sources(cfg: DictConfig, runner: Extractor) -> QualitySources:
    """Where ``eval.methods`` get their scores (the trained model, other quality models, the
    labels table, blind label methods). The trained model is its ONNX file, or its checkpoint
    beside it when that shares its frozen trunk with its FR network (``fiqa.quality.trunk``)."""
    models = Path(cfg.paths.models)
    return QualitySources(
        methods=[str(m) for m in cfg.eval.methods],
        model_path=models / QUALITY_ONNX,
        quality_models=plain_container(cfg.eval.quality_models or {}),
        label_frs=fr_entries(cfg, "label.fr_models"),
        label_settings=label_settings(cfg),
        seed=int(cfg.label.seed),
        fr_defaults=fr_defaults(cfg),
        extractor=runner,
        cache_dir=Path(cfg.paths.cache) / QUALITY_SCORES,
        model_checkpoint=models / QUALITY_CHECKPOINT,
    )
