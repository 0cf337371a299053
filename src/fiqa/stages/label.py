"""label: embed every aligned face with the FR models, compute quality pseudo-labels."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fiqa.atomic import atomic_dir, write_json_atomic
from fiqa.data.prepared import PreparedFaces
from fiqa.extract import FaceQanParams, FaceSource, Request, SerfiqParams, extract
from fiqa.fr import FRModel, load_fr_model
from fiqa.label.correction import ediffiqa_correct
from fiqa.label.crfiqa import crfiqa_scores
from fiqa.label.faceqnet import (
    faceqnet_scores,
    icao_proxy,
    references_from_list,
    select_reference_images,
)
from fiqa.label.fusion import fuse, huo_fused, intra_class_score, visual_score
from fiqa.label.report import check_labels, label_report, write_label_figures
from fiqa.label.sddfiqa import sddfiqa_scores
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
    "magface": (0.0, np.inf),
    "faceqan": (0.0, 1.0),
    "huo": (-np.inf, 1.0),  # eq. 1's S_v is unbounded below; [0, 1] with normalisation
    "fused": (0.0, 1.0),  # with how=none: the weighted mean of the raw columns' ranges
}
METHODS = tuple(RANGES)


@dataclass
class LabelContext:
    """What every label method may use: the prepared set, FR models and their cached outputs."""

    cfg: DictConfig
    prepared: PreparedFaces
    models: dict[str, FRModel]
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # per FR model
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # methods computed so far

    @property
    def identities(self) -> np.ndarray:
        return self.prepared.manifest["identity"].to_numpy()

    @property
    def embeddings(self) -> dict[str, np.ndarray]:
        return {name: out["embedding"] for name, out in self.outputs.items()}

    def per_model(
        self, fn: Callable[[np.ndarray], np.ndarray], product: str = "embedding"
    ) -> np.ndarray:
        """``fn(outputs[product])`` averaged over the FR models of ``label.fr_models``."""
        return np.mean([fn(out[product]) for out in self.outputs.values()], axis=0)


def fr_config(cfg: DictConfig, entry: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The FR model config of a ``label.fr_models`` / ``eval.fr_models`` entry: ``cfg.fr`` when it
    names the selected model, ``{"name": entry}`` for another name, a mapping as given."""
    if isinstance(entry, Mapping):
        return entry
    return cfg.fr if cfg.fr.name == entry else {"name": str(entry)}


def fr_entries(cfg: DictConfig, entries: Any) -> dict[str, Mapping[str, Any]]:
    """``{name: config}`` of a list of FR model entries; names must be unique."""
    configs = [fr_config(cfg, entry) for entry in entries]
    names = [str(c["name"]) for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StageError(f"FR models listed twice: {duplicates}")
    return dict(zip(names, configs, strict=True))


def extract_outputs(
    cfg: DictConfig, model: FRModel, fr: Mapping[str, Any], source: FaceSource, request: Request
) -> dict[str, np.ndarray]:
    """``fiqa.extract.extract`` with the run's cache, batch and Trainer settings."""
    x = cfg.extract
    return extract(
        model,
        source,
        request,
        cache_root=cfg.paths.cache,
        flip=bool(fr.get("flip", cfg.fr.flip)),
        batch_size=int(fr.get("batch_size", cfg.fr.batch_size)),
        num_workers=int(x.num_workers),
        part_rows=int(x.part_rows),
        trainer=OmegaConf.to_container(x, resolve=True),
    )


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
            [icao_proxy(faces, landmarks[rows]) for rows, faces in ctx.prepared.chunks()],
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


def _magface(ctx: LabelContext) -> np.ndarray:
    fr = ctx.cfg.label.methods.magface.model
    model = load_fr_model(fr)
    if not model.info.name.startswith("magface"):
        log.warning("label.methods.magface.model=%s is not a MagFace model", model.info.name)
    source = FaceSource.from_prepared(ctx.prepared)
    return extract_outputs(ctx.cfg, model, fr, source, Request(norm=True))["norm"]


def _huo(ctx: LabelContext) -> np.ndarray:
    p, ids = ctx.cfg.label.methods.huo, ctx.identities
    s_v = ctx.per_model(lambda f: visual_score(f, ids, subtract_min=p.subtract_min), "low_level")
    s_r = ctx.per_model(lambda q: q, "serfiq")
    s_c = ctx.per_model(lambda e: intra_class_score(e, ids))
    try:
        return huo_fused(s_v, s_r, s_c, weights=tuple(p.weights), how=p.how)
    except ValueError as err:
        raise StageError(f"label.methods.huo: {err}") from err


def _fused(ctx: LabelContext) -> np.ndarray:
    p = ctx.cfg.label.methods.fused
    try:
        return fuse(ctx.columns, dict(p.weights), how=p.how)
    except ValueError as err:
        raise StageError(f"label.methods.fused: {err}") from err


LABELERS: dict[str, Callable[[LabelContext], np.ndarray]] = {
    "faceqnet": _faceqnet,
    "serfiq": lambda ctx: ctx.per_model(lambda q: q, "serfiq"),
    "crfiqa": _crfiqa,
    "sddfiqa": _sddfiqa,
    "magface": _magface,
    "faceqan": lambda ctx: ctx.per_model(lambda q: q, "faceqan"),
    "huo": _huo,
    "fused": _fused,  # last: it combines the columns above
}


def extraction_request(cfg: DictConfig, methods: list[str]) -> Request:
    """What the extraction pass over ``label.fr_models`` must produce for ``methods``."""
    p, seed = cfg.label.methods, int(cfg.label.seed)
    needs_serfiq = bool({"serfiq", "huo"} & set(methods))
    if needs_serfiq and p.get("serfiq") is None:
        raise StageError("label.methods.huo needs the SER-FIQ settings in label.methods.serfiq")
    serfiq = faceqan = None
    try:
        if needs_serfiq:
            s = p.serfiq
            serfiq = SerfiqParams(int(s.passes), float(s.dropout), seed, bool(s.calibrate))
        if "faceqan" in methods:
            q = p.faceqan
            faceqan = FaceQanParams(float(q.eps), int(q.iterations), int(q.copies),
                                    float(q.power), seed, int(q.batch_size))  # fmt: skip
    except ValueError as err:
        raise StageError(str(err)) from err
    return Request(low_level="huo" in methods, serfiq=serfiq, faceqan=faceqan)


def run(cfg: DictConfig) -> dict[str, float]:
    """Write ``paths.labels``: labels.parquet, labels.json (provenance), report.json, embeddings."""
    lab = cfg.label
    methods = [m for m in METHODS if lab.methods.get(m) is not None]
    if lab.target not in methods:
        raise StageError(f"label.target={lab.target!r} is not among the computed methods {methods}")
    prepared = PreparedFaces(cfg.paths.prepared)
    manifest = prepared.manifest
    entries = fr_entries(cfg, lab.fr_models)
    models = {name: load_fr_model(fr) for name, fr in entries.items()}
    ctx = LabelContext(cfg, prepared, models)
    source, request = FaceSource.from_prepared(prepared), extraction_request(cfg, methods)
    for name, model in models.items():  # every rank of a DDP run takes part here ...
        ctx.outputs[name] = extract_outputs(cfg, model, entries[name], source, request)
    if rank_zero_only.rank != 0:  # ... and only rank 0 computes and writes the labels
        return {}

    with stage_run(cfg, "label") as run_, atomic_dir(Path(cfg.paths.labels)) as tmp:
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
