"""prepare: raw images -> detected, aligned faces in shards + manifest + failures table."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from fiqa.atomic import atomic_dir
from fiqa.data.align import align_face
from fiqa.data.detect import YuNetDetector
from fiqa.data.folder import assign_splits, list_identity_folder
from fiqa.data.images import ImageReadError, read_image
from fiqa.data.prepared import (
    FAILURE_COLUMNS,
    FAILURES,
    MANIFEST,
    shard_name,
    write_shard,
    write_table,
)
from fiqa.stages import StageError
from fiqa.tracking import stage_run
from fiqa.tracking.grids import face_grid

log = logging.getLogger(__name__)


def _source_table(cfg: DictConfig) -> pd.DataFrame:
    if cfg.data.format != "folder":
        raise StageError(f"data.format={cfg.data.format!r} is not supported yet (use 'folder')")
    table = list_identity_folder(cfg.data.root)
    if cfg.data.get("metadata"):
        meta_path = Path(cfg.data.root) / cfg.data.metadata
        if not meta_path.is_file():
            raise StageError(f"data.metadata file {meta_path} not found")
        meta = pd.read_csv(meta_path)
        if "path" not in meta.columns:
            raise StageError(f"{meta_path} has no 'path' column")
        extra = [c for c in meta.columns if c not in table.columns]
        table = table.merge(meta[["path", *extra]], on="path", how="left")
    return table


def run(cfg: DictConfig) -> dict[str, float]:
    """Detect and align every image of ``data.root``; write ``paths.prepared``."""
    p = cfg.prepare
    sources = _source_table(cfg)
    detector = YuNetDetector(score_threshold=p.score_threshold, pad_ratio=p.pad_ratio)
    root = Path(cfg.data.root)
    out_dir = Path(cfg.paths.prepared)
    rows: list[dict] = []
    failures: list[tuple[str, str]] = []
    shard: list[np.ndarray] = []
    preview: list[np.ndarray] | None = None  # first faces, for the W&B grid
    start = time.perf_counter()

    with stage_run(cfg, "prepare") as run_, atomic_dir(out_dir) as tmp:
        for rec in tqdm(sources.to_dict("records"), desc="prepare", unit="img"):
            try:
                image = read_image(root / rec["path"])
            except ImageReadError as err:
                failures.append((rec["path"], err.reason))
                continue
            det = detector.detect(image)
            if det is None:
                failures.append((rec["path"], "no_face"))
                continue
            shard_index, offset = divmod(len(rows), p.shard_size)
            shard.append(align_face(image, det.landmarks, template=p.template))
            rows.append(
                {
                    **rec,
                    "sample_id": len(rows),
                    "shard": shard_name(shard_index),
                    "offset": offset,
                    "landmarks": det.landmarks.reshape(-1).astype(float).tolist(),
                    "det_score": float(det.score),
                    "detector": detector.name,
                    "template": p.template,
                }
            )
            if len(shard) == p.shard_size:
                write_shard(tmp, shard_index, np.stack(shard))
                preview = preview if preview is not None else shard[:32]
                shard = []
        if shard:
            write_shard(tmp, (len(rows) - 1) // p.shard_size, np.stack(shard))
            preview = preview if preview is not None else shard[:32]

        n_read, n_failed = len(sources), len(failures)
        failure_table = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
        reasons = failure_table["reason"].value_counts().to_dict()
        log.info(
            "prepare: %d inputs, %d aligned, %d failed %s", n_read, len(rows), n_failed, reasons
        )
        if not rows:
            raise StageError(f"prepare: no face could be aligned from {n_read} files in {root}")
        if n_failed / n_read > p.max_failure_rate:
            raise StageError(
                f"prepare: {n_failed}/{n_read} inputs failed ({reasons}), above "
                f"prepare.max_failure_rate={p.max_failure_rate}; nothing was written"
            )
        manifest = pd.DataFrame(rows)
        manifest["split"] = assign_splits(manifest["identity"], p.val_fraction, p.seed)
        write_table(tmp / MANIFEST, manifest)
        write_table(tmp / FAILURES, failure_table)

        elapsed = time.perf_counter() - start
        summary = {
            "prepare/images_read": float(n_read),
            "prepare/aligned": float(len(rows)),
            "prepare/failed": float(n_failed),
            "prepare/identities": float(manifest["identity"].nunique()),
            "prepare/seconds": elapsed,
            "prepare/images_per_s": n_read / elapsed,
        }
        if run_ is not None:
            import wandb

            run_.summary.update(summary | {f"prepare/failed/{k}": v for k, v in reasons.items()})
            run_.log({"prepare/failures": wandb.Table(dataframe=failure_table)})
            run_.log({"prepare/aligned_faces": wandb.Image(face_grid(np.stack(preview)))})
    return summary
