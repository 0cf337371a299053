"""Running a stage: validate the composed config, lock the stage's outputs, call its ``run``."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterable, Iterator

from omegaconf import DictConfig, OmegaConf

from fiqa.config.validate import validate_config
from fiqa.core.lock import LockHeldError, output_lock
from fiqa.stages import STAGES, StageError

log = logging.getLogger(__name__)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def output_dirs(stage: str, cfg: DictConfig) -> list[str]:
    """The output directories of ``stage`` in ``cfg`` (its ``STAGES[stage].outs`` paths)."""
    _check_stage(stage)
    return [str(OmegaConf.select(cfg, f"paths.{key}")) for key in STAGES[stage].outs]


@contextlib.contextmanager
def stage_lock(name: str, directories: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """Hold the lock of each output directory (``fiqa.core.lock``) while ``fiqa <name>`` runs.

    Re-entrant within a process (a nested or repeated run of the same stage only counts);
    the locks are taken in sorted order, so two runs cannot each hold one the other waits for.

    Raises:
        StageError: At once, when another process holds one of them.
    """
    with contextlib.ExitStack() as stack:
        for directory in sorted({os.path.abspath(d) for d in directories}):
            try:
                stack.enter_context(output_lock(directory))
            except LockHeldError as err:
                pid = err.pid if err.pid is not None else "unknown"
                raise StageError(
                    f"another fiqa {name} is running (pid {pid}) and writing {directory}: wait "
                    f"for it to finish or stop it (lock file {err.path})"
                ) from None
        yield


def start_up(cfg: DictConfig) -> None:
    """What every entry point does first with its composed config: the environment's defaults
    (no update checks, quiet OpenCV) and ``validate_config``, before any model or image loads.

    Raises:
        ConfigError: A key of ``cfg`` is missing, mistyped or out of range.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    validate_config(cfg)  # reads every key: done before the stage's own reads


def run_stage(stage: str, cfg: DictConfig) -> dict[str, float]:
    """Validate a composed config, then run ``stage`` on it holding its outputs' locks.

    Raises:
        ConfigError: A key of ``cfg`` is missing, mistyped or out of range.
        StageError: Another process runs the stage on the same outputs (or the stage fails).
    """
    start_up(cfg)
    with stage_lock(stage, output_dirs(stage, cfg)):
        # imported now: stages pull in heavy libraries; what a stage reads of cfg are the keys
        # its outputs depend on (STAGES[stage].params) and fiqa.stages.RUNTIME_KEYS
        result = importlib.import_module(f"fiqa.stages.{stage}").run(cfg)
    log.info("%s finished: %s", stage, {k: round(v, 4) for k, v in result.items()})
    return result
