"""The labels table of a prepared set: every requested method, the target, provenance.

``extract_for_labels`` runs the FR models (every rank of a DDP run takes part);
``build_labels`` computes the method columns, the eDifFIQA-corrected columns asked for
(``<method>+ediffiqa``), the ``quality`` target, and checks them; ``write_labels`` writes the labels directory atomically:

    labels.parquet   sample_id, path, identity, split, [degradation, severity], one column per
                     method (and per method@model) and corrected column, quality; provenance in
                     the schema metadata
    labels.json      provenance: target and the settings it depends on, every method's settings,
                     corrected columns, FR models (weights sha256), seed,
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
from fiqa.data.face_store import PreparedFaces
from fiqa.extract import Extractor, FaceSource, FREntry
from fiqa.label.compute import MethodOutputs, method_columns, method_outputs
from fiqa.label.context import LabelContext
from fiqa.label.correction import (
    EdiffiqaSettings,
    corrected_column,
    ediffiqa_correct_labelled,
    split_column,
)
from fiqa.label.registry import METHODS, dependencies, get_method
from fiqa.label.report import check_label_values, label_report, write_label_figures

MANIFEST_COLUMNS = ("sample_id", "path", "identity", "split")
DEMO_COLUMNS = ("degradation", "severity")  # kept when the dataset records them


@dataclass(frozen=True)
class LabelJob:
    """What to label with (the ``label`` config group, typed).

    Attributes:
        target: The column that becomes ``quality``: a method, or a method's eDifFIQA-corrected
            column ``<method>+ediffiqa`` (``fiqa.label.correction``).
        compute: Columns computed besides the target (methods or corrected columns).
        params: Settings of every method, by name.
        fr_models: ``label.fr_models``: name -> entry.
        fr_defaults: Batch size and flip of entries that leave them out (the ``fr`` group).
        seed: Seed of every random draw (SER-FIQ masks, SDD-FIQA samples, FaceQAN noise).
        ediffiqa: Settings of the corrected columns.
    """

    target: str
    compute: tuple[str, ...]
    params: Mapping[str, Any]
    fr_models: Mapping[str, FREntry]
    fr_defaults: FREntry
    seed: int
    ediffiqa: EdiffiqaSettings

    def __post_init__(self) -> None:
        for column in (self.target, *self.compute):
            get_method(split_column(column)[0])
        if not self.fr_models:
            raise ValueError("label.fr_models is empty: give at least one FR model")
        _ = self.methods  # every column another method reads is a method

    @property
    def methods(self) -> list[str]:
        """The methods to compute, in registry order: those of the target and of ``compute``
        and the methods their columns read (``fused``'s weighted columns)."""
        wanted: set[str] = set()
        for column in (self.target, *self.compute):
            wanted.update(dependencies(split_column(column)[0], self.params))
        return [name for name in METHODS if name in wanted]

    @property
    def corrected(self) -> list[str]:
        """The eDifFIQA-corrected columns to add, in their base methods' order."""
        names = {c for c in (self.target, *self.compute) if split_column(c)[1]}
        return [corrected_column(m) for m in self.methods if corrected_column(m) in names]

    @property
    def columns(self) -> list[str]:
        """Every label column the table gets (before ``quality``), reported and checked."""
        return [*self.methods, *self.corrected]


def target_settings(job: LabelJob) -> dict[str, Any]:
    """The settings the target's labels depend on: those of every method it reads, by name, and
    ``ediffiqa`` for a corrected target. ``labels.json`` records them (``target_settings``), so
    that ``train`` can check that labels are what its config asks for without the methods'
    code."""
    base, is_corrected = split_column(job.target)
    settings = {m: asdict(job.params[m]) for m in dependencies(base, job.params)}
    return settings | ({"ediffiqa": asdict(job.ediffiqa)} if is_corrected else {})


def _correction_record(base: str, job: LabelJob) -> dict[str, Any]:
    return {"base": base, **asdict(job.ediffiqa)}


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
    for column in job.corrected:
        base = split_column(column)[0]
        table[column], ranges[column] = corrected_values(table[base], job, ctx, outputs), (0.0, 1.0)
        if base in unlabelled:  # a sample without a base label has no corrected one
            unlabelled[column] = unlabelled[base]
    table["quality"], ranges["quality"] = table[job.target], ranges[job.target]
    if job.target in unlabelled:
        unlabelled["quality"] = unlabelled[job.target]
    check_label_values(table, ranges, set(manifest["identity"]), unlabelled)
    provenance = {
        "target": job.target,
        "target_settings": target_settings(job),
        "methods": {name: asdict(job.params[name]) for name in job.methods},
        "corrected": {c: _correction_record(split_column(c)[0], job) for c in job.corrected},
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
    return Labels(table, job.columns, provenance)


def corrected_values(
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
