"""The prepared-face store: encoded aligned faces in shards plus a manifest table.

Layout of a prepared directory (written by the ``prepare`` stage)::

    faces-00000.bin      encoded faces (PNG, or an input's original bytes when it was
                         already aligned, e.g. MS1M's JPEGs), concatenated
    manifest.parquet     one row per aligned face; (shard, offset, nbytes) locate its bytes
    failures.parquet     one row per input that could not be used (path, reason)

Why encoded bytes: raw pixels would make MS1M (5.8 M faces) 218 GB; PNG keeps the aligned pixels
exactly (quality labels must see what alignment produced, not JPEG re-compression), and
pre-aligned JPEGs are stored as they came, with no generation loss. Decoding a 112x112 face
costs well under a millisecond in a DataLoader worker.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fiqa.core.artifacts import FAILURES, MANIFEST
from fiqa.core.atomic import atomic_path
from fiqa.core.images import decode_image

DEFAULT_TEMPLATE = "arcface_112"  # of an empty prepared set
OPEN_SHARDS = 64  # shard files a process keeps open (of thousands: MS1M has 5,800)
MANIFEST_COLUMNS = [
    "sample_id",  # int, stable index of the face in the prepared set
    "path",  # str, source relative to data.root ("train.rec#<key>" for RecordIO)
    "identity",  # str
    "split",  # "train" | "val"
    "shard",  # str, shard file name
    "offset",  # int, byte offset of the encoded face inside the shard
    "nbytes",  # int, length of the encoded face
    "landmarks",  # list[float] of 10 values (x0, y0, ..., x4, y4) in source-image pixels
    "det_score",  # float, detector confidence (1.0 when landmarks were given)
    "detector",  # str ("given" when landmarks came with the dataset)
    "template",  # str, alignment template name
]
FAILURE_COLUMNS = ["path", "reason"]


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"faces-{index:05d}.bin"


def encode_face(face: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 (H, W, 3) RGB face."""
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) face, got {face.dtype} {face.shape}")
    ok, buf = cv2.imencode(
        ".png", np.ascontiguousarray(face[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_shard(
    directory: Path, index: int, faces: Sequence[np.ndarray | bytes] | np.ndarray
) -> tuple[str, list[tuple[int, int]]]:
    """Write one shard atomically.

    Args:
        directory: Prepared directory.
        index: Shard number.
        faces: uint8 (H, W, 3) RGB faces (PNG-encoded here) or already encoded face bytes.

    Returns:
        The shard file name and the (offset, nbytes) of each face, in order.
    """
    name = shard_name(index)
    spans = []
    with atomic_path(directory / name) as tmp, open(tmp, "wb") as fh:
        for face in faces:
            data = face if isinstance(face, bytes) else encode_face(face)
            spans.append((fh.tell(), len(data)))
            fh.write(data)
    return name, spans


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
            raise ValueError(f"{manifest}: missing columns {missing}; re-run prepare")
        self._shards: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def template(self) -> str:
        """The alignment template of the faces (one per prepared set)."""
        templates = self.manifest["template"].unique().tolist()
        if len(templates) > 1:
            raise ValueError(
                f"{self.directory / MANIFEST}: faces aligned with several templates {templates}"
            )
        return templates[0] if templates else DEFAULT_TEMPLATE

    @property
    def failures(self) -> pd.DataFrame:
        path = self.directory / FAILURES
        return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=FAILURE_COLUMNS)

    def _shard(self, name: str) -> int:
        """An open descriptor of a shard file; the last ``OPEN_SHARDS`` stay open."""
        if name in self._shards:
            self._shards.move_to_end(name)
        else:
            if len(self._shards) >= OPEN_SHARDS:
                self._shards.popitem(last=False)[1].close()
            self._shards[name] = open(self.directory / name, "rb", buffering=0)  # noqa: SIM115
        return self._shards[name].fileno()

    def read_bytes(self, shard: str, offset: int, nbytes: int) -> bytes:
        """The encoded face stored at ``offset`` in ``shard``.

        Read with ``pread``, not a memory map: a pass over millions of faces (a label method, a
        training epoch) would otherwise map every shard into the process (MS1M: 25 GB counted
        in its resident memory).

        Raises:
            ValueError: When the shard ends before the face (a truncated shard), naming it.
        """
        data = os.pread(self._shard(shard), int(nbytes), int(offset))
        if len(data) != int(nbytes):
            raise ValueError(
                f"{self.directory / shard}: {nbytes} bytes at offset {offset} expected, the file "
                f"ends after {len(data)}; re-run prepare"
            )
        return data

    def face_at(self, shard: str, offset: int, nbytes: int) -> np.ndarray:
        """Decode the face stored at ``offset`` in ``shard`` as uint8 (H, W, 3) RGB."""
        data = self.read_bytes(shard, offset, nbytes)
        return decode_image(data, source=f"{self.directory / shard}@{offset}")

    def face(self, row: int) -> np.ndarray:
        """Aligned face of manifest row ``row``."""
        rec = self.manifest.iloc[row]
        return self.face_at(rec["shard"], rec["offset"], rec["nbytes"])

    def faces(self, rows: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Aligned faces of the given manifest rows (all when None), stacked in that order."""
        sel = (
            self.manifest if rows is None else self.manifest.iloc[np.asarray(rows, dtype=np.int64)]
        )
        decoded = [
            self.face_at(s, o, n)
            for s, o, n in zip(sel["shard"], sel["offset"], sel["nbytes"], strict=True)
        ]
        return np.stack(decoded) if decoded else np.zeros((0, 112, 112, 3), np.uint8)

    def chunks(self, size: int = 512) -> Iterator[tuple[slice, np.ndarray]]:
        """(row slice, uint8 faces) over the manifest in order; memory bounded by ``size``."""
        for start in range(0, len(self), size):
            rows = slice(start, min(start + size, len(self)))
            yield rows, self.faces(np.arange(rows.start, rows.stop))

    def __getstate__(self) -> dict:
        # Shard files are re-opened in each DataLoader worker.
        state = self.__dict__.copy()
        state["_shards"] = OrderedDict()
        return state
