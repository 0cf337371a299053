"""The labels table of a prepared set: every requested method, the target, provenance.

``extract_for_labels`` runs the FR models (every rank of a DDP run takes part);
``build_labels`` computes the method columns, the ``quality`` target (optionally corrected the
eDifFIQA way) and checks them; ``write_labels`` writes the labels directory atomically:

    labels.parquet   sample_id, path, identity, split, [degradation, severity], one column per
                     method (and per method@model), quality; provenance in the schema metadata
    labels.json      provenance: target, correction, settings, FR models (weights sha256), seed,
                     code version, and the sha256 of the manifest it was made from (``inputs``)
    report.json      distributions, agreement between methods (and with the demo's severity)
    report/*.png     the same as figures
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from fiqa.core.artifacts import LABEL_FIGURES, LABEL_REPORT, LABELS, LABELS_PROVENANCE, MANIFEST
from fiqa.core.atomic import atomic_dir, write_json_atomic
from fiqa.core.lineage import input_hashes
from fiqa.core.provenance import code_version, portable_path
from fiqa.data.prepared import PreparedFaces
from fiqa.extract import Extractor, FaceSource, FREntry
from fiqa.label.compute import MethodOutputs, method_columns, method_outputs
from fiqa.label.context import LabelContext
from fiqa.label.correction import CORRECTIONS, EdiffiqaParams, ediffiqa_correct_labelled
from fiqa.label.registry import METHODS, get_method
from fiqa.label.report import check_labels, label_report, write_label_figures

MANIFEST_COLUMNS = ("sample_id", "path", "identity", "split")
DEMO_COLUMNS = ("degradation", "severity")  # kept when the dataset records them


@dataclass(frozen=True)
class LabelJob:
    """What to label with (the ``label`` config group, typed).

    Attributes:
        target: The method whose column becomes ``quality``.
        compute: Methods computed besides the target.
        params: Settings of every method, by name.
        fr_models: ``label.fr_models``: name -> entry.
        fr_defaults: Batch size and flip of entries that leave them out (the ``fr`` group).
        seed: Seed of every random draw (SER-FIQ masks, SDD-FIQA samples, FaceQAN noise).
        correction: ``none`` or ``ediffiqa`` (applied to the target).
        ediffiqa: The correction's settings.
    """

    target: str
    compute: tuple[str, ...]
    params: Mapping[str, Any]
    fr_models: Mapping[str, FREntry]
    fr_defaults: FREntry
    seed: int
    correction: str
    ediffiqa: EdiffiqaParams

    def __post_init__(self) -> None:
        for name in (self.target, *self.compute):
            get_method(name)
        if self.correction not in CORRECTIONS:
            raise ValueError(f"label.correction={self.correction!r}; choose one of {CORRECTIONS}")
        if not self.fr_models:
            raise ValueError("label.fr_models is empty: give at least one FR model")

    @property
    def methods(self) -> list[str]:
        """The methods to compute, target included, in registry order."""
        wanted = {self.target, *self.compute}
        return [name for name in METHODS if name in wanted]


@dataclass
class Labels:
    """A computed labels table, its value ranges and provenance."""

    table: pd.DataFrame
    methods: list[str]
    provenance: dict[str, Any]


def extract_for_labels(
    job: LabelJob, prepared: PreparedFaces, extractor: Extractor
) -> tuple[LabelContext, MethodOutputs]:
    """Every FR output the job's methods read (cached; on every rank of a DDP run)."""
    ctx = LabelContext.of_prepared(prepared, job.params, job.seed)
    methods = [METHODS[name] for name in job.methods]
    outputs = method_outputs(methods, job.fr_models, FaceSource.from_prepared(prepared), ctx,
                             extractor, job.fr_defaults)  # fmt: skip
    return ctx, outputs


