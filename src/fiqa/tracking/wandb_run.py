"""One W&B run per stage execution, offline unless told otherwise.

A run is named by what it is (``run_name``): ``<experiment>-<stage>[-<label target>]
[-<benchmarks>][-job<N>]``, e.g. ``faceqnet-evaluate-faceqnet-demo_val`` or
``demo-train-serfiq-job3``, in the group ``<experiment>``. The Hydra command line's overrides are
its tags (``label.target=serfiq``) and its config's ``overrides``. A stage that raises ends its
run as failed (exit code 1, the error in its summary under ``error``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the settings are built above this layer, by the stage runner
    from fiqa.config.schemas import Settings

log = logging.getLogger(__name__)

LOGGER_BACKENDS = ("wandb", "csv", "none")  # logger.backend
TARGETED_STAGES = ("label", "train", "evaluate")  # stages whose outputs depend on label.target
MAX_TAG_LENGTH = 64  # W&B's limit
UNTAGGED_KEYS = ("paths.", "logger.", "hydra.")  # where outputs go and tracking: not what a run is


def wandb_mode(settings: Settings) -> str:
    """The W&B mode: ``WANDB_MODE`` from the environment wins over ``logger.mode``."""
    if settings.logger.backend != "wandb":
        return "disabled"
    return os.environ.get("WANDB_MODE") or settings.logger.mode


def hydra_job() -> tuple[int | None, list[str]]:
    """The running Hydra app's multirun job number (None outside a multirun) and command-line
    overrides (``hydra.overrides.task``); ``(None, [])`` outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, []
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return (int(hydra_cfg.job.num) if multirun else None), overrides


def benchmark_names(settings: Settings) -> list[str]:
    """The evaluate stage's benchmarks (``eval.benchmark``, then ``eval.benchmarks``): each
    one's ``name``, else its loader's default (``<data.name>_<split>`` for a prepared split,
    the file or folder name otherwise, as ``fiqa.data.verification`` names them)."""
    specs = [settings.eval.benchmark, *settings.eval.benchmarks]
    return [_benchmark_name(spec, settings.data.name) for spec in specs]


def _benchmark_name(spec: Mapping[str, Any], data_name: str) -> str:
    if spec.get("name"):
        return str(spec["name"])
    fmt = spec.get("format")
    if fmt == "prepared":
        return f"{data_name}_{spec.get('split', 'val')}"
    if fmt == "bin":
        return Path(str(spec.get("path"))).stem
    if fmt == "table":
        return Path(str(spec.get("table"))).parent.name
    if fmt == "pairs_txt":
        return Path(str(spec.get("images_root"))).name
    return Path(str(spec.get("root"))).name


def run_name(settings: Settings, stage: str, job: int | None = None) -> str:
    """``<experiment>-<stage>``, then the label target (label, train, evaluate), the benchmarks
    (evaluate; ``a+b+c+2more`` beyond three) and ``job<N>`` in a Hydra multirun.

    Args:
        settings: The run's settings.
        stage: The stage.
        job: The Hydra multirun job number (``hydra_job``).
    """
    parts = [settings.experiment_name, stage]
    if stage in TARGETED_STAGES:
        parts.append(settings.label.target)
    if stage == "evaluate":
        names = benchmark_names(settings)
        parts.append("+".join(names[:3]) + (f"+{len(names) - 3}more" if len(names) > 3 else ""))
    if job is not None:
        parts.append(f"job{job}")
    return "-".join(parts)


def override_tags(overrides: list[str]) -> list[str]:
    """W&B tags from command-line overrides: those that say what the run is (not ``paths.*``,
    ``logger.*``), cut to W&B's 64 characters."""
    tags = [o for o in overrides if not o.lstrip("+~").startswith(UNTAGGED_KEYS)]
    cut = [t if len(t) <= MAX_TAG_LENGTH else t[: MAX_TAG_LENGTH - 3] + "..." for t in tags]
    return list(dict.fromkeys(cut))


def wandb_init_kwargs(settings: Settings, stage: str) -> dict[str, Any]:
    """Keyword arguments for ``wandb.init``: the run's name (``run_name``), group (the
    experiment), tags and config (the whole resolved config, with the command-line
    ``overrides``)."""
    job, overrides = hydra_job()
    return {
        "project": settings.logger.project,
        "entity": settings.logger.entity,
        "group": settings.experiment_name,
        "job_type": stage,
        "name": run_name(settings, stage, job),
        "tags": override_tags(overrides),
        "dir": str(Path(settings.paths.root).resolve()),
        "mode": wandb_mode(settings),
        "config": {**settings.resolved, "overrides": overrides},
    }


def finish_failed(run: Any, error: BaseException) -> None:
    """Finish the W&B ``run`` as failed: exit code 1 (state failed once synced), the error's
    type and message in its summary under ``error``."""
    run.summary["error"] = f"{type(error).__name__}: {error}"
    run.finish(exit_code=1)


@dataclass
class TrackedRun:
    """The tracking of one stage execution: its W&B run, and Lightning loggers writing to it.

    Attributes:
        wandb: The W&B run, or None (tracking off, or ``logger=csv``).
        settings: The run's settings.
    """

    wandb: Any | None
    settings: Settings

    def lightning_logger(self, prefix: str = "") -> Any:
        """A Lightning logger of this run: W&B (into ``wandb``, metrics prefixed with ``prefix``:
        both fits of model=distill log into one run), CSV (``logger=csv``), or none (False)."""
        from pytorch_lightning.loggers import CSVLogger, WandbLogger

        if self.wandb is not None:
            return WandbLogger(experiment=self.wandb, prefix=prefix, log_model=False)
        if self.settings.logger.backend == "csv":
            name = f"logs{'-' + prefix if prefix else ''}"
            return CSVLogger(save_dir=self.settings.paths.models, name=name)
        return False


@contextlib.contextmanager
def tracked_run(settings: Settings, stage: str) -> Iterator[TrackedRun]:
    """Open the W&B run of one execution of ``stage`` (none when tracking is off); always
    finish it, as failed when the body raises. Every stage, Lightning fits included
    (``TrackedRun.lightning_logger``), is tracked this one way.

    The run is finished on the way out, so a failed job in a multirun does not leave its run
    open and swallow the next job's logs.
    """
    if wandb_mode(settings) == "disabled":
        yield TrackedRun(None, settings)
        return
    import wandb

    run = wandb.init(**wandb_init_kwargs(settings, stage), reinit="finish_previous")
    try:
        yield TrackedRun(run, settings)
    except BaseException as err:
        finish_failed(run, err)
        raise
    finally:
        run.finish()  # a no-op after finish_failed
        log.info("W&B %s run of %s written under %s/wandb", run.settings.mode, stage,
                 settings.paths.root)  # fmt: skip
