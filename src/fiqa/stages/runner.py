"""Running a stage: the composed config checked and typed once (``Settings``), the stage's
outputs locked, its ``run`` called with the settings."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterable, Iterator

from omegaconf import DictConfig

from fiqa.config.schemas import PathsSettings, Settings
from fiqa.config.validate import load_settings
from fiqa.core.lock import LockHeldError, output_lock
from fiqa.stages import STAGES, StageError

log = logging.getLogger(__name__)


def output_dirs(stage: str, paths: PathsSettings) -> list[str]:
    """The output directories of ``stage`` (its ``STAGES[stage].outs`` paths)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return [str(getattr(paths, key)) for key in STAGES[stage].outs]


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


def start_up(cfg: DictConfig) -> Settings:
    """What every entry point does first with its composed config: the environment's defaults
    (no update checks, quiet OpenCV), then the config checked and typed (``load_settings``),
    before any model or image loads.

    Raises:
        ConfigError: A key of ``cfg`` is missing, mistyped or out of range.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    return load_settings(cfg)


def run_stage(stage: str, cfg: DictConfig) -> dict[str, float]:
    """Check and type a composed config, then run ``stage`` with its settings, holding its
    outputs' locks. What the stage reads of the settings are the keys its outputs depend on
    (``STAGES[stage].params``) and ``fiqa.stages.RUNTIME_KEYS``.

    Raises:
        ConfigError: A key of ``cfg`` is missing, mistyped or out of range.
        StageError: Another process runs the stage on the same outputs (or the stage fails).
    """
    settings = start_up(cfg)
    with stage_lock(stage, output_dirs(stage, settings.paths)):
        # imported now: stages pull in heavy libraries
        result = importlib.import_module(f"fiqa.stages.{stage}").run(settings)
    log.info("%s finished: %s", stage, {k: round(v, 4) for k, v in result.items()})
    return result
