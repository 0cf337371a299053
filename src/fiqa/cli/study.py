"""``fiqa study [hydra overrides...]``: write a study's DVC pipeline (``fiqa.pipeline.study``)
and run it on the engines users already have.

1. Compose and validate the config (the stages' start-up), write ``paths.studies/<name>/``
   ``params.yaml`` and ``dvc.yaml``, holding the lock of the study folder until the end.
2. ``dvc repro`` of the label stages (and the prepare and ddpm stages before them).
3. The trainings, one Hydra multirun job per method, on the launcher of the command line:
   ``hydra/launcher=basic`` (the default: one after the other), ``joblib`` (processes on this
   machine: ``hydra.launcher.n_jobs=2``) or ``slurm`` (submitit jobs on a cluster). Each job is
   ``dvc repro --single-item`` of its ``train-<method>`` stage, so DVC skips a training whose
   inputs are unchanged and records each one when it finishes; DVC runs stages of one
   repository side by side. Each job writes ``study_job.json`` (stage, host, pid, start, end)
   into its Hydra job folder.
4. ``dvc repro`` of the rest: the evaluation; then ``study.json``, the small record of the
   result that the documentation's tables are made from (``fiqa.eval.study_summary``).

A killed study continues where it stopped when run again (DVC reruns what ``dvc.lock`` does
not record as done); ``dvc repro <study>/dvc.yaml`` runs it without fiqa's help.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fiqa.cli.errors import reported_errors, verbose_errors
from fiqa.config import config_dir
from fiqa.config.typed import ConfigError
from fiqa.core.atomic import write_json_atomic
from fiqa.eval.study_summary import write_study_summary
from fiqa.pipeline.study import Study, reproduce, study_pipeline, write_study
from fiqa.stages.runner import stage_lock, start_up

PROG = "fiqa study"
JOB_RECORD = "study_job.json"
# The command line's Hydra overrides that choose and configure the launcher of the trainings.
LAUNCHER_OVERRIDES = ("hydra/launcher=", "hydra.launcher.", "hydra.sweep.", "hydra.job.env_set")


def run_study_app(argv: list[str]) -> None:
    """``fiqa study`` with ``argv`` as its Hydra command line (module docstring)."""
    planned: list[tuple[Study, list[str]]] = []
    with contextlib.ExitStack() as held:

        @hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
        def _plan(cfg: DictConfig) -> None:
            with reported_errors(PROG, "study"):
                if HydraConfig.get().mode == RunMode.MULTIRUN:
                    raise ConfigError("fiqa study runs one study: its trainings fan out through "
                                      "hydra/launcher=..., without -m")  # fmt: skip
                start_up(cfg)  # the checks every stage makes first
                study = study_pipeline(cfg, Path.cwd())
                held.enter_context(stage_lock("study", [study.directory]))
                write_study(study)
                overrides = [str(o) for o in HydraConfig.get().overrides.hydra]
                planned.append((study, [o for o in overrides if o.startswith(LAUNCHER_OVERRIDES)]))

        sys.argv = [PROG, *verbose_errors(argv)]
        _plan()
        if not planned:  # --cfg, --help, ...
            return
        study, launcher = planned[0]
        with reported_errors(PROG, "study"):
            reproduce(study, study.stage_names("label"))
        launch_trainings(study, launcher)
        with reported_errors(PROG, "study"):
            reproduce(study)
            summary = write_study_summary(study.directory)
        logging.getLogger("fiqa").info(
            "%s: the study's result. Its tables and headline into pages with their markers "
            "(docs/study.md, README.md): fiqa study-tables %s --write docs/study.md README.md "
            "(commit them with it)", summary, summary)  # fmt: skip


def launch_trainings(study: Study, launcher: list[str]) -> None:
    """Every ``train-<method>`` stage of ``study`` as one job of a Hydra multirun on the
    ``launcher`` overrides; each job reproduces its stage alone (module docstring)."""

    @hydra.main(config_path=str(config_dir()), config_name=None, version_base="1.3")
    def _train(cfg: DictConfig) -> None:
        with reported_errors(PROG, "study"):
            start = time.time()
            reproduce(study, [str(cfg.study_stage)], single_item=True)
            record = {"stage": str(cfg.study_stage), "host": socket.gethostname(),
                      "pid": os.getpid(), "start": start, "end": time.time()}  # fmt: skip
            write_json_atomic(Path(HydraConfig.get().runtime.output_dir) / JOB_RECORD, record)

    stages = ",".join(study.stage_names("train"))
    sys.argv = [PROG, "--multirun", f"+study_stage={stages}", *launcher]
    _train()
