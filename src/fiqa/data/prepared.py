"""The prepared-face store: aligned faces in ``.npy`` shards plus a manifest table.

Layout of a prepared directory (written by the ``prepare`` stage)::

    faces-00000.npy      uint8 (n, H, W, 3) RGB aligned faces, memory-mappable
    manifest.parquet     one row per aligned face (columns: MANIFEST_COLUMNS + extras)
    failures.parquet     one row per input that could not be used (path, reason)

Raw ``.npy`` shards are lossless and memory-map directly into a DataLoader without decoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fiqa.atomic import atomic_path

MANIFEST = "manifest.parquet"
FAILURES = "failures.parquet"
MANIFEST_COLUMNS = [
    "sample_id",  # int, stable index of the face in the prepared set
    "path",  # str, source file relative to data.root
    "identity",  # str
    "split",  # "train" | "val"
    "shard",  # str, shard file name
    "offset",  # int, row inside the shard
    "landmarks",  # list[float] of 10 values (x0, y0, ..., x4, y4) in source-image pixels
    "det_score",  # float, detector confidence (1.0 when landmarks were given)
    "detector",  # str
    "template",  # str, alignment template name
]
FAILURE_COLUMNS = ["path", "reason"]


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"faces-{index:05d}.npy"


def write_shard(directory: Path, index: int, faces: np.ndarray) -> str:
    """Write one shard atomically and return its file name."""
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[-1] != 3:
        raise ValueError(
            f"shard {index}: expected uint8 (n, H, W, 3), got {faces.dtype} {faces.shape}"
        )
    name = shard_name(index)
    with atomic_path(directory / name) as tmp, open(tmp, "wb") as fh:
        np.save(fh, faces)
    return name


def write_table(path: Path, table: pd.DataFrame) -> None:
    """Write a parquet table atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


class PreparedFaces:
    """Read access to a prepared directory: the manifest and the aligned faces."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest} not found: run the prepare stage first (`fiqa prepare` or `dvc repro prepare`)"
            )
        self.manifest = pd.read_parquet(manifest)
        missing = [c for c in MANIFEST_COLUMNS if c not in self.manifest.columns]
        if missing:
            raise ValueError(f"{manifest}: missing columns {missing}")
        self._shards: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def failures(self) -> pd.DataFrame:
        path = self.directory / FAILURES
        return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=FAILURE_COLUMNS)

    def shard(self, name: str) -> np.ndarray:
        """Memory-mapped shard array (opened once, then cached)."""
        if name not in self._shards:
            self._shards[name] = np.load(self.directory / name, mmap_mode="r")
        return self._shards[name]

    def face(self, row: int) -> np.ndarray:
        """Aligned face of manifest row ``row`` as uint8 (H, W, 3) RGB."""
        rec = self.manifest.iloc[row]
        return np.asarray(self.shard(rec["shard"])[int(rec["offset"])])

    def faces(self, rows: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Aligned faces of the given manifest rows (all when None), in that order."""
        sel = (
            self.manifest if rows is None else self.manifest.iloc[np.asarray(rows, dtype=np.int64)]
        )
        if len(sel) == 0:
            return np.zeros((0, 112, 112, 3), np.uint8)
        out = None
        for i, (shard, offset) in enumerate(zip(sel["shard"], sel["offset"], strict=True)):
            face = self.shard(shard)[int(offset)]
            if out is None:
                out = np.empty((len(sel), *face.shape), np.uint8)
            out[i] = face
        return out

    def __getstate__(self) -> dict:
        # Memory maps are re-opened in each DataLoader worker.
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state
