"""IJB-B / IJB-C 1:1 verification in the layout of insightface's IJB release, read as is.

::

    <root>/loose_crop/<img>.jpg                     loosely cropped faces
    <root>/meta/<variant>_name_5pts_score.txt       img x1 y1 ... x5 y5 score
    <root>/meta/<variant>_face_tid_mid.txt          img template_id media_id
    <root>/meta/<variant>_template_pair_label.txt   template_id_1 template_id_2 label

``variant`` is ``ijbc`` or ``ijbb``. The five landmarks are in ArcFace order in the loose crop's
pixels and the score is the release's detector confidence. Faces are aligned with the given
landmarks (no detection). Each line of ``face_tid_mid`` is one image of one media of one
template; comparisons are between templates (``fiqa.core.templates``), ``label`` 1 for a mated
pair. An image missing on disk is left out of its template (counted); a pair whose template
has no image left is left out (counted).

``aligned_faces`` aligns every image once into ``<cache>/aligned/<key>/faces.npy`` (uint8,
memory-mapped: IJB-C's 469 k faces are 17.6 GB, more than memory), keyed by the metadata files'
and the images' names and sizes and the alignment template; a later run reuses it.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from tqdm import tqdm

from fiqa.core.atomic import atomic_dir
from fiqa.core.images import ImageReadError, read_image
from fiqa.core.pairs import Pairs
from fiqa.core.provenance import digest, file_sha256
from fiqa.core.templates import Templates
from fiqa.data.face_pipeline import FaceAligner

log = logging.getLogger(__name__)

IJB_VARIANTS = ("ijbc", "ijbb")
IMAGES = "loose_crop"


@dataclass
class IJBProtocol:
    """One IJB release's images, their templates and the template pairs.

    Attributes:
        name: Short name used in metric keys and tables (default: the variant).
        root: The release folder.
        images: Image file names under ``<root>/loose_crop``, one per ``face_tid_mid`` line.
        landmarks: ``(n, 5, 2)`` landmarks in each loose crop.
        det_scores: The release's detector confidence per image.
        templates: Template and media per image (-1: missing on disk).
        template_ids: The release's id of each template index.
        pairs: Template pairs (indices into ``template_ids``), genuine where ``label`` is 1.
        meta: The three metadata files.
        sizes: Each image's file size in bytes, -1 where it is absent from ``loose_crop``.
    """

    name: str
    root: Path
    images: list[str]
    landmarks: NDArray[np.float64]
    det_scores: NDArray[np.float64]
    templates: Templates
    template_ids: NDArray[np.int64]
    pairs: Pairs
    meta: list[Path]
    sizes: list[int]

    @property
    def missing(self) -> list[str]:
        """Images listed but absent from ``loose_crop``."""
        return [image for image, size in zip(self.images, self.sizes, strict=True) if size < 0]


def _read_columns(path: Path, n_columns: int, what: str) -> pd.DataFrame:
    """The whitespace-separated table ``path`` of exactly ``n_columns`` columns.

    Raises:
        FileNotFoundError: If it is absent.
        ValueError: On a line of another field count, naming the file and line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"IJB metadata {path} not found ({what})")
    try:
        table = pd.read_csv(path, sep=r"\s+", header=None, dtype={0: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise ValueError(f"{path}: not a table of '{what}': {err}") from None
    if table.shape[1] != n_columns:
        raise ValueError(f"{path}: {table.shape[1]} fields per line, expected {n_columns} "
                         f"'{what}'")  # fmt: skip
    short = table.isna().any(axis=1).to_numpy()
    if short.any():
        raise ValueError(f"{path}:{int(np.argmax(short)) + 1}: fewer than {n_columns} fields "
                         f"'{what}'")  # fmt: skip
    return table


def _integers(column: pd.Series, path: Path, what: str) -> NDArray[np.int64]:
    """A column of integers, or ValueError naming the file, line and value."""
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}:{line + 1}: {what} {column.iloc[line]!r} is not an integer")
    return values.to_numpy(np.int64)


def load_ijb(root: str | Path, variant: str = "ijbc", name: str | None = None) -> IJBProtocol:
    """Read an IJB release folder (the layout above).

    Raises:
        FileNotFoundError: If ``root`` or a metadata file is absent.
        ValueError: On an unknown variant, a malformed line (file and line named), an image of
            ``face_tid_mid`` without landmarks, a pair naming a template no image has, or a
            label other than 0/1.
    """
    if variant not in IJB_VARIANTS:
        raise ValueError(f"IJB variant {variant!r}; choose one of {', '.join(IJB_VARIANTS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IJB root {root} is not a directory")
    meta = [root / "meta" / f"{variant}_{part}.txt"
            for part in ("name_5pts_score", "face_tid_mid", "template_pair_label")]  # fmt: skip
    points = _read_columns(meta[0], 12, "img x1 y1 ... x5 y5 score")
    faces = _read_columns(meta[1], 3, "img template_id media_id")
    pair_table = _read_columns(meta[2], 3, "template_id_1 template_id_2 label")

    images = faces[0].tolist()
    if points[0].tolist() == images:
        at = np.arange(len(images))
    else:  # not line by line: join by name
        names = points[0].to_numpy()
        unique, first = np.unique(names, return_index=True)
        if len(unique) != len(names):
            raise ValueError(f"{meta[0]}: image names repeat and do not follow {meta[1].name}'s "
                             "lines; cannot tell which landmarks are whose")  # fmt: skip
        position = np.searchsorted(unique, images)
        position = np.minimum(position, len(unique) - 1)
        found = unique[position] == np.asarray(images, dtype=object)
        if not found.all():
            line = int(np.flatnonzero(~found)[0])
            raise ValueError(f"{meta[1]}:{line + 1}: image {images[line]!r} has no landmarks "
                             f"in {meta[0].name}")  # fmt: skip
        at = first[position]
    coords = points.iloc[:, 1:12].to_numpy(np.float64)[at]
    template_raw = _integers(faces[1], meta[1], "template_id")
    media_raw = _integers(faces[2], meta[1], "media_id")
    template_ids, template = np.unique(template_raw, return_inverse=True)

    t1 = _integers(pair_table[0], meta[2], "template_id_1")
    t2 = _integers(pair_table[1], meta[2], "template_id_2")
    labels = _integers(pair_table[2], meta[2], "label")
    for column, ids in (("template_id_1", t1), ("template_id_2", t2)):
        known = np.isin(ids, template_ids)
        if not known.all():
            line = int(np.flatnonzero(~known)[0])
            raise ValueError(f"{meta[2]}:{line + 1}: {column} {ids[line]} has no image in "
                             f"{meta[1].name}")  # fmt: skip
    if not np.isin(labels, (0, 1)).all():
        line = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise ValueError(f"{meta[2]}:{line + 1}: label {labels[line]} is not 0 or 1")

    sizes = [_file_size(root / IMAGES / image) for image in images]
    on_disk = np.array(sizes) >= 0
    missing = [image for image, size in zip(images, sizes, strict=True) if size < 0]
    if missing:
        log.warning("%s: %d of %d images missing under %s (left out of their templates): %s",
                    root, len(missing), len(images), root / IMAGES, missing[:5])  # fmt: skip
    _, media = np.unique(np.stack([template, media_raw]), axis=1, return_inverse=True)
    templates = Templates(np.where(on_disk, template, -1), media.reshape(-1), len(template_ids))
    pairs = Pairs(np.searchsorted(template_ids, t1), np.searchsorted(template_ids, t2),
                  labels == 1)  # fmt: skip
    log.info("%s: %d images, %d templates, %d template pairs (%d genuine)", root, len(images),
             len(template_ids), len(pairs), pairs.n_genuine)  # fmt: skip
    return IJBProtocol(name or variant, root, images, coords[:, :10].reshape(-1, 5, 2),
                       coords[:, 10].copy(), templates, template_ids, pairs, meta,
                       sizes)  # fmt: skip


def _file_size(path: Path) -> int:
    """The size of the file ``path`` in bytes, -1 when there is none."""
    try:
        status = path.stat()
    except OSError:
        return -1
    return status.st_size if stat.S_ISREG(status.st_mode) else -1


@dataclass(frozen=True, eq=False)
class NpyFaces:
    """``rows -> faces`` of a uint8 ``(n, H, W, 3)`` ``.npy``, memory-mapped on first use
    (picklable: a DataLoader worker maps the file itself)."""

    path: str

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        faces = self.__dict__.get("_faces")
        if faces is None:
            faces = np.load(self.path, mmap_mode="r")
            object.__setattr__(self, "_faces", faces)
        return np.asarray(faces[np.asarray(rows)])

    def __getstate__(self) -> dict:
        return {"path": self.path}


def aligned_faces(
    protocol: IJBProtocol, aligner: FaceAligner, cache_dir: str | Path
) -> tuple[NpyFaces, NDArray[np.bool_], str, dict[str, int]]:
    """Every image of ``protocol`` aligned with its landmarks, cached under
    ``<cache_dir>/aligned/<key>``.

    Returns:
        The faces, which images could be read and aligned, the key (the faces' fingerprint)
        and the count of each reason an image could not (empty when all could, or cached).
    """
    sizes = protocol.sizes
    key = digest([aligner.template, [file_sha256(str(p)) for p in protocol.meta[:2]],
                  protocol.images, sizes], length=24)  # fmt: skip
    target = Path(cache_dir) / "aligned" / key
    if (target / "ok.npy").is_file():
        log.info("%s: aligned faces from %s", protocol.name, target)
        return NpyFaces(str(target / "faces.npy")), np.load(target / "ok.npy"), key, {}
    n, (w, h) = len(protocol.images), aligner.size
    reasons: dict[str, int] = {}
    ok = np.zeros(n, bool)
    with atomic_dir(target) as tmp:
        faces = np.lib.format.open_memmap(tmp / "faces.npy", "w+", np.uint8, (n, h, w, 3))
        for i in tqdm(range(n), desc=f"align {protocol.name}", unit="img", mininterval=5):
            if sizes[i] < 0:
                reasons["missing"] = reasons.get("missing", 0) + 1
                continue
            path = protocol.root / IMAGES / protocol.images[i]
            row = {"path": str(path), "landmarks": protocol.landmarks[i]}
            try:
                face, result = aligner.align(i, row, read_image(path))
                reason = result.reason
            except ImageReadError as err:
                face, reason = None, err.reason
            if face is None:
                reasons[reason] = reasons.get(reason, 0) + 1
            else:
                faces[i], ok[i] = face, True
        faces.flush()
        del faces
        np.save(tmp / "ok.npy", ok)
    return NpyFaces(str(target / "faces.npy")), ok, key, reasons
