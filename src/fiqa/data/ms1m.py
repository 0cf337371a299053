"""insightface MS-Celeb-1M layout on top of RecordIO: identity ranges, ``property``, writer.

Record 0 has label (a, b): images are keys 1..a-1, keys a..b-1 hold each identity's (start, end)
key range; ``property`` reads ``num_classes,height,width``. Images are aligned 112x112 JPEGs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from fiqa.core.atomic import write_text_atomic
from fiqa.data.recordio import (
    RecordHeader,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    pack_record,
    unpack_record,
)

log = logging.getLogger(__name__)


def read_property(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``num_classes,h,w`` from an insightface ``property`` file."""
    text = Path(path).read_text(encoding="utf-8").strip()
    try:
        n, h, w = (int(f) for f in text.split(","))
    except ValueError:
        raise ValueError(
            f"{path}: expected 'num_classes,height,width', got {text[:60]!r}"
        ) from None
    return n, h, w


def write_property(path: str | os.PathLike[str], num_classes: int, h: int, w: int) -> None:
    """Write an insightface ``property`` file atomically."""
    write_text_atomic(path, f"{num_classes},{h},{w}\n")


def _label(header: RecordHeader) -> float:
    return header.label if isinstance(header.label, float) else header.label[0]


def _ms1m_layout(reader: RecordIOReader) -> tuple[int, int] | None:
    """(a, b) from record 0 when it is an insightface header record, else None."""
    if 0 not in reader:
        return None
    try:
        header, image = unpack_record(reader.read(0))
    except RecordIOError:
        return None  # every record is then read as an image, and this one reported
    if header.flag < 2 or image:
        return None
    a, b = int(header.label[0]), int(header.label[1])
    return (a, b) if 1 <= a <= b else None


