"""label: embed every aligned face with the FR models, compute quality pseudo-labels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fiqa.atomic import atomic_dir, write_json_atomic
from fiqa.data.prepared import PreparedFaces
from fiqa.extract import FaceSource, Request
from fiqa.extract.configured import extract_outputs, fr_entries
from fiqa.fr import load_fr_model
from fiqa.label.correction import ediffiqa_correct
from fiqa.label.methods import METHODS, RANGES, LabelContext, compute_method, extraction_request
from fiqa.label.report import check_labels, label_report, write_label_figures
from fiqa.provenance import code_version
from fiqa.stages import StageError
from fiqa.tracking import stage_run

log = logging.getLogger(__name__)

LABELS = "labels.parquet"


def run(cfg: DictConfig) -> dict[str, float]:
    """Write ``paths.labels``: labels.parquet, labels.json (provenance), report.json, embeddings."""
    lab = cfg.label
    methods = [m for m in METHODS if lab.methods.get(m) is not None]
    if lab.target not in methods:
        raise StageError(f"label.target={lab.target!r} is not among the computed methods {methods}")
    prepared = PreparedFaces(cfg.paths.prepared)
    manifest = prepared.manifest
    entries = fr_entries(cfg, lab.fr_models, "label.fr_models")
    models = {name: load_fr_model(fr) for name, fr in entries.items()}
    ctx = LabelContext(cfg, prepared)
    try:
        request = extraction_request(cfg, methods)
    except ValueError as err:
        raise StageError(str(err)) from err
    source = FaceSource.from_prepared(prepared)
    for name, model in models.items():  # every rank of a DDP run takes part here ...
        wanted = request if model.info.white_box else Request()  # black boxes only embed
        if wanted is not request and request != Request():
            log.warning("%s is a black box: only its embeddings are used for labels", name)
        ctx.outputs[name] = extract_outputs(cfg, model, entries[name], source, wanted)
    if rank_zero_only.rank != 0:  # ... and only rank 0 computes and writes the labels
        return {}

    with stage_run(cfg, "label") as run_, atomic_dir(Path(cfg.paths.labels)) as tmp:
        keep = ["sample_id", "path", "identity", "split"]
        keep += [c for c in ("degradation", "severity") if c in manifest.columns]
        table = manifest[keep].copy()
        ranges = {}
        for method in methods:
            try:
                columns = compute_method(ctx, method)
            except ValueError as err:
                raise StageError(f"label.methods.{method}: {err}") from err
            for column, values in columns.items():
                table[column], ranges[column] = values, RANGES[method]
        if "fused" in methods and lab.methods.fused.how == "none":
            ranges["fused"] = (-np.inf, np.inf)
        table["quality"] = table[lab.target]
        ranges["quality"] = ranges[lab.target]
        if lab.correction == "ediffiqa":
            first = next(iter(ctx.outputs.values()))["embedding"]
            table["quality"] = ediffiqa_correct(
                table[lab.target].to_numpy(),
                first,
                ctx.identities,
                eps=lab.ediffiqa.eps,
                top=lab.ediffiqa.top,
            )
            ranges["quality"] = (0.0, 1.0)
        check_labels(table, ranges, set(manifest["identity"]))

        provenance = {
            "target": lab.target,
            "correction": lab.correction,
            "methods": OmegaConf.to_container(lab.methods, resolve=True),
            "fr_models": {
                name: {
                    "weights": m.info.weights_path,
                    "sha256": m.info.weights_sha256,
                    "template": m.info.template,
                }
                for name, m in models.items()
            },
            "template": str(manifest["template"].iloc[0]),
            "seed": int(lab.seed),
            **code_version(),
        }
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata(
            {
                **(arrow.schema.metadata or {}),
                b"fiqa.provenance": OmegaConf.to_yaml(provenance).encode(),
            }
        )
        pq.write_table(arrow, tmp / LABELS)
        write_json_atomic(tmp / "labels.json", provenance)
        report = label_report(table, methods)
        write_json_atomic(tmp / "report.json", report)
        figures = write_label_figures(table, methods, tmp / "report")

        summary = {f"label/{m}_mean": report["methods"][m]["mean"] for m in methods}
        for m, rho in report.get("spearman_vs_severity", {}).items():
            summary[f"label/{m}_spearman_vs_severity"] = rho
        summary["label/samples"] = float(len(table))
        if run_ is not None:
            import wandb

            run_.summary.update(summary)
            for m in methods:
                run_.log({f"label/{m}_hist": wandb.Histogram(table[m].to_numpy())})
            run_.log({"label/table": wandb.Table(dataframe=table.drop(columns=["split"]))})
            run_.log({f"label/{p.stem}": wandb.Image(str(p)) for p in figures})
    return summary
