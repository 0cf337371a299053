"""prepare: raw dataset -> aligned faces in shards + manifest + failures table; resumable
(``fiqa.data.preparation``)."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fiqa.config.typed import register_templates, typed
from fiqa.core.grids import face_grid
from fiqa.data.face_store import PreparedFaces
from fiqa.data.preparation import PreparationError, PrepareSettings, prepare_faces
from fiqa.data.sources import read_source
from fiqa.stages import StageError
from fiqa.tracking import tracked_run


def run(cfg: DictConfig) -> dict[str, float]:
    """Detect and align every image of ``data.root``; write ``paths.prepared``."""
    register_templates(cfg)
    settings = typed(cfg.prepare, PrepareSettings)
    try:
        source = read_source(cfg.data)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"prepare: {err}") from err
    with tracked_run(cfg, "prepare") as tracking:
        try:
            summary = prepare_faces(
                source, settings, cfg.paths.prepared, OmegaConf.to_yaml(cfg.data)
            )
        except PreparationError as err:
            raise StageError(f"prepare {cfg.data.root} -> {cfg.paths.prepared}: {err}") from err
        if tracking.wandb is not None:
            import wandb

            prepared = PreparedFaces(cfg.paths.prepared)
            tracking.wandb.summary.update(summary)
            tracking.wandb.log({"prepare/failures": wandb.Table(dataframe=prepared.failures)})
            preview = prepared.faces(np.arange(min(32, len(prepared))))
            tracking.wandb.log({"prepare/aligned_faces": wandb.Image(face_grid(preview))})
    return summary
