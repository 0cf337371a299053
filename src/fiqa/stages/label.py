"""label: embed every aligned face with the FR models, compute quality pseudo-labels
(``fiqa.label.table``)."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fiqa.config.extraction import extractor
from fiqa.config.labels import label_job
from fiqa.config.typed import register_templates
from fiqa.data.face_store import PreparedFaces
from fiqa.label.table import build_labels, extract_for_labels, label_summary, write_labels
from fiqa.stages import StageError
from fiqa.tracking import tracked_run


def run(cfg: DictConfig) -> dict[str, float]:
    """Write ``paths.labels``: labels.parquet, labels.json (provenance), report.json, figures."""
    register_templates(cfg)
    try:
        job = label_job(cfg)
    except ValueError as err:
        raise StageError(f"label: {err}") from err
    prepared = PreparedFaces(cfg.paths.prepared)
    runner = extractor(cfg)
    ctx, outputs = extract_for_labels(job, prepared, runner)  # every rank of a DDP run ...
    if rank_zero_only.rank != 0:  # ... and only rank 0 computes and writes the labels
        return {}
    with tracked_run(cfg, "label") as tracking:
        try:
            labels = build_labels(job, prepared, ctx, outputs, runner)
        except ValueError as err:
            raise StageError(f"label: {err}") from err
        report, figures = write_labels(labels, cfg.paths.labels)
        summary = label_summary(labels, report)
        if tracking.wandb is not None:
            import wandb

            tracking.wandb.summary.update(summary)
            for m in labels.methods:
                tracking.wandb.log({f"label/{m}_hist": wandb.Histogram(labels.table[m].to_numpy())})
            tracking.wandb.log(
                {"label/table": wandb.Table(dataframe=labels.table.drop(columns=["split"]))}
            )
            tracking.wandb.log({f"label/{p.stem}": wandb.Image(str(p)) for p in figures})
    return summary
