"""Verification benchmarks for ``evaluate``: insightface ``.bin``, LFW ``pairs.txt``, folders.

Images are decoded lazily by a picklable :class:`ImageSource` (cheap to load, safe to send to
DataLoader workers). Security: unpickling runs code named in the file, so :func:`load_bin`
resolves only the globals a ``.bin`` needs (:data:`_ALLOWED_GLOBALS`) and refuses all others.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from fiqa.core.images import decode_image, read_image
from fiqa.core.pairs import Pairs, identity_pairs
from fiqa.data.folder import list_identity_folder

log = logging.getLogger(__name__)

BENCHMARK_FORMATS = ("bin", "pairs_txt", "folder", "table")


class ImageSource(Protocol):
    """Random access to images: ``load(i)`` -> uint8 (H, W, 3) RGB, or ``ImageReadError``."""

    def __len__(self) -> int: ...
    def load(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class EncodedImageSource:
    """Encoded images in memory (a ``.bin``), decoded per ``load``; errors name ``label#i``."""

    blobs: list[bytes]
    label: str

    def __len__(self) -> int:
        return len(self.blobs)

    def load(self, index: int) -> np.ndarray:
        return decode_image(self.blobs[index], source=f"{self.label}#{index}")


@dataclass(frozen=True, eq=False)
class ImageFileSource:
    """Image files given relative to ``root``, read per ``load``."""

    root: str
    relative_paths: list[str]

    def __len__(self) -> int:
        return len(self.relative_paths)

    def load(self, index: int) -> np.ndarray:
        return read_image(Path(self.root) / self.relative_paths[index])


@dataclass
class VerificationBenchmark:
    """Images and the comparison pairs over them.

    Attributes:
        name: Short name used in metric keys and tables (``lfw``, ``cfp_fp``).
        images: Lazy image access, one entry per image.
        pairs: Comparisons as indices into ``images``, with genuine flags.
        aligned: True for aligned 112x112 crops (``.bin``); False for raw photos that still
            need detection and alignment.
        identities: Identity per image where the format records it, else None.
        paths: Stable id per image (``lfw.bin#17``, ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``).
        missing: Image ids the pair list references but the disk lacks (their pairs dropped).
    """

    name: str
    images: ImageSource
    pairs: Pairs
    aligned: bool
    identities: list[str] | None
    paths: list[str]
    missing: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.paths) != n or (self.identities is not None and len(self.identities) != n):
            raise ValueError(f"benchmark {self.name}: paths/identities do not match {n} images")
        indices = np.concatenate((self.pairs.a, self.pairs.b))
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"benchmark {self.name}: pair indices outside its {n} images")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Safe stand-in for ``_codecs.encode``, which protocol-2 pickles use to store bytes."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


#: What a ``.bin`` may name: numpy array rebuilding (numpy 1 and 2 module names; protocol 5
#: uses ``_frombuffer``) and the bytes of protocol-2 pickles.
_ALLOWED_GLOBALS = {
    f"numpy.{core}.{name}"
    for core in ("core", "_core")
    for name in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
} | {"numpy.ndarray", "numpy.dtype", "_codecs.encode"}


class _BinUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if f"{module}.{name}" not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: not numpy array data")
        return _latin1_encode if module == "_codecs" else super().find_class(module, name)


def _encoded_bytes(blob: object, path: Path) -> bytes:
    """One ``.bin`` image as bytes (stored as bytes, or as a uint8 array by some converters)."""
    if isinstance(blob, bytes | bytearray):
        return bytes(blob)
    if not (isinstance(blob, np.ndarray) and blob.dtype == np.uint8):
        raise ValueError(f"{path}: an image is a {type(blob).__name__}, not bytes or uint8 array")
    return blob.tobytes()


