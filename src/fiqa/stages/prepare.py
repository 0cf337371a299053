"""prepare: raw dataset -> aligned faces in shards + manifest + failures table; resumable
(``fiqa.data.preparation``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fiqa.config.typed import register_templates
from fiqa.core.grids import face_grid
from fiqa.data.face_store import PreparedFaces
from fiqa.data.preparation import PreparationError, prepare_faces
from fiqa.data.sources import read_source
from fiqa.stages import StageError
from fiqa.tracking import tracked_run

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def run(settings: Settings) -> dict[str, float]:
    """Detect and align every image of ``data.root``; write ``paths.prepared``."""
    register_templates(settings.prepare.templates)
    data, out = settings.data, settings.paths.prepared
    try:
        source = read_source(data)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"prepare: {err}") from err
    with tracked_run(settings, "prepare") as tracking:
        try:
            summary = prepare_faces(source, settings.prepare, out, data)
        except PreparationError as err:
            raise StageError(f"prepare {data.root} -> {out}: {err}") from err
        if tracking.wandb is not None:
            import wandb

            prepared = PreparedFaces(out)
            tracking.wandb.summary.update(summary)
            tracking.wandb.log({"prepare/failures": wandb.Table(dataframe=prepared.failures)})
            preview = prepared.faces(np.arange(min(32, len(prepared))))
            tracking.wandb.log({"prepare/aligned_faces": wandb.Image(face_grid(preview))})
    return summary