def build_labels(
    job: LabelJob,
    prepared: PreparedFaces,
    ctx: LabelContext,
    outputs: MethodOutputs,
    extractor: Extractor,
) -> Labels:
    """The labels table: method columns, ``quality``, all checked (finite, in range, no
    identity dropped).

    Raises:
        ValueError: Naming the method's config key (``label.methods.<name>: ...``) or the column.
    """
    manifest = prepared.manifest
    keep = [*MANIFEST_COLUMNS, *(c for c in DEMO_COLUMNS if c in manifest.columns)]
    table = manifest[keep].copy()
    ranges: dict[str, tuple[float, float]] = {}
    unlabelled: dict[str, np.ndarray] = {}  # identity-based: no label for single-image identities
    for name in job.methods:
        method = METHODS[name]
        columns, _ = method_columns(method, ctx, outputs)
        for column, values in columns.items():
            table[column], ranges[column] = values, method.range_for(job.params[name])
            if not method.blind:
                unlabelled[column] = ctx.singletons
    table["quality"], ranges["quality"] = table[job.target], ranges[job.target]
    if job.target in unlabelled:
        unlabelled["quality"] = unlabelled[job.target]
    if job.correction == "ediffiqa":
        table["quality"] = corrected(table[job.target], job, ctx, outputs)
        ranges["quality"] = (0.0, 1.0)
    check_labels(table, ranges, set(manifest["identity"]), unlabelled)
    provenance = {
        "target": job.target,
        "correction": job.correction,
        "methods": {name: asdict(job.params[name]) for name in job.methods},
        "fr_models": {
            name: {
                "weights": portable_path(info.weights_path),
                "sha256": info.weights_sha256,
                "template": info.template,
            }
            for name, info in ((n, extractor.model(fr).info) for n, fr in job.fr_models.items())
        },
        "template": prepared.template,
        "seed": int(job.seed),
        "inputs": input_hashes({"manifest": prepared.directory / MANIFEST}),  # fiqa.core.lineage
        **code_version(),
    }
    return Labels(table, job.methods, provenance)


def corrected(
    values: pd.Series, job: LabelJob, ctx: LabelContext, outputs: MethodOutputs
) -> np.ndarray:
    """The eDifFIQA correction of a label column, centres from the first label FR model's
    embeddings; samples without a label stay without."""
    first = outputs.per_model[next(iter(job.fr_models))]["embedding"]
    return ediffiqa_correct_labelled(values.to_numpy(), first, ctx.identities, job.ediffiqa)


def write_labels(labels: Labels, directory: str | Path) -> tuple[dict, list[Path]]:
    """Write the labels directory in one rename; returns the report and the figure paths."""
    with atomic_dir(Path(directory)) as tmp:
        arrow = pa.Table.from_pandas(labels.table, preserve_index=False)
        metadata = OmegaConf.to_yaml(labels.provenance).encode()
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), b"fiqa.provenance": metadata}
        )
        pq.write_table(arrow, tmp / LABELS)
        write_json_atomic(tmp / LABELS_PROVENANCE, labels.provenance)
        report = label_report(labels.table, labels.methods)
        write_json_atomic(tmp / LABEL_REPORT, report)
        figures = write_label_figures(labels.table, labels.methods, tmp / LABEL_FIGURES)
    final = Path(directory) / LABEL_FIGURES
    return report, [final / p.name for p in figures]


def label_summary(labels: Labels, report: dict) -> dict[str, float]:
    """Stage metrics: mean of each method, Spearman vs the demo's severity, sample count."""
    summary = {f"label/{m}_mean": report["methods"][m]["mean"] for m in labels.methods}
    for m, rho in report.get("spearman_vs_severity", {}).items():
        summary[f"label/{m}_spearman_vs_severity"] = rho
    summary["label/samples"] = float(len(labels.table))
    return summary


def read_labels(directory: str | Path) -> pd.DataFrame:
    """The labels table of a labels directory."""
    path = Path(directory) / LABELS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the label stage first")
    return pd.read_parquet(path)
