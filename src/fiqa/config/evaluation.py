"""The evaluate stage's sets and quality sources from the config."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from fiqa.config.extraction import fr_defaults, fr_entries
from fiqa.config.labels import label_params
from fiqa.core.artifacts import QUALITY_CHECKPOINT, QUALITY_ONNX, QUALITY_SCORES
from fiqa.core.containers import plain_container
from fiqa.data.face_pipeline import FaceAligner
from fiqa.eval.qualities import QualitySources
from fiqa.eval.sets import EvalSet, load_eval_sets
from fiqa.extract import Extractor


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
    labels table, blind label methods). The trained model is its ONNX file, or its checkpoint
    beside it when that shares its frozen trunk with its FR network (``fiqa.quality.trunk``)."""
    models = Path(cfg.paths.models)
    return QualitySources(
        methods=[str(m) for m in cfg.eval.methods],
        model_path=models / QUALITY_ONNX,
        quality_models=plain_container(cfg.eval.quality_models or {}),
        label_frs=fr_entries(cfg, "label.fr_models"),
        label_params=label_params(cfg),
        seed=int(cfg.label.seed),
        fr_defaults=fr_defaults(cfg),
        extractor=runner,
        cache_dir=Path(cfg.paths.cache) / QUALITY_SCORES,
        model_checkpoint=models / QUALITY_CHECKPOINT,
    )
