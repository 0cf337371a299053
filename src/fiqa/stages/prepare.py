"""prepare: raw dataset -> aligned faces in shards + manifest + failures table; resumable.

Shard k always holds the faces of input rows [k * shard_size, (k + 1) * shard_size), so the
work can be split, killed and resumed without changing a byte of the result. Finished shards
live in ``<paths.prepared>.partial/`` (faces + a per-shard table written last, as the "done"
mark) until every shard is there; then the manifest is assembled and the directory replaces
``paths.prepared`` in one rename. A changed config or dataset starts the partial work afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

import fiqa
from fiqa.atomic import replace_dir, write_json_atomic, write_text_atomic
from fiqa.data.align import register_template
from fiqa.data.face_pipeline import FaceAligner, FaceResult, PrepareDataset, worker_init
from fiqa.data.folder import assign_splits
from fiqa.data.prepared import (
    FAILURE_COLUMNS,
    FAILURES,
    MANIFEST,
    PreparedFaces,
    write_shard,
    write_table,
)
from fiqa.data.sources import Source, read_source
from fiqa.stages import StageError
from fiqa.tracking import stage_run
from fiqa.tracking.grids import face_grid

log = logging.getLogger(__name__)

SOURCE_ONLY = {"landmarks", "box", "rec_offset"}  # source columns replaced by what prepare used


def _fingerprint(cfg: DictConfig, source: Source) -> str:
    """Identity of the work: config, dataset listing and code version."""
    settings = OmegaConf.to_container(cfg.prepare, resolve=True)
    for key in ("num_workers", "max_failure_rate"):  # do not change any output byte
        settings.pop(key, None)
    digest = hashlib.sha256(json.dumps([settings, fiqa.__version__], sort_keys=True).encode())
    digest.update(OmegaConf.to_yaml(cfg.data).encode())
    listing = source.table[["path", "identity"]]
    digest.update(pd.util.hash_pandas_object(listing, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _open_work(work: Path, fingerprint: str) -> None:
    stamp = work / "fingerprint"
    if work.is_dir() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        log.info("prepare: %s belongs to another config or dataset; starting afresh", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        write_text_atomic(stamp, fingerprint)


def _finish_shard(
    work: Path, k: int, results: list[FaceResult], table: pd.DataFrame, template: str
) -> None:
    ok = [r for r in results if r.data is not None]
    name, spans = write_shard(work, k, [r.data for r in ok])
    extras = [c for c in table.columns if c not in SOURCE_ONLY]
    rows = table.iloc[[r.index for r in ok]][extras].reset_index(drop=True)
    rows["shard"] = name
    rows["offset"] = [o for o, _ in spans]
    rows["nbytes"] = [n for _, n in spans]
    rows["landmarks"] = [r.landmarks for r in ok]
    rows["det_score"] = [r.det_score for r in ok]
    rows["detector"] = [r.detector for r in ok]
    rows["template"] = template
    failed = [(table.iloc[r.index]["path"], r.reason) for r in results if r.data is None]
    write_table(work / f"failed-{k:05d}.parquet", pd.DataFrame(failed, columns=FAILURE_COLUMNS))
    write_table(work / f"part-{k:05d}.parquet", rows)  # last: marks shard k as done


def run(cfg: DictConfig) -> dict[str, float]:
    """Detect and align every image of ``data.root``; write ``paths.prepared``."""
    p = cfg.prepare
    for name, spec in (p.get("templates") or {}).items():
        register_template(name, spec.size, spec.points)
    try:
        source = read_source(cfg.data)
    except (FileNotFoundError, ValueError) as err:
        raise StageError(f"prepare: {err}") from err
    table, size = source.table, int(p.shard_size)
    out_dir = Path(cfg.paths.prepared)
    work = out_dir.with_name(out_dir.name + ".partial")
    _open_work(work, _fingerprint(cfg, source))
    n_shards = -(-len(table) // size)
    done = [k for k in range(n_shards) if (work / f"part-{k:05d}.parquet").is_file()]
    todo = np.concatenate(
        [
            np.arange(k * size, min((k + 1) * size, len(table)))
            for k in range(n_shards)
            if k not in done
        ]
        or [np.zeros(0, np.int64)]
    )
    if done:
        log.info("prepare: resuming, %d of %d shards already done", len(done), n_shards)
    aligner = FaceAligner(
        p.template, p.face_selection, p.score_threshold, p.pad_ratio, source.pre_aligned
    )
    loader = DataLoader(
        PrepareDataset(table, todo, source.read_bytes, aligner),
        batch_size=None,
        num_workers=int(p.num_workers),
        worker_init_fn=worker_init,
        # spawn, not fork: a forked child inherits OpenCV's thread-pool locks mid-use and can
        # deadlock; spawned workers start clean (a few seconds, once per run).
        multiprocessing_context="spawn" if p.num_workers > 0 else None,
    )
    start = time.perf_counter()
    with stage_run(cfg, "prepare") as run_:
        pending: list[FaceResult] = []
        for result in tqdm(loader, total=len(todo), desc="prepare", unit="img", mininterval=2):
            pending.append(result)
            k = result.index // size
            if len(pending) == min(size, len(table) - k * size):
                _finish_shard(work, k, pending, table, p.template)
                pending = []
        summary = _finalize(cfg, source, work, n_shards, time.perf_counter() - start, len(todo))
        summary["prepare/resumed_shards"] = float(len(done))
        replace_dir(work, out_dir)
        if run_ is not None:
            _log_wandb(run_, summary, PreparedFaces(out_dir))
    return summary


def _finalize(
    cfg: DictConfig, source: Source, work: Path, n_shards: int, seconds: float, processed: int
) -> dict[str, float]:
    """Assemble manifest and failures from the shard tables; enforce the failure bound."""
    p = cfg.prepare
    manifest = pd.concat(
        [pd.read_parquet(work / f"part-{k:05d}.parquet") for k in range(n_shards)],
        ignore_index=True,
    )
    failures = pd.concat(
        [pd.read_parquet(work / f"failed-{k:05d}.parquet") for k in range(n_shards)]
        + [pd.DataFrame(source.damaged or [], columns=FAILURE_COLUMNS)],
        ignore_index=True,
    )
    n_inputs = len(source.table) + len(source.damaged or [])
    reasons = failures["reason"].value_counts().to_dict()
    log.info(
        "prepare: %d inputs, %d aligned, %d failed %s",
        n_inputs,
        len(manifest),
        len(failures),
        reasons,
    )
    if manifest.empty:
        raise StageError(
            f"prepare: no face could be aligned from the {n_inputs} inputs of {cfg.data.root}"
        )
    if len(failures) / n_inputs > p.max_failure_rate:
        raise StageError(
            f"prepare: {len(failures)}/{n_inputs} inputs failed ({reasons}), above "
            f"prepare.max_failure_rate={p.max_failure_rate}; {cfg.paths.prepared} was left as it was "
            f"(finished shards are kept in {work} for a resumed run)"
        )
    manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    manifest["split"] = assign_splits(manifest["identity"], p.val_fraction, p.seed)
    summary = {
        "prepare/images_read": float(n_inputs),
        "prepare/aligned": float(len(manifest)),
        "prepare/failed": float(len(failures)),
        "prepare/identities": float(manifest["identity"].nunique()),
        "prepare/seconds": seconds,
        "prepare/images_per_s": processed / seconds if seconds > 0 else float("nan"),
    } | {f"prepare/failed/{reason}": float(n) for reason, n in reasons.items()}
    write_table(work / MANIFEST, manifest)
    write_table(work / FAILURES, failures)
    write_json_atomic(work / "summary.json", summary)
    for k in range(n_shards):
        (work / f"part-{k:05d}.parquet").unlink()
        (work / f"failed-{k:05d}.parquet").unlink()
    (work / "fingerprint").unlink()
    return summary


def _log_wandb(run_, summary: dict[str, float], prepared: PreparedFaces) -> None:
    import wandb

    run_.summary.update(summary)
    run_.log({"prepare/failures": wandb.Table(dataframe=prepared.failures)})
    preview = prepared.faces(np.arange(min(32, len(prepared))))
    run_.log({"prepare/aligned_faces": wandb.Image(face_grid(preview))})
