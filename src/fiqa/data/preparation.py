"""Preparing a dataset: raw images -> aligned faces in shards + manifest + failures; resumable.

Shard k always holds the faces of input rows [k * shard_size, (k + 1) * shard_size), so the
work can be split, killed and resumed without changing a byte of the result. Finished shards
live in ``<out>.partial/`` (faces + a per-shard table written last, as the "done" mark) until
every shard is there; then the manifest is assembled and the directory replaces ``out`` in one
rename. A changed config or dataset starts the partial work afresh. ``write_prepared`` writes
already aligned faces through the same shard and manifest writers (tests, benchmarks, imports).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader
from tqdm import tqdm

import fiqa
from fiqa.core.artifacts import FAILURES, MANIFEST, PREPARE_SUMMARY
from fiqa.core.atomic import replace_dir, write_json_atomic, write_text_atomic
from fiqa.data.copies import CopySettings, add_degraded_copies
from fiqa.data.face_pipeline import DETECTORS, FaceAligner, FaceResult, PrepareDataset, worker_init
from fiqa.data.face_store import (
    FAILURE_COLUMNS,
    PreparedFaces,
    encode_face,
    write_shard,
    write_table,
)
from fiqa.data.folder import assign_splits
from fiqa.data.sources import DataSettings, Source

log = logging.getLogger(__name__)

SOURCE_ONLY = {"landmarks", "box", "rec_offset"}  # source columns replaced by what prepare used
RUNTIME_SETTINGS = ("num_workers", "max_failure_rate")  # change no output byte


class PreparationError(RuntimeError):
    """The prepared set cannot be written (no face aligned, too many failures)."""


@dataclass
class PrepareSettings:
    """How faces are found, aligned, split and stored (the ``prepare`` config group).

    Attributes:
        detector: Face detector (``yunet``).
        score_threshold: Detector confidence threshold.
        pad_ratio: Constant padding tried when a tightly cropped face is not found.
        face_selection: Several faces: ``largest`` | ``central`` (a dataset box wins).
        template: Alignment template (``fiqa.core.align``).
        templates: Extra templates ``{name: {size: [w, h], points: [[x, y] x 5]}}``.
        num_workers: Spawned worker processes reading and aligning images.
        val_fraction: Share of identities held out for validation (identity-disjoint).
        val_max_faces: The held-out identities stop before their faces exceed this many (at
            least one identity; None: no cap).
        val_min_images: Identities with fewer faces are never held out (they train).
        shard_size: Aligned faces per shard file.
        max_image_pixels: Larger input images (width x height) fail as ``too_large``, refused
            from the header before decoding (decompression bombs).
        max_failure_rate: The preparation fails when more inputs than this fail.
        seed: Seed of the split.
        copies: Degraded copies of the training faces (``fiqa.data.copies``).
    """

    detector: str
    score_threshold: float
    pad_ratio: float
    face_selection: str
    template: str
    templates: dict[str, Any]
    num_workers: int
    val_fraction: float
    val_max_faces: int | None
    shard_size: int
    max_image_pixels: int
    max_failure_rate: float
    seed: int
    val_min_images: int = 1
    copies: CopySettings = field(default_factory=CopySettings)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"prepare.detector={self.detector!r}; choose one of {DETECTORS}")
        if self.shard_size < 1:
            raise ValueError(f"prepare.shard_size must be >= 1, got {self.shard_size}")
        if self.max_image_pixels < 1:
            raise ValueError(f"prepare.max_image_pixels must be >= 1, got {self.max_image_pixels}")

    def aligner(self, pre_aligned: bool = False) -> FaceAligner:
        """The face aligner of these settings."""
        return FaceAligner(self.template, self.face_selection, self.score_threshold,
                           self.pad_ratio, pre_aligned, self.max_image_pixels)  # fmt: skip


def fingerprint(settings: PrepareSettings, data: DataSettings, source: Source) -> str:
    """Identity of the work: settings (minus the runtime ones), the dataset's settings ``data``,
    the listing, the inputs' sizes and modification times (an input replaced between a kill and
    the resume starts the work afresh) and the code version."""
    kept = {k: v for k, v in asdict(settings).items() if k not in RUNTIME_SETTINGS}
    described = [kept, asdict(data), fiqa.__version__]
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    listing = source.table[["path", "identity"]]
    digest.update(pd.util.hash_pandas_object(listing, index=False).to_numpy().tobytes())
    start = time.perf_counter()
    digest.update(source.read_bytes.stamp(source.table).tobytes())
    log.debug("prepare: inputs stat'ed in %.1f s", time.perf_counter() - start)
    return digest.hexdigest()


def prepare_faces(
    source: Source, settings: PrepareSettings, out_dir: str | Path, data: DataSettings
) -> dict[str, float]:
    """Detect and align every image of ``source``; write the prepared directory ``out_dir``.

    Args:
        source: The dataset (``fiqa.data.sources.read_source``).
        settings: The ``prepare`` settings.
        out_dir: The prepared directory (replaced in one rename when complete).
        data: The dataset's settings (``source`` was read with them): part of the resume
            fingerprint.

    Returns:
        Summary metrics ``prepare/...`` (images read, aligned, failed per reason, speed).

    Raises:
        PreparationError: No face aligned, or more failures than ``max_failure_rate``; the
            previous ``out_dir`` is left as it was and finished shards are kept for a resume.
    """
    table, size = source.table, settings.shard_size
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".partial")
    _open_work(work, fingerprint(settings, data, source))
    n_shards = -(-len(table) // size)
    done = [k for k in range(n_shards) if (work / f"part-{k:05d}.parquet").is_file()]
    todo = np.concatenate(
        [np.arange(k * size, min((k + 1) * size, len(table))) for k in range(n_shards)
         if k not in done] or [np.zeros(0, np.int64)]
    )  # fmt: skip
    if done:
        log.info("prepare: resuming, %d of %d shards already done", len(done), n_shards)
    loader = DataLoader(
        PrepareDataset(table, todo, source.read_bytes, settings.aligner(source.pre_aligned)),
        batch_size=None,
        num_workers=settings.num_workers,
        worker_init_fn=worker_init,
        # spawn, not fork: a forked child inherits OpenCV's thread-pool locks mid-use and can
        # deadlock; spawned workers start clean (a few seconds, once per run).
        multiprocessing_context="spawn" if settings.num_workers > 0 else None,
    )
    start = time.perf_counter()
    pending: list[FaceResult] = []
    for result in tqdm(loader, total=len(todo), desc="prepare", unit="img", mininterval=2):
        pending.append(result)
        k = result.index // size
        if len(pending) == min(size, len(table) - k * size):
            write_shard_part(work, k, pending, table, settings.template)
            pending = []
    seconds = time.perf_counter() - start
    manifest, failures = assemble(work, n_shards, source.damaged)
    counts = _check(manifest, failures, len(table) + len(source.damaged or []), settings, work)
    manifest["split"] = assign_splits(manifest["identity"], settings.val_fraction, settings.seed,
                                      settings.val_max_faces, settings.val_min_images)  # fmt: skip
    if settings.copies.per_face:
        write_table(work / MANIFEST, manifest)  # read back by the copies (rewritten by finish)
        manifest = add_degraded_copies(work, manifest, settings.copies, n_shards, size)
        counts["prepare/degraded_copies"] = float((manifest["source_id"] >= 0).sum())
    finish(work, n_shards, manifest, failures, counts)  # no timings: the same bytes every run
    replace_dir(work, out_dir)
    return counts | {
        "prepare/seconds": seconds,
        "prepare/images_per_s": len(todo) / seconds if seconds > 0 else float("nan"),
        "prepare/resumed_shards": float(len(done)),
    }


def _open_work(work: Path, stamp_text: str) -> None:
    stamp = work / "fingerprint"
    if work.is_dir() and (not stamp.is_file() or stamp.read_text() != stamp_text):
        log.info("prepare: %s belongs to another config or dataset; starting afresh", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        write_text_atomic(stamp, stamp_text)


def write_shard_part(
    work: Path, k: int, results: list[FaceResult], table: pd.DataFrame, template: str
) -> None:
    """Shard ``k``'s faces, its manifest rows and failures; the rows table is written last,
    as the mark that shard ``k`` is done."""
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
    write_table(work / f"part-{k:05d}.parquet", rows)


def assemble(
    work: Path, n_shards: int, damaged: list[tuple[str, str]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest (with ``sample_id``) and failures table from the shard parts."""
    manifest = pd.concat(
        [pd.read_parquet(work / f"part-{k:05d}.parquet") for k in range(n_shards)],
        ignore_index=True,
    )
    failures = pd.concat(
        [pd.read_parquet(work / f"failed-{k:05d}.parquet") for k in range(n_shards)]
        + [pd.DataFrame(damaged or [], columns=FAILURE_COLUMNS)],
        ignore_index=True,
    )
    manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    return manifest, failures