def load_bin(path: str | Path, name: str | None = None) -> VerificationBenchmark:
    """Load an insightface verification ``.bin`` (lfw, cfp_fp, agedb_30, calfw, cplfw, ...).

    The pickle is ``(bins, issame_list)``: encoded aligned images (bytes or uint8 arrays); pair
    ``k`` = images ``(2k, 2k + 1)``, ``genuine = issame_list[k]``. ``name`` defaults to ``lfw``
    for ``lfw.bin``.

    Raises:
        ValueError: If the file is no such pickle, names a forbidden global, or holds other
            than ``2 * len(issame_list)`` images.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            content = _BinUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable insightface .bin pickle: {exc}") from exc
    parts = content if isinstance(content, tuple | list) and len(content) == 2 else [None]
    if not all(isinstance(part, list | tuple | np.ndarray) for part in parts):
        raise ValueError(f"{path}: expected a pickled (bins, issame_list), got {type(content)}")
    bins, issame = content
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs, need 2 per pair")
    flags = np.asarray(issame)
    if flags.ndim != 1 or not (flags.dtype == bool or np.isin(flags, (0, 1)).all()):
        raise ValueError(f"{path}: issame_list must hold booleans, got dtype {flags.dtype}")
    blobs = [_encoded_bytes(blob, path) for blob in bins]
    pairs = Pairs(a=np.arange(0, len(blobs), 2), b=np.arange(1, len(blobs), 2), genuine=flags)
    log.info("%s: %d images, %d pairs (%d genuine)", path, len(blobs), len(pairs), pairs.n_genuine)
    ids = [f"{path.name}#{i}" for i in range(len(blobs))]
    images = EncodedImageSource(blobs, path.name)
    return VerificationBenchmark(name or path.stem, images, pairs, True, None, ids)


def _read_utf8_text(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped).

    Raises:
        ValueError: If the file is not UTF-8, naming the file, line and byte.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _parse_pairs_line(tokens: list[str], ext: str) -> tuple[str, str, bool]:
    """Both image ids and the genuine flag of a ``pairs.txt`` line of 3 or 4 fields."""
    if len(tokens) not in (3, 4):
        raise ValueError(f"{len(tokens)} fields, expected 'name n1 n2' or 'name1 n1 name2 n2'")
    name1, n1, *rest = tokens
    name2, n2 = rest if len(rest) == 2 else (name1, rest[0])
    first, second = f"{name1}/{name1}_{int(n1):04d}{ext}", f"{name2}/{name2}_{int(n2):04d}{ext}"
    return first, second, len(tokens) == 3


def load_pairs_txt(
    pairs_path: str | Path, images_root: str | Path, name: str | None = None, ext: str = ".jpg"
) -> VerificationBenchmark:
    """Load an LFW-style ``pairs.txt`` over raw photos ``images_root/name/name_%04d<ext>``.

    Lines: an optional header (``folds pairs_per_fold`` or one count), then ``name n1 n2``
    (genuine) and ``name1 n1 name2 n2`` (impostor), separated by any whitespace. Images are the
    unique files of the kept pairs, sorted. Pairs with a missing image are dropped, logged and
    their images listed in ``missing``. ``name`` defaults to the name of ``images_root``.

    Raises:
        ValueError: On a file that is not UTF-8, a line that is no pair, or when no pair has
            both images on disk.
    """
    pairs_path, root = Path(pairs_path), Path(images_root)
    numbered = enumerate(_read_utf8_text(pairs_path).splitlines(), 1)
    lines = [(number, line.split()) for number, line in numbered if line.strip()]
    if lines and len(lines[0][1]) <= 2 and all(token.isdigit() for token in lines[0][1]):
        header = [int(token) for token in lines.pop(0)[1]]
        if 2 * int(np.prod(header)) != len(lines):  # each fold: genuine + as many impostors
            log.warning("%s: header %s but %d pair lines", pairs_path, header, len(lines))
    raw: list[tuple[str, str, bool]] = []
    for number, tokens in lines:
        try:
            raw.append(_parse_pairs_line(tokens, ext))
        except ValueError as exc:
            raise ValueError(f"{pairs_path}:{number}: {' '.join(tokens)!r}: {exc}") from exc
    referenced = sorted({image for first, second, _ in raw for image in (first, second)})
    missing = [image for image in referenced if not (root / image).is_file()]
    absent = set(missing)
    kept = [pair for pair in raw if pair[0] not in absent and pair[1] not in absent]
    if not kept:
        raise ValueError(f"{pairs_path}: no pair has both images under {root} (images_root, ext?)")
    if missing:
        dropped = len(raw) - len(kept)
        log.warning("%s: %d pairs dropped, images missing: %s", pairs_path, dropped, missing[:5])
    firsts, seconds, genuine = zip(*kept, strict=True)
    paths = sorted({*firsts, *seconds})
    index = {image: i for i, image in enumerate(paths)}
    pairs = Pairs(a=[index[i] for i in firsts], b=[index[i] for i in seconds], genuine=genuine)
    source, people = ImageFileSource(str(root), paths), [p.split("/")[0] for p in paths]
    return VerificationBenchmark(name or root.name, source, pairs, False, people, paths, missing)


def load_identity_folder(
    root: str | Path, impostors: int = 10000, seed: int = 0, name: str | None = None
) -> VerificationBenchmark:
    """Build a benchmark from ``root/<identity>/<image>`` (hidden entries ignored).

    Pairs: every genuine pair ``i < j`` per identity, then ``impostors`` impostor pairs ``i < j``
    drawn uniformly without replacement from all cross-identity pairs (all when fewer exist),
    deterministic from ``seed``. ``name`` defaults to the name of ``root``.

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
        ValueError: If it holds no images or ``impostors`` is negative.
    """
    root = Path(root)
    if impostors < 0:
        raise ValueError(f"impostors must be >= 0, got {impostors}")
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark folder {root} is not a directory")
    try:
        table = list_identity_folder(root)
    except ValueError as exc:
        raise ValueError(f"benchmark folder {root} holds no <identity>/<image> files") from exc
    paths, identities = table["path"].tolist(), table["identity"].tolist()
    pairs = identity_pairs(identities, int(impostors), seed)
    if pairs.n_genuine == 0 or pairs.n_impostor == 0:
        log.warning("%s: %d genuine, %d impostor pairs", root, pairs.n_genuine, pairs.n_impostor)
    images = ImageFileSource(str(root), paths)
    return VerificationBenchmark(name or root.name, images, pairs, False, identities, paths)


def load_identity_table(
    root: str | Path,
    table: str | Path,
    path_column: str = "path",
    identity_column: str = "identity",
    impostors: int = 10000,
    seed: int = 0,
    name: str | None = None,
) -> VerificationBenchmark:
    """Build a benchmark from an image root and a CSV/parquet of (path, identity), e.g.
    ``images/`` + ``identities.csv``: every genuine pair, ``impostors`` sampled impostor pairs
    (``fiqa.core.pairs.identity_pairs``). ``name`` defaults to the name of the table's folder.

    Raises:
        FileNotFoundError: If ``table`` does not exist.
        ValueError: If a column is missing, or the table is empty.
    """
    root, table = Path(root), Path(table)
    if not table.is_file():
        raise FileNotFoundError(f"benchmark table {table} not found")
    try:
        frame = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
    except UnicodeDecodeError as exc:
        raise ValueError(f"benchmark table {table}: not UTF-8 text ({exc.reason}); "
                         "convert it to UTF-8") from None  # fmt: skip
    missing = [c for c in (path_column, identity_column) if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"benchmark table {table}: no column {missing} or no rows "
                         f"(columns {list(frame.columns)})")  # fmt: skip
    paths = frame[path_column].astype(str).tolist()
    identities = frame[identity_column].astype(str).tolist()
    pairs = identity_pairs(identities, int(impostors), seed)
    images = ImageFileSource(str(root), paths)
    return VerificationBenchmark(name or table.parent.name, images, pairs, False, identities, paths)


def load_benchmark(cfg: Mapping[str, Any]) -> VerificationBenchmark:
    """Load the benchmark of a complete config entry (``conf/eval/benchmark/<format>.yaml``
    with its keys set); ``ValueError`` on an unknown format or a missing key.

    Keys by ``format``: ``bin``: ``path``; ``pairs_txt``: ``path``, ``images_root``, ``ext``;
    ``folder``: ``root``, ``impostors``, ``seed``; ``table``: ``root``, ``table``,
    ``path_column``, ``identity_column``, ``impostors``, ``seed``; all: ``name`` (None: the
    file's or folder's).
    """
    fmt = cfg.get("format")
    if fmt not in BENCHMARK_FORMATS:
        raise ValueError(f"unknown benchmark format {fmt!r}; expected one of {BENCHMARK_FORMATS}")

    def need(key: str) -> Any:
        if cfg.get(key) is None:
            raise ValueError(f"benchmark config of format {fmt!r} needs the key {key!r}")
        return cfg[key]

    name = cfg.get("name")
    if fmt == "bin":
        return load_bin(need("path"), name)
    if fmt == "pairs_txt":
        return load_pairs_txt(need("path"), need("images_root"), name, need("ext"))
    impostors, seed = int(need("impostors")), int(need("seed"))
    if fmt == "table":
        return load_identity_table(need("root"), need("table"), need("path_column"),
                                   need("identity_column"), impostors, seed, name)  # fmt: skip
    return load_identity_folder(need("root"), impostors, seed, name)
