"""label: embed every aligned face with the FR models, compute quality pseudo-labels
(``fiqa.label.table``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fiqa.config.extraction import extractor
from fiqa.config.labels import label_job
from fiqa.config.typed import register_templates
from fiqa.data.face_store import PreparedFaces
from fiqa.label.table import build_labels, extract_for_labels, label_summary, write_labels
from fiqa.stages import StageError
from fiqa.tracking import tracked_run

if TYPE_CHECKING:
    from fiqa.config.schemas import Settings


def run(settings: Settings) -> dict[str, float]:
    """Write ``paths.labels``: labels.parquet, labels.json (provenance), report.json, figures."""
    register_templates(settings.prepare.templates)
    try:
        job = label_job(settings)
    except ValueError as err:
        raise StageError(f"label: {err}") from err
    prepared = PreparedFaces(settings.paths.prepared)
    runner = extractor(settings)
    ctx, outputs = extract_for_labels(job, prepared, runner)  # every rank of a DDP run ...
    if rank_zero_only.rank != 0:  # ... and only rank 0 computes and writes the labels
        return {}
    with tracked_run(settings, "label") as tracking:
        try:
            labels = build_labels(job, prepared, ctx, outputs, runner)
        except ValueError as err:
            raise StageError(f"label: {err}") from err
        report, figures = write_labels(labels, settings.paths.labels)
        summary = label_summary(labels, report)
        run = tracking.wandb
        if run is not None:
            import wandb

            run.summary.update(summary)
            for m in labels.methods:
                run.log({f"label/{m}_hist": wandb.Histogram(labels.table[m].to_numpy())})
            run.log({"label/table": wandb.Table(dataframe=labels.table.drop(columns=["split"]))})
            run.log({f"label/{p.stem}": wandb.Image(str(p)) for p in figures})
    return summary
