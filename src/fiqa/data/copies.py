"""Degraded copies of training faces: quality-diverse training data from the same faces.

A set of mostly good photos (LFW's news photos) teaches a regressor little about bad faces.
``prepare.copies`` adds, for every face of the training split, ``per_face`` copies of its
aligned face, each degraded once (``fiqa.data.degrade``: a kind and a severity drawn per copy).
A copy keeps its source's identity and split; it is labelled by the label methods exactly as a
real face is (the label comes from the FR model's behaviour on the copy, never from the
degradation's parameter), so a copy blurred beyond recognition gets a low label by the same
rule that gives a blurred photo one. The validation split is never copied: the held-out
benchmark stays the set's own faces.

Manifest columns of a set with copies: ``source_id`` (the sample_id a copy was made from; -1
for the set's own faces), ``degradation`` and ``severity`` (``none`` and 0 for own faces,
unless the dataset records its own, as the demo does). Copies are appended after the set's
faces, in shards of their own; every draw is seeded by (``seed``, source sample_id, copy), so
the copies do not depend on the shard size or on how many faces came before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from fiqa.data.degrade import DEGRADATIONS, MAX_SEVERITY, apply_degradation
from fiqa.data.face_store import PreparedFaces, write_shard

log = logging.getLogger(__name__)

NOT_A_COPY = -1  # source_id of a face of the set itself


@dataclass
class CopySettings:
    """Degraded copies of the training faces (``prepare.copies``).

    Attributes:
        per_face: Copies of each training face (0: none).
        kinds: Degradations drawn from (``fiqa.data.degrade.DEGRADATIONS``).
        severities: Severities drawn from (1..4).
        seed: Seed of the draws.
    """

    per_face: int = 0
    kinds: list[str] = field(default_factory=lambda: list(DEGRADATIONS))
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    seed: int = 0

    def __post_init__(self) -> None:
        if self.per_face < 0:
            raise ValueError(f"prepare.copies.per_face must be >= 0, got {self.per_face}")
        unknown = [k for k in self.kinds if k not in DEGRADATIONS]
        if unknown or not self.kinds:
            raise ValueError(f"prepare.copies.kinds: {unknown or 'empty'}; choose from "
                             f"{', '.join(DEGRADATIONS)}")  # fmt: skip
        if not self.severities or not all(1 <= s <= MAX_SEVERITY for s in self.severities):
            raise ValueError(f"prepare.copies.severities must be in 1..{MAX_SEVERITY}, "
                             f"got {self.severities}")  # fmt: skip


def degraded_copy(
    face: np.ndarray, source_id: int, copy: int, settings: CopySettings
) -> tuple[np.ndarray, str, int]:
    """Copy ``copy`` of the face with sample_id ``source_id``: (face, kind, severity).

    The face box is the whole aligned crop, so a severity means what it means for a face of
    the crop's width (``fiqa.data.degrade``).
    """
    rng = np.random.default_rng([settings.seed, source_id, copy])
    kind = settings.kinds[int(rng.integers(len(settings.kinds)))]
    severity = int(settings.severities[int(rng.integers(len(settings.severities)))])
    h, w = face.shape[:2]
    box = np.array([0.0, 0.0, w, h], dtype=np.float32)
    out, applied = apply_degradation(face, kind, severity, rng, face_box=box)
    return out, applied.kind, applied.severity


def add_degraded_copies(
    directory: Path, manifest: pd.DataFrame, settings: CopySettings, first_shard: int,
    shard_size: int,
) -> pd.DataFrame:  # fmt: skip
    """Write the copies of ``manifest``'s training faces into shards ``first_shard``, ... of
    ``directory`` (where ``manifest``'s faces are); return the manifest with them appended.

    Args:
        directory: The prepared directory being written (its manifest written already).
        manifest: Its manifest, with ``split``.
        settings: ``prepare.copies``.
        first_shard: Number of the first shard of copies (after the set's own).
        shard_size: Faces per shard.
    """
    own = manifest.copy()
    own["source_id"] = np.int64(NOT_A_COPY)
    for column, value in (("degradation", "none"), ("severity", 0)):
        if column not in own.columns:
            own[column] = value
    train = own.index[own["split"] == "train"].to_numpy()
    jobs = [(row, c) for row in train for c in range(settings.per_face)]
    if not jobs:
        return own
    faces = PreparedFaces(directory)
    rows, shard = [], first_shard
    progress = tqdm(total=len(jobs), desc="prepare: degraded copies", unit="face", mininterval=2)
    for start in range(0, len(jobs), shard_size):
        batch = jobs[start : start + shard_size]
        made = []
        for row, c in batch:
            source = own.loc[row]
            face, kind, severity = degraded_copy(faces.face(row), int(source["sample_id"]), c,
                                                 settings)  # fmt: skip
            made.append(face)
            rows.append({**source.to_dict(), "path": f"{source['path']}#copy{c}",
                         "source_id": int(source["sample_id"]), "degradation": kind,
                         "severity": severity})  # fmt: skip
        name, spans = write_shard(directory, shard, made)
        for record, (offset, nbytes) in zip(rows[-len(made) :], spans, strict=True):
            record.update(shard=name, offset=offset, nbytes=nbytes)
        shard += 1
        progress.update(len(batch))
    progress.close()
    copies = pd.DataFrame(rows, columns=own.columns)
    copies["sample_id"] = np.arange(len(own), len(own) + len(copies), dtype=np.int64)
    log.info("prepare: %d degraded copies of %d training faces (%s)", len(copies), len(train),
             copies["degradation"].value_counts().to_dict())  # fmt: skip
    return pd.concat([own, copies], ignore_index=True).astype(own.dtypes.to_dict())
