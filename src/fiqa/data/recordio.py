"""insightface / MXNet RecordIO (``train.rec`` + ``train.idx`` + ``property``) in pure Python.

Framing (dmlc-core): each part is ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (``cflag =
lrecord >> 29``, ``length = lrecord & (2**29 - 1)``), ``length`` bytes, zero padding to 4 bytes.
A payload holding the magic at a 4-aligned position is stored as parts (cflag 1 start, 2 middle,
3 end) with that magic dropped; reading puts it back. The ``.idx`` holds ``key\\toffset`` lines.
Payload (``mx.recordio.pack``): ``<IfQQ`` flag, label, id, id2; when flag > 0, ``flag`` float32
labels follow (the vector label); then the image bytes. insightface MS1M layout: record 0 has
label (a, b); images are keys 1..a-1; keys a..b-1 hold each identity's (start, end) key range.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fiqa.core.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_HEADER = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1
_IDX_CHECKS = 256  # records (+ predecessors) checked when an .idx loads: all in small files
_HINTS = {
    "truncated": "the file ends inside this record: an incomplete copy; re-copy the .rec",
    "bad_magic": "no record starts here: corrupted bytes or a stale .idx (delete it to rebuild)",
}


class RecordIOError(ValueError):
    """A damaged record: ``offset`` (byte offset of the record, or None) and ``reason``."""

    def __init__(
        self,
        offset: int | None,
        reason: str,
        path: str | os.PathLike[str] | None = None,
        detail: str = "",
    ) -> None:
        self.offset, self.reason, self.path, self.detail = offset, reason, path, detail
        where = f"{path}: " if path is not None else ""
        at = f" at byte offset {offset}" if offset is not None else ""
        extra = "; ".join(filter(None, (detail, _HINTS.get(reason, ""))))
        message = f"{where}damaged RecordIO record{at}: {reason}"
        super().__init__(f"{message} ({extra})" if extra else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RecordIOError, (self.offset, self.reason, self.path, self.detail))


@dataclass(frozen=True)
class RecordHeader:
    """``mx.recordio.IRHeader``: ``label`` is a float, or a tuple when ``flag`` > 0."""

    flag: int
    label: float | tuple[float, ...]
    id: int = 0
    id2: int = 0


def unpack_record(payload: bytes) -> tuple[RecordHeader, bytes]:
    """Split a record payload into its header and the image bytes (``mx.recordio.unpack``)."""
    if len(payload) < _HEADER.size:
        raise RecordIOError(None, "short_header", detail=f"{len(payload)} bytes")
    flag, label, rid, rid2 = _HEADER.unpack_from(payload)
    start = _HEADER.size
    if flag > 0:
        if start + 4 * flag > len(payload):
            raise RecordIOError(None, "bad_label_count", detail=f"flag={flag}")
        label = struct.unpack_from(f"<{flag}f", payload, start)
        start += 4 * flag
    return RecordHeader(flag, label, rid, rid2), payload[start:]


def pack_record(header: RecordHeader, image: bytes) -> bytes:
    """Build a record payload (``mx.recordio.pack``); ``flag`` is derived from ``label``."""
    if isinstance(header.label, numbers.Real):
        return _HEADER.pack(0, float(header.label), header.id, header.id2) + bytes(image)
    labels = [float(v) for v in header.label]
    if not labels:
        raise ValueError("RecordHeader.label is an empty sequence; use a float or >= 1 value")
    head = _HEADER.pack(len(labels), 0.0, header.id, header.id2)
    return head + struct.pack(f"<{len(labels)}f", *labels) + bytes(image)


def frame_record(payload: bytes) -> bytes:
    """The on-disk bytes of one record, split at 4-aligned magic numbers like dmlc-core."""
    if len(payload) > _LEN_MASK:
        raise ValueError(f"RecordIO records hold < 2**29 bytes; got {len(payload)}")
    chunks: list[bytes] = []
    start, hit = 0, payload.find(_MAGIC_BYTES)
    while hit != -1:
        if hit % 4:
            hit = payload.find(_MAGIC_BYTES, hit + 1)
            continue
        part = payload[start:hit]  # aligned both ends: never padded
        chunks += [_FRAME.pack(MAGIC, (1 if start == 0 else 2) << 29 | len(part)), part]
        start, hit = hit + 4, payload.find(_MAGIC_BYTES, hit + 4)
    last = payload[start:]
    chunks += [_FRAME.pack(MAGIC, (3 if start else 0) << 29 | len(last)), last]
    return b"".join(chunks) + b"\0" * (-len(last) % 4)


def _decode(
    fetch: Callable[[int, int], bytes], offset: int, path: Path
) -> tuple[bytes, int] | None:
    """Read the record at ``offset`` through ``fetch(pos, n)``: (payload, end) or None at EOF."""
    parts: list[bytes] = []
    pos = offset
    while True:
        head = fetch(pos, 8)
        if not head and not parts:
            return None
        if len(head) < 8:
            raise RecordIOError(offset, "truncated", path, f"frame header at byte {pos}")
        magic, lrec = _FRAME.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(offset, "bad_magic", path, f"0x{magic:08x} at byte {pos}")
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        if cflag > 3 or (cflag <= 1) == bool(parts):
            raise RecordIOError(offset, "bad_continuation", path, f"cflag {cflag} at byte {pos}")
        padded = (length + 3) & ~3
        body = fetch(pos + 8, padded)
        if len(body) < padded:
            raise RecordIOError(offset, "truncated", path, f"{length} bytes at byte {pos + 8}")
        parts.append(body[:length])
        pos += 8 + padded
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts), pos


def default_idx_path(rec_path: str | os.PathLike[str]) -> Path:
    """``train.rec`` -> ``train.idx`` (the insightface naming)."""
    return Path(rec_path).with_suffix(".idx")


class _StaleIndex(Exception):
    """The .idx does not describe the .rec (the message says why)."""


class RecordIOReader:
    """Random access by key through the ``.idx``; sequential :meth:`scan` without it.

    A missing or damaged ``.idx`` is rebuilt by scanning (keys 0, 1, ... in file order, as
    MXNet's writers number them) and saved atomically when its directory is writable and the
    scan met no damage; damage is kept in ``damaged`` as (offset, reason). Picklable: the file
    handle is reopened lazily (``os.pread``: forked DataLoader workers share no file position).
    """

    def __init__(
        self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file {self.rec_path} not found")
        self.idx_path = Path(idx_path) if idx_path is not None else default_idx_path(rec_path)
        self.damaged: list[tuple[int, str]] = []
        self._fd: int | None = None
        self._size = self.rec_path.stat().st_size
        try:
            keys, offsets = self._load_index()
        except (OSError, UnicodeDecodeError, _StaleIndex) as err:
            log.warning(
                "%s: index %s unusable (%s); rebuilding it", self.rec_path, self.idx_path, err
            )
            keys, offsets = self._rebuild_index()
        order = np.argsort(keys, kind="stable")
        self._keys, self._offsets = keys[order], offsets[order]
        n = len(keys)
        self._dense = n > 0 and int(self._keys[0]) == 0 and int(self._keys[-1]) == n - 1
        self._starts = np.append(np.sort(offsets), self._size)  # file order; spans end at the next
        self._ends = self._starts[np.searchsorted(self._starts, self._offsets, side="right")]

    @property
    def keys(self) -> list[int]:
        """Record keys, ascending."""
        return self._keys.tolist()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, numbers.Integral) and self._position(int(key)) is not None

    def _position(self, key: int) -> int | None:
        if self._dense:  # keys 0..n-1: the usual MXNet / insightface numbering
            return key if 0 <= key < len(self._keys) else None
        i = int(np.searchsorted(self._keys, key))
        return i if i < len(self._keys) and self._keys[i] == key else None

    def offset(self, key: int) -> int:
        """Byte offset of record ``key`` (KeyError when the index lacks it)."""
        i = self._position(key)
        if i is None:
            raise KeyError(f"key {key} is not in the index of {self.rec_path}")
        return int(self._offsets[i])

    def read(self, key: int) -> bytes:
        """Payload of record ``key``; RecordIOError when it is damaged."""
        i = self._position(key)
        if i is None:
            raise KeyError(f"key {key} is not in the index of {self.rec_path}")
        return self._read_span(int(self._offsets[i]), int(self._ends[i]))

    def read_at(self, offset: int) -> bytes:
        """Payload of the record starting at byte ``offset``."""
        j = int(np.searchsorted(self._starts, offset, side="right"))
        return self._read_span(offset, int(self._starts[min(j, len(self._starts) - 1)]))

    def _read_span(self, offset: int, end: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.rec_path, os.O_RDONLY)
        fd = self._fd
        buf = os.pread(fd, max(end - offset, 8), offset)  # one syscall for an unsplit record
        if len(buf) >= 8:
            magic, lrec = _FRAME.unpack_from(buf)
            if magic == MAGIC and lrec >> 29 == 0 and 8 + ((lrec + 3) & ~3) <= len(buf):
                return buf[8 : 8 + lrec]

        def fetch(pos: int, n: int) -> bytes:
            lo = pos - offset
            return buf[lo : lo + n] if lo + n <= len(buf) else os.pread(fd, n, pos)

        found = _decode(fetch, offset, self.rec_path)
        if found is None:
            raise RecordIOError(offset, "past_end", self.rec_path, f"file has {self._size} bytes")
        return found[0]

    def scan(self) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, payload) in file order; RecordIOError at the first damaged record."""
        with open(self.rec_path, "rb", buffering=1 << 20) as f:
            offset, read = 0, f.read
            while head := read(8):
                magic, lrec = _FRAME.unpack(head) if len(head) == 8 else (0, 0)
                if magic == MAGIC and lrec >> 29 == 0:  # fast path: a whole, unsplit record
                    padded = (lrec + 3) & ~3
                    body = read(padded)
                    if len(body) == padded:
                        yield offset, body[:lrec]
                        offset += 8 + padded
                        continue
                f.seek(offset)  # split record or damage: the general decoder reports it
                found = _decode(lambda _pos, n: read(n), offset, self.rec_path)
                if found is None:
                    return
                yield offset, found[0]
                offset = found[1]

    def _load_index(self) -> tuple[np.ndarray, np.ndarray]:
        pairs = []
        for n, line in enumerate(self.idx_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                key, offset = line.split("\t")
                pairs.append((int(key), int(offset)))
            except ValueError:
                raise _StaleIndex(f"line {n} is not 'key<TAB>offset': {line[:60]!r}") from None
        if not pairs:
            if self._size:
                raise _StaleIndex("it is empty")
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        keys, offsets = np.array(pairs, dtype=np.int64).T
        bad = (offsets < 0) | (offsets % 4 != 0) | (offsets + 8 > self._size)
        if bad.any() or offsets.min() or len(np.unique(keys)) < len(keys):
            raise _StaleIndex("duplicate keys, or offsets misaligned or outside the file")
        if len(np.unique(offsets)) < len(keys):
            raise _StaleIndex("two keys share an offset")
        starts = np.append(np.sort(offsets), self._size)
        picks = np.linspace(0, len(keys) - 1, _IDX_CHECKS).astype(np.int64)
        with open(self.rec_path, "rb") as f:
            # Each sampled record and its predecessor must end where the next one starts;
            # a record that fails to decode is damage in the .rec (kept: reads report it).
            for j in np.unique(np.concatenate([picks - 1, picks]).clip(0)).tolist():
                f.seek(int(starts[j]))
                with contextlib.suppress(RecordIOError):
                    found = _decode(lambda _pos, n: f.read(n), int(starts[j]), self.rec_path)
                    if found is not None and found[1] != starts[j + 1]:
                        raise _StaleIndex(
                            f"the record at byte {starts[j]} ends at {found[1]}, "
                            f"not at the next indexed offset {starts[j + 1]}"
                        )
        return keys, offsets

    def _rebuild_index(self) -> tuple[np.ndarray, np.ndarray]:
        offsets: list[int] = []
        try:
            offsets.extend(offset for offset, _ in self.scan())
        except RecordIOError as err:
            self.damaged.append((int(err.offset or 0), err.reason))
            log.warning("%s; records after it cannot be indexed", err)
        keys = np.arange(len(offsets), dtype=np.int64)
        if self.damaged or not os.access(self.idx_path.parent, os.W_OK):
            log.info("keeping the rebuilt index of %s in memory", self.rec_path)
        else:
            text = "".join(f"{k}\t{o}\n" for k, o in zip(keys.tolist(), offsets, strict=True))
            try:
                write_text_atomic(self.idx_path, text)
                log.info("wrote the rebuilt index %s", self.idx_path)
            except OSError as err:
                log.info("keeping the rebuilt index in memory: %s", err)
        return keys, np.array(offsets, dtype=np.int64)

    def close(self) -> None:
        """Close the file handle (reopened by the next read)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordIOWriter:
    """Append records to a ``.rec``; :meth:`close` publishes it and writes the ``.idx``.

    Both files are written atomically: leaving a ``with`` block by an exception keeps neither.
    """

    def __init__(
        self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else default_idx_path(rec_path)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.rec_path))
        self._file = self._stack.enter_context(tmp.open("wb"))
        self._lines: list[str] = []
        self._keys: set[int] = set()
        self._offset = 0

    def write(self, key: int, payload: bytes) -> int:
        """Append ``payload`` as record ``key``; return its byte offset."""
        if key in self._keys:
            raise ValueError(f"{self.rec_path}: key {key} was already written")
        framed = frame_record(payload)
        self._file.write(framed)
        self._keys.add(key)
        self._lines.append(f"{key}\t{self._offset}\n")
        self._offset += len(framed)
        return self._offset - len(framed)

    def rewrite(self, offset: int, old: bytes, payload: bytes) -> None:
        """Replace the record ``old`` written at ``offset`` by ``payload`` of the same framed size
        (a header whose values are known only once the rest is written)."""
        framed = frame_record(payload)
        if len(framed) != len(frame_record(old)):
            raise ValueError(f"{self.rec_path}: a rewritten record must keep its size")
        self._file.seek(offset)
        self._file.write(framed)
        self._file.seek(self._offset)

    def close(self) -> None:
        """Publish the ``.rec``, then write the ``.idx``."""
        self._stack.close()
        write_text_atomic(self.idx_path, "".join(self._lines))

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)
