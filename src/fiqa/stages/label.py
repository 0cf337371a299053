"""label: embed every aligned face with the FR models, compute quality pseudo-labels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import DictConfig, OmegaConf

from fiqa.atomic import atomic_dir, write_json_atomic
from fiqa.data.prepared import PreparedFaces
from fiqa.fr import load_fr_model
from fiqa.label.embeddings import embed_prepared, iter_face_chunks, save_embeddings
from fiqa.label.faceqnet import (
    faceqnet_scores,
    icao_proxy,
    references_from_list,
    select_reference_images,
)
from fiqa.label.report import check_labels, label_report
from fiqa.label.serfiq import serfiq_scores
from fiqa.provenance import code_version
from fiqa.stages import StageError
from fiqa.tracking import stage_run

log = logging.getLogger(__name__)

METHODS = ("faceqnet", "serfiq")
LABELS = "labels.parquet"


def fr_config(cfg: DictConfig, name: str) -> DictConfig | str:
    """The FR model config for ``name``: ``cfg.fr`` when it is that model, else the name."""
    return cfg.fr if cfg.fr.name == name else name


def _faceqnet(
    cfg: DictConfig, prepared: PreparedFaces, embeddings: dict[str, np.ndarray]
) -> np.ndarray:
    params = cfg.label.methods.faceqnet
    manifest = prepared.manifest
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
            [icao_proxy(faces, landmarks[rows]) for rows, faces in iter_face_chunks(prepared)],
            ignore_index=True,
        )
        refs = select_reference_images(manifest["identity"], proxy)
    else:
        raise StageError(
            f"label.methods.faceqnet.reference must be proxy|list|manifest, got {params.reference!r}"
        )
    return faceqnet_scores(list(embeddings.values()), refs)


def run(cfg: DictConfig) -> dict[str, float]:
    """Write ``paths.labels``: labels.parquet, labels.json (provenance), report.json, embeddings."""
    if cfg.label.target not in METHODS:
        raise StageError(f"label.target={cfg.label.target!r}; choose one of {METHODS}")
    prepared = PreparedFaces(cfg.paths.prepared)
    manifest = prepared.manifest
    models = {name: load_fr_model(fr_config(cfg, name)) for name in cfg.label.fr_models}
    flip = bool(cfg.fr.flip)
    out_dir = Path(cfg.paths.labels)

    with stage_run(cfg, "label") as run_, atomic_dir(out_dir) as tmp:
        serfiq = cfg.label.methods.serfiq
        serfiq_per_model = np.empty((len(models), len(manifest)))
        embeddings = {}
        for i, (name, model) in enumerate(models.items()):

            def on_features(rows: slice, features: torch.Tensor, i=i, model=model) -> None:
                serfiq_per_model[i, rows] = serfiq_scores(
                    model, features, serfiq.passes, serfiq.dropout, cfg.label.seed, serfiq.calibrate
                )

            embeddings[name] = embed_prepared(
                model, prepared, cfg.fr.batch_size, flip=flip, on_features=on_features
            )
        for name, model in models.items():
            save_embeddings(tmp / "embeddings", model, embeddings[name], flip)
        keep = ["sample_id", "path", "identity", "split"]
        keep += [c for c in ("degradation", "severity") if c in manifest.columns]
        table = manifest[keep].copy()
        table["faceqnet"] = _faceqnet(cfg, prepared, embeddings)
        table["serfiq"] = serfiq_per_model.mean(axis=0)
        table["quality"] = table[cfg.label.target]
        check_labels(table, [*METHODS, "quality"], set(manifest["identity"]))

        provenance = {
            "target": cfg.label.target,
            "methods": OmegaConf.to_container(cfg.label.methods, resolve=True),
            "fr_models": {
                name: {"weights": m.info.weights_path, "sha256": m.info.weights_sha256}
                for name, m in models.items()
            },
            "template": str(manifest["template"].iloc[0]),
            "seed": int(cfg.label.seed),
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
        report = label_report(table, list(METHODS))
        write_json_atomic(tmp / "report.json", report)

        summary = {f"label/{m}_mean": report["methods"][m]["mean"] for m in METHODS}
        for m, rho in report.get("spearman_vs_severity", {}).items():
            summary[f"label/{m}_spearman_vs_severity"] = rho
        summary["label/samples"] = float(len(table))
        if run_ is not None:
            import wandb

            run_.summary.update(summary)
            for m in METHODS:
                run_.log({f"label/{m}_hist": wandb.Histogram(table[m].to_numpy())})
            run_.log({"label/table": wandb.Table(dataframe=table.drop(columns=["split"]))})
    return summary
