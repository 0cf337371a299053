"""Dataset readers behind one interface: a source table plus a picklable byte loader.

Source table columns: ``path`` (relative to ``data.root``), ``identity``, optional
``landmarks`` (10 floats in source pixels, ArcFace order, or None: detect), optional ``box``
(x, y, w, h or None: picks the matching detection), plus dataset extras kept in the manifest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fiqa.core.images import ImageReadError
from fiqa.data.folder import list_identity_folder

log = logging.getLogger(__name__)

FORMATS = ("folder", "table", "vggface2", "ms1m")


@dataclass
class DataSettings:
    """The dataset to prepare (the ``data`` config group): its format, folder and the keys of
    its format (None where a format does not use them).

    Attributes:
        name: The dataset's name (of its prepared benchmark, ``<name>_<split>``).
        format: ``FORMATS``.
        root: Its folder.
        metadata: A CSV of extra columns by path (the demo's degradations), or None.
        subsets, use_landmarks, references: ``vggface2``: the subsets, whether to use its loose
            landmarks, FaceQnet's reference list.
        rec, idx: ``ms1m``: the RecordIO files under ``root``.
        table, path_column, identity_column, min_images, exclude: ``table``: the CSV or parquet
            of (path, identity), its columns, the images an identity needs, the identities
            left out (a list, or a CSV with an ``identity`` column).
        max_identities, max_images_per_identity: Any format: keep only this many identities,
            this many images of each (spread over them: ``debug=small``).
    """

    name: str
    format: str
    root: str
    metadata: str | None
    subsets: list[str] | None = None
    use_landmarks: bool | None = None
    references: str | None = None
    rec: str | None = None
    idx: str | None = None
    table: str | None = None
    path_column: str | None = None
    identity_column: str | None = None
    min_images: int | None = None
    exclude: Any = None
    max_identities: int | None = None
    max_images_per_identity: int | None = None


class FileBytes:
    """Reads ``root / row["path"]`` (picklable, for DataLoader workers)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def stamp(self, table: pd.DataFrame) -> np.ndarray:
        """(size, mtime_ns) per row's file, (-1, -1) where it cannot be stat'ed (it becomes a
        failure row when read): edited inputs change the resume fingerprint. One ``stat`` per
        file, no read."""
        stamps, root = np.full((len(table), 2), -1, dtype=np.int64), os.fspath(self.root)
        for i, path in enumerate(table["path"]):
            try:
                info = os.stat(os.path.join(root, path))  # not Path: ~2x faster on millions
            except (OSError, ValueError):  # missing, unreadable, a NUL in the name
                continue
            stamps[i] = info.st_size, info.st_mtime_ns
        return stamps

    def __call__(self, row: dict[str, Any]) -> bytes:
        path = self.root / row["path"]
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageReadError(path, "missing") from None
        except OSError as err:
            raise ImageReadError(path, "unreadable", str(err)) from None


class RecordBytes:
    """Reads the image bytes of the RecordIO record at ``row["rec_offset"]`` (picklable)."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None) -> None:
        from fiqa.data.recordio import RecordIOReader

        self.rec_path = Path(rec_path)
        self.reader = RecordIOReader(rec_path, idx_path)

    def stamp(self, table: pd.DataFrame) -> np.ndarray:
        """(size, mtime_ns) of the ``.rec`` and ``.idx`` files ((-1, -1) for an absent one):
        every record lives in them, so a rewritten file changes the resume fingerprint."""
        stamps = np.full((2, 2), -1, dtype=np.int64)
        for i, path in enumerate((self.rec_path, self.reader.idx_path)):
            if path.exists():  # a rebuilt index that could not be saved is absent
                info = path.stat()
                stamps[i] = info.st_size, info.st_mtime_ns
        return stamps

    def __call__(self, row: dict[str, Any]) -> bytes:
        from fiqa.data.recordio import RecordIOError, unpack_record

        try:
            _, image = unpack_record(self.reader.read_at(int(row["rec_offset"])))
        except RecordIOError as err:
            raise ImageReadError(self.rec_path, err.reason, f"offset {row['rec_offset']}") from None
        return image


@dataclass
class Source:
    """What prepare needs from a dataset."""

    table: pd.DataFrame
    read_bytes: FileBytes | RecordBytes
    pre_aligned: bool = False  # images are already aligned to the configured template
    damaged: list[tuple[str, str]] | None = None  # (path, reason) found while indexing


def read_source(data: DataSettings) -> Source:
    """The source table and byte loader of ``data.format`` at ``data.root``."""
    root = Path(data.root)
    if data.format not in FORMATS:
        raise ValueError(f"data.format={data.format!r}; choose one of {', '.join(FORMATS)}")
    if data.format == "ms1m":
        source = _ms1m(root, data)
    elif data.format == "vggface2":
        from fiqa.data.vggface2 import read_vggface2

        table = read_vggface2(
            root,
            subsets=tuple(data.subsets),
            landmarks=bool(data.use_landmarks),
            references=data.references,
        )
        source = Source(table, FileBytes(root), damaged=table.attrs.pop("damaged", []))
    elif data.format == "table":
        source = Source(read_identity_table(data), FileBytes(root))
    else:
        table = list_identity_folder(root)
        # popped: pandas copies attrs into every row a worker materialises
        source = Source(table, FileBytes(root), damaged=table.attrs.pop("damaged", []))
    if data.metadata:
        source.table = _join_metadata(source.table, root / data.metadata)
    if data.max_identities:
        source.table = spread_identities(source.table, int(data.max_identities))
    if data.max_images_per_identity:
        source.table = spread_images(source.table, int(data.max_images_per_identity))
    if source.table.empty:
        raise ValueError(f"data.root {root} ({data.format}) holds no images")
    return source


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """``count`` positions of ``n`` (``count < n``) spread evenly from the first to the last:
    ``round(linspace(0, n - 1, count))``."""
    return np.linspace(0, n - 1, count).round().astype(int)


def spread_identities(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """The rows of ``count`` identities spread evenly over the sorted identities of ``table``
    (all of them when it has no more): ``data.max_identities``, a small set for trying things
    (``debug=small``) that still spans the dataset, the same on every run."""
    names = table["identity"].astype(str)
    identities = np.sort(names.unique())
    if len(identities) <= count:
        return table
    keep = identities[evenly_spaced(len(identities), count)]
    kept = table[names.isin(keep)]
    log.info("data.max_identities=%d: %d of %d images kept (%d of %d identities)", count,
             len(kept), len(table), count, len(identities))  # fmt: skip
    return kept.reset_index(drop=True)


def spread_images(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """At most ``count`` rows of each identity, spread evenly over its rows sorted by path
    (``data.max_images_per_identity``; with ``max_identities``, the few faces of
    ``debug=small``, spanning the demo's degradations), in the table's order."""
    paths = table["path"].astype(str).to_numpy()
    keep: list[np.ndarray] = []
    for rows in table.groupby(table["identity"].astype(str)).indices.values():
        rows = rows[np.argsort(paths[rows], kind="stable")]
        if len(rows) > count:
            rows = rows[evenly_spaced(len(rows), count)]
        keep.append(rows)
    kept = np.sort(np.concatenate(keep)) if keep else np.arange(0)
    if len(kept) == len(table):
        return table
    log.info("data.max_images_per_identity=%d: %d of %d images kept", count, len(kept), len(table))
    return table.iloc[kept].reset_index(drop=True)


def read_identity_table(data: DataSettings) -> pd.DataFrame:
    """The source table of ``data.format=table``: a CSV or parquet file (``data.table``) with an
    image path (``data.path_column``, relative to ``data.root``) and an identity
    (``data.identity_column``) per row, the common layout of identity files; other columns are
    kept. ``data.exclude`` (identities, or a CSV with an ``identity`` column) leaves identities
    out, e.g. a benchmark's, and ``data.min_images`` keeps identities with that many images."""
    path = Path(data.table)
    if not path.is_file():
        raise FileNotFoundError(f"data.table: {path} not found (a CSV or parquet of images)")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    columns = {data.path_column: "path", data.identity_column: "identity"}
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path} has no column {missing} (data.path_column / "
                         f"data.identity_column); it has {list(table.columns)}")  # fmt: skip
    table = table.rename(columns=columns)
    table["path"], table["identity"] = table["path"].astype(str), table["identity"].astype(str)
    before = len(table)
    excluded = _identities(data.exclude)
    table = table[~table["identity"].isin(excluded)]
    counts = table["identity"].value_counts()
    table = table[table["identity"].map(counts) >= int(data.min_images or 1)]
    if len(table) < before:
        log.info("data.table %s: %d of %d images kept (%d identities excluded, min_images=%s)",
                 path, len(table), before, len(excluded), data.min_images)  # fmt: skip
    return table.reset_index(drop=True)


def _identities(exclude: Any) -> set[str]:
    """Identities of ``data.exclude``: None, a list, or a CSV file with an ``identity`` column."""
    if exclude is None:
        return set()
    if isinstance(exclude, str | Path):
        frame = pd.read_csv(exclude)
        if "identity" not in frame.columns:
            raise ValueError(f"data.exclude: {exclude} has no 'identity' column")
        return set(frame["identity"].astype(str))
    return {str(i) for i in exclude}


def _ms1m(root: Path, data: DataSettings) -> Source:
    from fiqa.data.ms1m import ms1m_index
    from fiqa.data.recordio import RecordIOReader

    rec = root / data.rec
    if not rec.is_file():
        raise FileNotFoundError(f"data.rec: {rec} not found (insightface train.rec)")
    idx = root / data.idx if data.idx else None
    index = ms1m_index(RecordIOReader(rec, idx))
    mismatch = index.attrs.get("property_mismatch")
    if mismatch:
        raise ValueError(
            f"{mismatch['path']} declares {mismatch['declared']} identities but {rec} holds "
            f"{mismatch['found']}: the files do not belong together"
        )
    table = pd.DataFrame(
        {
            "path": [f"{data.rec}#{k}" for k in index["key"]],
            "identity": index["identity"].astype(str),
            "rec_offset": index["offset"].astype("int64"),
        }
    )
    damaged = [(f"{data.rec}@{where}", reason) for where, reason in index.attrs.get("damaged", [])]
    return Source(table, RecordBytes(rec, idx), pre_aligned=True, damaged=damaged)


def _join_metadata(table: pd.DataFrame, meta_path: Path) -> pd.DataFrame:
    if not meta_path.is_file():
        raise FileNotFoundError(f"data.metadata file {meta_path} not found")
    meta = pd.read_csv(meta_path)
    if "path" not in meta.columns:
        raise ValueError(f"{meta_path} has no 'path' column")
    extra = [c for c in meta.columns if c not in table.columns]
    return table.merge(meta[["path", *extra]], on="path", how="left")