def _check(
    manifest: pd.DataFrame, failures: pd.DataFrame, n_inputs: int, settings: PrepareSettings,
    work: Path,
) -> dict[str, float]:  # fmt: skip
    """Counts of the run; enforce the failure bound."""
    reasons = failures["reason"].value_counts().to_dict()
    log.info("prepare: %d inputs, %d aligned, %d failed %s",
             n_inputs, len(manifest), len(failures), reasons)  # fmt: skip
    if manifest.empty:
        raise PreparationError(f"no face could be aligned from the {n_inputs} inputs")
    if len(failures) / n_inputs > settings.max_failure_rate:
        raise PreparationError(
            f"{len(failures)}/{n_inputs} inputs failed ({reasons}), above "
            f"prepare.max_failure_rate={settings.max_failure_rate}; the prepared set was left as "
            f"it was (finished shards are kept in {work} for a resumed run)"
        )
    return {
        "prepare/images_read": float(n_inputs),
        "prepare/aligned": float(len(manifest)),
        "prepare/failed": float(len(failures)),
        "prepare/identities": float(manifest["identity"].nunique()),
    } | {f"prepare/failed/{reason}": float(n) for reason, n in reasons.items()}


def finish(
    work: Path, n_shards: int, manifest: pd.DataFrame, failures: pd.DataFrame, summary: dict
) -> None:
    """Write the manifest, failures and summary; remove the shard parts and the stamp."""
    write_table(work / MANIFEST, manifest)
    write_table(work / FAILURES, failures)
    write_json_atomic(work / PREPARE_SUMMARY, summary)
    for k in range(n_shards):
        (work / f"part-{k:05d}.parquet").unlink()
        (work / f"failed-{k:05d}.parquet").unlink()
    (work / "fingerprint").unlink(missing_ok=True)


