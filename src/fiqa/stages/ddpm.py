"""ddpm: train the face DDPM of DifFIQA on the prepared faces (``fiqa.diffusion.fit``), when a
configured method uses the pipeline's DDPM; otherwise record that none was needed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fiqa.config.diffusion import ddpm_job, pipeline_ddpm_users
from fiqa.core.artifacts import DDPM_SAMPLES
from fiqa.diffusion.fit import DDPMTrainingError, fit_ddpm, write_not_needed
from fiqa.stages import StageError
from fiqa.tracking import tracked_run

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings

log = logging.getLogger(__name__)


def run(settings: Settings) -> dict[str, float]:
    """Write ``paths.ddpm``: the DDPM (a DDPMPipeline folder), ddpm.json and samples.png, or
    only ddpm.json saying why no DDPM was needed."""
    job = ddpm_job(settings)
    users = pipeline_ddpm_users(settings)
    if not users:  # the record does not name the settings: the stages after it stay unchanged
        label = settings.label
        log.info("ddpm: nothing to train (label.target=%s, label.compute=%s, eval.methods=%s, "
                 "label.methods.diffiqa.ddpm=%s)", label.target, label.compute,
                 settings.eval.methods, label.methods.diffiqa.ddpm)  # fmt: skip
        write_not_needed(job.out_dir, "no configured method reads the pipeline's DDPM")
        return {"ddpm/trained": 0.0}
    log.info("ddpm: read by %s", ", ".join(users))
    with tracked_run(settings, "ddpm") as tracking:
        try:
            summary = fit_ddpm(job, tracking.lightning_logger())
        except DDPMTrainingError as err:
            raise StageError(f"ddpm: {err}") from err
        if tracking.wandb is not None and summary:
            import wandb

            tracking.wandb.log({"ddpm/samples": wandb.Image(str(job.out_dir / DDPM_SAMPLES))})
            tracking.wandb.summary.update(summary)
    return {"ddpm/trained": 1.0, **summary}