def ms1m_index(
    reader: RecordIOReader, property_path: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """One row per image record: ``key``, ``offset``, ``identity`` (the int label as str).

    Uses record 0's identity ranges when present (one read per identity plus its first image);
    otherwise reads every record's label. An identity whose images lie in two ranges (or two
    files joined) is one identity: its label names it. A range claiming keys another range
    already claimed is damage (``overlapping_range``); its images are listed once. Damaged
    records become ``attrs["damaged"]`` entries (key or offset, reason); a ``property`` file
    (default: next to the .rec) declaring another number of identities is logged and returned
    as ``attrs["property_mismatch"]``.
    """
    damaged = list(reader.damaged)
    keys: list[int] = []
    names: list[str] = []

    def label_key(key: int) -> str | None:
        try:
            header, image = unpack_record(reader.read(key))
            return str(int(_label(header))) if image else None  # empty: header/range record
        except (RecordIOError, KeyError, ValueError, OverflowError) as err:
            damaged.append((key, getattr(err, "reason", type(err).__name__)))
            return None

    layout = _ms1m_layout(reader)
    if layout is None:
        todo = reader.keys
    else:
        a, b = layout
        covered = np.zeros(a, dtype=bool)
        for rkey in range(a, b):
            try:
                start, end = (int(v) for v in unpack_record(reader.read(rkey))[0].label[:2])
            except (RecordIOError, KeyError, TypeError, ValueError) as err:
                damaged.append((rkey, getattr(err, "reason", "bad_range")))
                continue
            name, span = None, np.arange(max(start, 1), min(end, a))
            if covered[span].any():  # a key range claimed twice: each image is listed once
                damaged.append((rkey, "overlapping_range"))
                span = span[~covered[span]]
            for key in span.tolist():
                name = name or label_key(key)  # the first readable image names the identity
                if name is not None:
                    keys.append(key)
                    names.append(name)
                covered[key] = True
        todo = [k for k in range(1, a) if not covered[k]]  # images of damaged range records
    for key in tqdm(todo, desc="ms1m index", unit="rec", mininterval=2, disable=len(todo) < 1e5):
        if (name := label_key(key)) is not None:
            keys.append(key)
            names.append(name)
    offsets = reader._offsets[np.searchsorted(reader._keys, np.asarray(keys, dtype=np.int64))]
    df = pd.DataFrame({"key": keys, "offset": offsets, "identity": names}).astype(
        {"key": "int64", "offset": "int64", "identity": str}
    )
    df = df.sort_values("key", ignore_index=True)
    df.attrs["damaged"] = damaged
    df.attrs["property_mismatch"] = _check_property(reader, property_path, df)
    return df


def _check_property(
    reader: RecordIOReader, path: str | os.PathLike[str] | None, df: pd.DataFrame
) -> dict[str, Any] | None:
    prop = Path(path) if path is not None else reader.rec_path.parent / "property"
    if path is None and not prop.is_file():
        return None
    found = int(df["identity"].nunique())
    try:
        declared = read_property(prop)[0]
    except (OSError, ValueError) as err:
        log.warning("cannot check identities against %s: %s", prop, err)
        return {"path": str(prop), "declared": None, "found": found, "error": str(err)}
    if declared == found:
        return None
    log.warning("%s declares %d identities; %s holds %d", prop, declared, reader.rec_path, found)
    return {"path": str(prop), "declared": declared, "found": found}


def write_ms1m(
    out_dir: str | os.PathLike[str],
    images: Iterable[tuple[int, bytes]],
    image_size: tuple[int, int] | None = None,
) -> int:
    """Write an insightface-style ``train.rec``/``train.idx``/``property`` into ``out_dir``.

    Streams: each record goes to disk as it arrives (memory does not grow with the images), so
    each identity's images must come together; identities keep their order of appearance.
    Record 0 (whose ``(a, b)`` are known only at the end) is written first with provisional
    values of the same size and rewritten in place. insightface training expects labels
    0..K-1; keys and labels must stay below 2**24 (they are stored as float32). ``image_size``
    (h, w) defaults to the first image's size.

    Returns:
        The number of images written.

    Raises:
        ValueError: With no images, or when an identity's images are not together (naming it).
    """
    out = Path(out_dir)
    provisional = pack_record(RecordHeader(2, (0.0, 0.0)), b"")
    ranges: list[tuple[int, int, int]] = []  # (label, first key, end key)
    key, first = 1, None
    with RecordIOWriter(out / "train.rec", out / "train.idx") as writer:
        writer.write(0, provisional)
        for label, data in images:
            label = int(label)
            if not ranges or ranges[-1][0] != label:
                if ranges:
                    ranges[-1] = (ranges[-1][0], ranges[-1][1], key)
                ranges.append((label, key, -1))
            if first is None:
                first = bytes(data)
            writer.write(key, pack_record(RecordHeader(0, float(label), key), data))
            key += 1
        if first is None:
            raise ValueError(f"write_ms1m({out_dir}): no images given")
        ranges[-1] = (ranges[-1][0], ranges[-1][1], key)
        labels = [label for label, _, _ in ranges]
        if len(set(labels)) != len(labels):
            again = next(label for i, label in enumerate(labels) if label in labels[:i])
            raise ValueError(
                f"write_ms1m({out_dir}): identity {again} appears again after other identities; "
                "give each identity's images together (sort them by identity)"
            )
        if sorted(labels) != list(range(len(labels))):
            log.warning(
                "identity labels are not 0..%d; insightface training expects them", len(labels) - 1
            )
        for rkey, (_, start, end) in enumerate(ranges, start=key):
            writer.write(rkey, pack_record(RecordHeader(2, (start, end), rkey), b""))
        writer.rewrite(0, provisional, pack_record(RecordHeader(2, (key, key + len(ranges))), b""))
    write_property(out / "property", len(ranges), *(image_size or _image_size(first)))
    return key - 1


def _image_size(data: bytes) -> tuple[int, int]:

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("write_ms1m: the first image does not decode; pass image_size=(h, w)")
    return int(image.shape[0]), int(image.shape[1])


def export_prepared(prepared_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> int:
    """Export a prepared set as insightface RecordIO (``train.rec``/``.idx``/``property``).

    Identities get labels 0..K-1 in sorted order; each face keeps its stored bytes (PNG for
    faces fiqa aligned, the original JPEG for pre-aligned input), which insightface's
    OpenCV-based decoder reads. Returns the number of images written.
    """
    from fiqa.data.face_store import PreparedFaces

    prepared = PreparedFaces(prepared_dir)
    manifest = prepared.manifest
    labels = {identity: k for k, identity in enumerate(sorted(manifest["identity"].unique()))}
    manifest = manifest.iloc[np.argsort(manifest["identity"].map(labels).to_numpy(), kind="stable")]
    rows = zip(
        manifest["identity"], manifest["shard"], manifest["offset"], manifest["nbytes"], strict=True
    )
    write_ms1m(
        out_dir,
        ((labels[i], prepared.read_bytes(s, o, n)) for i, s, o, n in rows),
    )
    return len(manifest)