def write_prepared(
    directory: str | Path,
    faces: np.ndarray,
    identities: Sequence[str],
    splits: Sequence[str] | None = None,
    template: str = "arcface_112",
    shard_size: int = 1000,
) -> PreparedFaces:
    """A prepared directory from already aligned faces, through the shard and manifest writers
    of ``prepare_faces`` (tests, benchmarks, imports).

    Args:
        directory: Created if needed; must not hold a manifest yet.
        faces: ``(N, H, W, 3)`` uint8 RGB faces aligned on ``template``.
        identities: Identity of each face.
        splits: ``train`` / ``val`` per face (default all ``train``).
        template: Alignment template of the faces.
        shard_size: Faces per shard file.
    """
    directory = Path(directory)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if (directory / MANIFEST).exists():
        raise FileExistsError(f"{directory / MANIFEST} exists; not overwriting a prepared set")
    n = len(faces)
    if len(identities) != n or (splits is not None and len(splits) != n):
        raise ValueError(f"{n} faces but {len(identities)} identities / splits")
    directory.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"path": [f"face_{i:07d}.png" for i in range(n)],
                          "identity": [str(i) for i in identities]})  # fmt: skip
    n_shards = -(-n // shard_size)
    for k in range(n_shards):
        rows = range(k * shard_size, min((k + 1) * shard_size, n))
        results = [
            FaceResult(i, encode_face(faces[i]), None, [0.0] * 10, 1.0, "given") for i in rows
        ]
        write_shard_part(directory, k, results, table, template)
    manifest, failures = assemble(directory, n_shards)
    manifest["split"] = list(splits) if splits is not None else ["train"] * n
    finish(directory, n_shards, manifest, failures, {"prepare/aligned": float(n)})
    return PreparedFaces(directory)
