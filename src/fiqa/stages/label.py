"""label: embed every aligned face with the FR models, compute quality pseudo-labels."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from fiqa.atomic import atomic_dir, write_json_atomic
from fiqa.data.prepared import PreparedFaces
from fiqa.fr import FRModel, load_fr_model
from fiqa.label.correction import ediffiqa_correct
from fiqa.label.crfiqa import crfiqa_scores
from fiqa.label.embeddings import embed_prepared, iter_face_chunks, save_embeddings
from fiqa.label.faceqnet import (
    faceqnet_scores,
    icao_proxy,
    references_from_list,
    select_reference_images,
)
from fiqa.label.fusion import fuse
from fiqa.label.report import check_labels, label_report
from fiqa.label.sddfiqa import sddfiqa_scores
from fiqa.label.serfiq import serfiq_collector
from fiqa.provenance import code_version
from fiqa.stages import StageError
from fiqa.tracking import stage_run

log = logging.getLogger(__name__)

LABELS = "labels.parquet"
# Expected value range of each method's raw score (checked on every run).
RANGES: dict[str, tuple[float, float]] = {
    "faceqnet": (0.0, 1.0),
    "serfiq": (0.0, 1.0),
    "crfiqa": (-np.inf, np.inf),  # CCS / (NNCCS + 1 + eps): finite, unbounded in principle
    "sddfiqa": (0.0, 100.0),
    "fused": (0.0, 1.0),  # with how=none: the weighted mean of the raw columns' ranges
}
METHODS = tuple(RANGES)


@dataclass
class LabelContext:
    """What every label method may use: the prepared set, FR models and their embeddings."""

    cfg: DictConfig
    prepared: PreparedFaces
    models: dict[str, FRModel]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    serfiq: dict[str, np.ndarray] = field(default_factory=dict)  # filled in the embedding pass
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # methods computed so far

    @property
    def identities(self) -> np.ndarray:
        return self.prepared.manifest["identity"].to_numpy()

    def per_model(self, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``fn(embeddings)`` averaged over the FR models of ``label.fr_models``."""
        return np.mean([fn(e) for e in self.embeddings.values()], axis=0)


def fr_config(cfg: DictConfig, name: str) -> DictConfig | str:
    """The FR model config for ``name``: ``cfg.fr`` when it is that model, else the name."""
    return cfg.fr if cfg.fr.name == name else name


def _faceqnet(ctx: LabelContext) -> np.ndarray:
    params = ctx.cfg.label.methods.faceqnet
    manifest = ctx.prepared.manifest
    if params.reference == "list":
        ref_list = pd.read_csv(params.reference_list)
        refs = references_from_list(manifest["identity"], manifest["path"], ref_list)
    elif params.reference == "manifest":  # e.g. data=vggface2 with data.references
        if "is_reference" not in manifest.columns:
            raise StageError(
                "label.methods.faceqnet.reference=manifest needs an is_reference column (data.references)"
            )
        ref_list = manifest.loc[
            manifest["is_reference"].fillna(False).astype(bool), ["identity", "path"]
        ]
        refs = references_from_list(manifest["identity"], manifest["path"], ref_list)
    elif params.reference == "proxy":
        landmarks = np.stack(manifest["landmarks"].to_numpy()).reshape(-1, 5, 2)
        proxy = pd.concat(
            [icao_proxy(faces, landmarks[rows]) for rows, faces in iter_face_chunks(ctx.prepared)],
            ignore_index=True,
        )
        refs = select_reference_images(manifest["identity"], proxy)
    else:
        raise StageError(
            f"label.methods.faceqnet.reference must be proxy|list|manifest, got {params.reference!r}"
        )
    return faceqnet_scores(list(ctx.embeddings.values()), refs)


def _crfiqa(ctx: LabelContext) -> np.ndarray:
    chunk_rows = ctx.cfg.label.methods.crfiqa.chunk_rows
    return ctx.per_model(lambda e: crfiqa_scores(e, ctx.identities, chunk_rows=chunk_rows))


def _sddfiqa(ctx: LabelContext) -> np.ndarray:
    p, seed = ctx.cfg.label.methods.sddfiqa, ctx.cfg.label.seed
    return ctx.per_model(
        lambda e: sddfiqa_scores(e, ctx.identities, m=p.samples, repeats=p.repeats, seed=seed)
    )


def _fused(ctx: LabelContext) -> np.ndarray:
    p = ctx.cfg.label.methods.fused
    try:
        return fuse(ctx.columns, dict(p.weights), how=p.how)
    except ValueError as err:
        raise StageError(f"label.methods.fused: {err}") from err


LABELERS: dict[str, Callable[[LabelContext], np.ndarray]] = {
    "faceqnet": _faceqnet,
    "serfiq": lambda ctx: np.mean(list(ctx.serfiq.values()), axis=0),
    "crfiqa": _crfiqa,
    "sddfiqa": _sddfiqa,
    "fused": _fused,  # last: it combines the columns above
}


def _embed(ctx: LabelContext, with_serfiq: bool) -> None:
    """Embed with every FR model; SER-FIQ shares each chunk's backbone pass."""
    cfg = ctx.cfg
    p = cfg.label.methods.get("serfiq")
    for name, model in ctx.models.items():
        scores, hook = (
            serfiq_collector(
                model, len(ctx.prepared), p.passes, p.dropout, cfg.label.seed, p.calibrate
            )
            if with_serfiq
            else (None, None)
        )
        ctx.embeddings[name] = embed_prepared(
            model, ctx.prepared, cfg.fr.batch_size, flip=bool(cfg.fr.flip), on_features=hook
        )
        if with_serfiq:
            ctx.serfiq[name] = scores


def run(cfg: DictConfig) -> dict[str, float]:
    """Write ``paths.labels``: labels.parquet, labels.json (provenance), report.json, embeddings."""
    lab = cfg.label
    methods = [m for m in METHODS if lab.methods.get(m) is not None]
    if lab.target not in methods:
        raise StageError(f"label.target={lab.target!r} is not among the computed methods {methods}")
    prepared = PreparedFaces(cfg.paths.prepared)
    manifest = prepared.manifest
    models = {name: load_fr_model(fr_config(cfg, name)) for name in lab.fr_models}
    ctx = LabelContext(cfg, prepared, models)

    with stage_run(cfg, "label") as run_, atomic_dir(Path(cfg.paths.labels)) as tmp:
        _embed(ctx, with_serfiq="serfiq" in methods)
        for name, model in models.items():
            save_embeddings(tmp / "embeddings", model, ctx.embeddings[name], bool(cfg.fr.flip))
        keep = ["sample_id", "path", "identity", "split"]
        keep += [c for c in ("degradation", "severity") if c in manifest.columns]
        table = manifest[keep].copy()
        for method in methods:
            table[method] = ctx.columns[method] = LABELERS[method](ctx)
        ranges = {m: RANGES[m] for m in methods}
        if "fused" in methods and lab.methods.fused.how == "none":
            ranges["fused"] = (-np.inf, np.inf)
        table["quality"] = table[lab.target]
        ranges["quality"] = ranges[lab.target]
        if lab.correction == "ediffiqa":
            first = next(iter(ctx.embeddings.values()))
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
                name: {"weights": m.info.weights_path, "sha256": m.info.weights_sha256}
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
    return summary
