"""The study's spec from the config (``fiqa study``): the ``data`` and ``prepare`` groups for its
training set, ``label`` for its labels, ``model`` / ``trainer`` / ``train`` for its regressors,
``eval`` for the EDC settings, and the ``study`` group for what it compares."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fiqa.config.diffusion import ddpm_settings, reads_pipeline_ddpm
from fiqa.config.evaluation import aligner_factory
from fiqa.config.extraction import extractor, fr_entries
from fiqa.config.labels import label_job
from fiqa.config.training import train_job
from fiqa.config.typed import ConfigError, typed
from fiqa.core.containers import plain_container
from fiqa.data.preparation import PrepareSettings
from fiqa.data.sources import read_source
from fiqa.label.diffiqa import METHOD as DDPM_METHOD
from fiqa.study.run import CORRECTED, StudySpec, study_methods


def study_spec(cfg: DictConfig) -> StudySpec:
    """The study of ``cfg.study`` in ``paths.studies/<study.name>``.

    Raises:
        ConfigError: For an unknown study method.
        FileNotFoundError, ValueError: From reading the training set.
    """
    s, e = cfg.study, cfg.eval
    try:
        methods = study_methods([str(m) for m in s.methods])
    except ValueError as err:
        raise ConfigError(f"study.methods: {err}") from None
    reads_ddpm = DDPM_METHOD in {m.removesuffix(CORRECTED) for m in methods} | set(s.blind)
    return StudySpec(
        directory=Path(cfg.paths.studies) / str(s.name),
        source=read_source(cfg.data),
        data=OmegaConf.to_yaml(cfg.data),
        data_name=str(cfg.data.name),
        prepare=typed(cfg.prepare, PrepareSettings),
        label=label_job(cfg),
        methods=methods,
        train=train_job(cfg),
        benchmarks=[plain_container(b) for b in s.benchmarks],
        fr_models=fr_entries(cfg, "study.fr_models"),
        blind=[str(m) for m in s.blind],
        fmrs=list(dict.fromkeys([float(e.fmr), *map(float, e.extra_fmrs)])),
        limits=[float(x) for x in e.discard_limits],
        how=str(e.pair_quality),
        aligner=aligner_factory(cfg),
        extractor=extractor(cfg),
        ddpm=ddpm_settings(cfg) if reads_ddpm and reads_pipeline_ddpm(cfg) else None,
    )
