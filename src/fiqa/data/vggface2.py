"""VGGFace2 reader: the source table of ``root/<subset>/<identity>/<image>`` plus annotations.

Layout of the official distribution (Cao et al., FG 2018)::

    root/train/n000002/0001_01.jpg             # <imageID>_<faceID>.jpg; also root/test/...
    root/bb_landmark/loose_bb_train.csv        # NAME_ID,X,Y,W,H
    root/bb_landmark/loose_landmark_train.csv  # NAME_ID,P1X,P1Y,...,P5X,P5Y
    root/identity_meta.csv                     # Class_ID, Name, Sample_Num, Flag, Gender

``NAME_ID`` is ``<identity>/<file stem>`` (no subset, no extension). The meta archive's own
layout (``root/meta/bb_landmark/``, ``root/meta/identity_meta.csv``) is found too. Boxes and
landmarks are in pixels of the distributed JPEG. The loose landmarks follow MTCNN: P1 is the
eye with the smaller x in the image (the subject's right eye), P2 the other eye, P3 the nose
tip, P4 and P5 the mouth corners by increasing x: fiqa's ArcFace order, so values pass through
unchanged and :func:`check_landmark_convention` rejects files that contradict it.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fiqa.data.folder import list_identity_folder

log = logging.getLogger(__name__)

LANDMARK_COLUMNS = [f"P{i}{axis}" for i in range(1, 6) for axis in "XY"]
BOX_COLUMNS = ["X", "Y", "W", "H"]
ANNOTATION_DIRS = ("bb_landmark", "meta/bb_landmark", ".")
MIN_ROWS_FOR_CHECKS = 20  # majority checks on fewer rows would trip over a few profile faces
REFERENCE_COLUMNS = ("path", "file", "filename", "image", "reference", "name_id")
_IMAGE_SUFFIX = r"(?i)\.(jpe?g|png|bmp|webp)$"  # a str, so pandas runs it in pyarrow


def _list_subset(root: Path, subset: str) -> pd.DataFrame:
    """``path`` (``subset/identity/file``), ``identity``, ``subset``, ``name_id``
    (``identity/stem``) per regular file in ``root/subset/*/`` (empty when there is none);
    ``attrs["damaged"]``: the odd entries (``fiqa.data.folder.list_identity_folder``)."""
    folder = root / subset
    if not folder.is_dir():
        raise FileNotFoundError(f"VGGFace2 subset {folder} not found; list present ones only")
    try:
        table = list_identity_folder(folder)
    except ValueError:  # a subset without images: the caller reports the dataset as empty
        return pd.DataFrame(columns=["path", "identity", "subset", "name_id"])
    listed = pd.DataFrame(
        {
            "path": subset + "/" + table["path"],
            "identity": table["identity"],
            "subset": subset,
            "name_id": table["path"].str.replace(r"\.[^./]*$", "", regex=True),  # drop suffix
        }
    )
    listed.attrs["damaged"] = [(f"{subset}/{p}", r) for p, r in table.attrs.get("damaged", [])]
    return listed


def find_file(root: Path, filename: str, folders: Iterable[str] = ANNOTATION_DIRS) -> Path | None:
    """The first ``root/<folder>/<filename>`` that exists, or None."""
    return next((root / f / filename for f in folders if (root / f / filename).is_file()), None)


def read_annotation(path: Path, columns: list[str]) -> pd.DataFrame:
    """A loose bb/landmark CSV as float64 ``columns`` indexed by ``NAME_ID`` (``identity/stem``).

    Empty or non-numeric values (and the tail of a short row) become NaN; of duplicate
    ``NAME_ID`` rows the first is kept. ``\\``, ``./`` and an image suffix are removed from ids.

    Raises:
        ValueError: If the file is empty or lacks the ``NAME_ID`` column or one of ``columns``.
    """
    try:
        table = pd.read_csv(
            path, skipinitialspace=True, dtype={"NAME_ID": str}, on_bad_lines="warn"
        )
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; expected NAME_ID,{','.join(columns)} rows") from None
    table.columns = [str(c).strip() for c in table.columns]
    absent = [c for c in ["NAME_ID", *columns] if c not in table.columns]
    if absent:
        raise ValueError(f"{path} lacks column(s) {absent}; expected NAME_ID,{','.join(columns)}")
    values = table[columns].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    ids = table["NAME_ID"].astype(str).str.strip().str.replace("\\", "/", regex=False)
    ids = ids.str.removeprefix("./").str.replace(_IMAGE_SUFFIX, "", regex=True)
    values.index = pd.Index(ids, name="name_id")
    duplicated = values.index.duplicated()
    if duplicated.any():
        log.warning("%s: %d duplicate NAME_ID rows ignored", path, int(duplicated.sum()))
    return values[~duplicated]


def _join(keys: pd.Series, annotation: pd.DataFrame, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Annotation values aligned to ``keys`` (NaN rows where absent) and the presence mask."""
    position = annotation.index.get_indexer(keys)
    present = position >= 0
    values = np.full((len(keys), annotation.shape[1]), np.nan)
    values[present] = annotation.to_numpy()[position[present]]
    orphans = np.ones(len(annotation), dtype=bool)
    orphans[position[present]] = False  # rows no listed file claimed
    if orphans.any():
        absent = list(annotation.index[orphans][:3])
        log.warning("%s: %d rows name absent files: %s", source, orphans.sum(), absent)
    return values, present


def check_landmark_convention(points: np.ndarray, boxes: np.ndarray, source: str) -> None:
    """Reject landmarks that are not pixels in MTCNN/ArcFace order or not in the boxes' frame.

    Args:
        points: ``(N, 10)`` finite landmarks ``x0, y0, ..., x4, y4``.
        boxes: ``(N, 4)`` matching ``x, y, w, h`` boxes, NaN rows where there is none.
        source: What the error names.

    Raises:
        ValueError: If, on at least :data:`MIN_ROWS_FOR_CHECKS` rows, the median eye distance
            is under 2 px, or most rows have P1 right of P2, the eyes below the mouth, or
            landmarks outside their box grown by half its size.
    """
    if len(points) < MIN_ROWS_FOR_CHECKS:
        return  # too few rows to judge by majority
    p = points.reshape(-1, 5, 2)
    eye_distance = float(np.median(np.linalg.norm(p[:, 1] - p[:, 0], axis=1)))
    mirrored = float(np.mean(p[:, 0, 0] > p[:, 1, 0]))
    eyes_low = float(np.mean(p[:, :2, 1].mean(axis=1) > p[:, 3:, 1].mean(axis=1)))
    if eye_distance < 2.0:
        problem = f"median eye distance {eye_distance:.3g} px: normalised, not pixel, units"
    elif mirrored > 0.5:
        problem = f"P1 has the larger x on {mirrored:.0%} of rows: expected P1 = smaller-x eye"
    elif eyes_low > 0.5:
        problem = f"eyes below the mouth on {eyes_low:.0%} of rows: expected P1X,P1Y,...,P5Y"
    else:
        boxed = np.isfinite(boxes).all(axis=1)
        rel = (p[boxed] - boxes[boxed, None, :2]) / boxes[boxed, None, 2:]
        inside = ((rel >= -0.5) & (rel <= 1.5)).all(axis=(1, 2))
        if boxed.sum() < MIN_ROWS_FOR_CHECKS or inside.mean() >= 0.5:
            return
        problem = f"{1 - inside.mean():.0%} of rows lie outside their box: another frame"
    raise ValueError(f"{source}: {problem}; fix the file (fiqa never reorders landmarks)")


def _subset_annotations(root: Path, subset: str, keys: pd.Series) -> tuple[np.ndarray, ...]:
    """Landmarks ``(N, 10)`` and valid boxes ``(N, 4)`` (NaN where absent), landmark-row mask."""
    arrays, present = {}, np.zeros(len(keys), dtype=bool)
    for kind, columns in (("landmark", LANDMARK_COLUMNS), ("bb", BOX_COLUMNS)):
        name = f"loose_{kind}_{subset}.csv"
        path = find_file(root, name)
        if path is None:
            log.warning("%s not found in %s: no %s given", name, root / "bb_landmark", kind)
            arrays[kind] = np.full((len(keys), len(columns)), np.nan)
        else:
            arrays[kind], found = _join(keys, read_annotation(path, columns), path)
            present = found if kind == "landmark" else present
    points, boxes = arrays["landmark"], arrays["bb"]
    bad_box = np.isfinite(boxes).all(axis=1) & ((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))
    if bad_box.any():
        log.warning("%s: %d boxes with width or height <= 0 ignored", subset, bad_box.sum())
    boxes[bad_box] = np.nan
    finite = np.isfinite(points).all(axis=1)
    check_landmark_convention(points[finite], boxes[finite], f"loose_landmark_{subset}.csv")
    return points, boxes, present


def read_identity_names(path: Path) -> dict[str, str]:
    """``Class_ID -> Name`` from ``identity_meta.csv``, robust to its quirks.

    The official file has spaces after commas, quoted names, trailing commas on most rows and
    a few names whose comma split them into two fields; those fields are joined back.
    """
    names: dict[str, str] = {}
    n_tail = 3  # Sample_Num, Flag, Gender follow the name
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        for raw in csv.reader(handle, skipinitialspace=True):
            fields = [f.strip() for f in raw]
            while fields and not fields[-1]:
                fields.pop()
            if len(fields) < 2:
                continue
            if fields[0].lower() == "class_id":
                n_tail = max(len(fields) - 2, 0)
                continue
            end = len(fields) - n_tail if len(fields) > 2 + n_tail else 2
            names[fields[0]] = ",".join(fields[1:end]).strip().strip('"').strip()
    return names


def read_reference_list(path: Path) -> list[tuple[str | None, str]]:
    """``(subset or None, identity/stem)`` per entry of a FaceQnet-style reference list.

    Accepted: one entry per line, ``n000002/0001_01.jpg``, ``n000002/0001_01`` or either with a
    subset (``train/...``) or any leading folders; blank lines and ``#`` comments are skipped.
    A CSV (``,`` ``;`` tab or space separated) works too: the first line is a header when no
    field holds a ``/``, and then the column named path, file, filename, image, reference or
    name_id is used; otherwise the first column.
    """
    entries: list[tuple[str | None, str]] = []
    column = None  # chosen on the first line
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        fields = [f.strip("\"'") for f in re.split(r"[,;\t ]+", line.strip().replace("\\", "/"))]
        if not fields[0] or fields[0].startswith("#"):
            continue
        if column is None:
            lower = [f.lower() for f in fields]
            column = next((lower.index(n) for n in REFERENCE_COLUMNS if n in lower), 0)
            if not any("/" in f for f in fields):
                continue  # a header
        value = fields[column] if column < len(fields) else ""
        parts = re.sub(_IMAGE_SUFFIX, "", value.removeprefix("./")).strip("/").split("/")
        if len(parts) < 2:
            log.warning("%s: skipping malformed reference line %r", path, line)
            continue
        entries.append((parts[-3] if len(parts) >= 3 else None, f"{parts[-2]}/{parts[-1]}"))
    return entries


def _mark_references(table: pd.DataFrame, path: Path) -> pd.Series:
    """Bool column: the rows a reference list names (first entry per identity wins)."""
    entries = read_reference_list(path)
    chosen: dict[str, tuple[str | None, str]] = {}
    for subset, key in entries:
        chosen.setdefault(key.split("/")[0], (subset, key))
    if len(chosen) < len(entries):
        log.warning("%s: %d second references ignored", path, len(entries) - len(chosen))
    known = set(table["identity"])
    foreign = [i for i in chosen if i not in known]
    if foreign:
        log.info("%s: %d references name identities outside the subsets read", path, len(foreign))
    refs = [chosen[i] for i in chosen if i in known]
    subsets = set(table["subset"])
    full = {f"{s}/{k}" for s, k in refs if s in subsets}
    plain = {k for s, k in refs if s not in subsets}
    marked = (table["subset"] + "/" + table["name_id"]).isin(full) | table["name_id"].isin(plain)
    missing = {k for _, k in refs} - set(table.loc[marked, "name_id"])
    if missing:
        log.warning("%s: %d references name no file: %s", path, len(missing), sorted(missing)[:3])
    n_without = len(known) - table.loc[marked, "identity"].nunique()
    if n_without:
        log.warning("%s: %d of %d identities have no reference image", path, n_without, len(known))
    return marked


def read_vggface2(
    root: str | Path,
    subsets: Iterable[str] = ("train",),
    landmarks: bool = True,
    references: str | Path | None = None,
    meta: bool = True,
) -> pd.DataFrame:
    """The source table of a VGGFace2 tree, one row per file, sorted by subset, identity, file.

    Args:
        root: Dataset root holding ``<subset>/<identity>/`` folders.
        subsets: Subset folders to read (``train``, ``test``).
        landmarks: Join the loose landmark and box CSVs; when False both columns are all None.
        references: FaceQnet reference list (see :func:`read_reference_list`); a relative path
            that does not exist as given is looked up under ``root``.
        meta: Add a ``name`` column from ``identity_meta.csv`` (None where absent).

    Returns:
        Columns ``path`` (``subset/identity/file``), ``identity``, ``subset``, ``landmarks``
        (10 floats in ArcFace order, or None), ``box`` (``[x, y, w, h]`` or None),
        ``landmark_issue`` (``"missing"``: no CSV row, ``"nan"``: non-finite or short row, None),
        then ``name`` and ``is_reference`` when asked for. ``attrs["damaged"]``: (path,
        reason) of the entries that are no ``<identity>/<file>`` (sub-folders, dangling links,
        ...), failure rows of prepare.

    Raises:
        FileNotFoundError: If ``root``, a subset folder or the reference list is missing.
        ValueError: If no file is found, or a CSV breaks the format or landmark convention.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VGGFace2 data.root {root} is not a directory")
    wanted = sorted({subsets} if isinstance(subsets, str) else set(subsets))
    listed = [_list_subset(root, s) for s in wanted]
    damaged = [entry for subset in listed for entry in subset.attrs.get("damaged", [])]
    table = pd.concat(listed, ignore_index=True)
    if table.empty:
        raise ValueError(f"VGGFace2 data.root {root} holds no {wanted} <identity>/<image> files")
    points = np.full((len(table), 10), np.nan)
    boxes = np.full((len(table), 4), np.nan)
    has_row = np.zeros(len(table), dtype=bool)
    for subset in wanted if landmarks else []:
        at = (table["subset"] == subset).to_numpy()
        points[at], boxes[at], has_row[at] = _subset_annotations(root, subset, table["name_id"][at])
    finite = np.isfinite(points).all(axis=1)
    box_ok = np.isfinite(boxes).all(axis=1)
    table["landmarks"] = pd.Series(points.tolist(), dtype=object).where(finite, None)
    table["box"] = pd.Series(boxes.tolist(), dtype=object).where(box_ok, None)
    issue = np.where(has_row, np.where(finite, None, "nan"), "missing") if landmarks else None
    table["landmark_issue"] = pd.Series(issue, index=table.index, dtype=object)
    issues = table["landmark_issue"].value_counts().to_dict()
    log.info("VGGFace2 %s under %s: %d files, landmark issues %s", wanted, root, len(table), issues)
    if meta:
        meta_path = find_file(root, "identity_meta.csv", (".", "meta"))
        names = read_identity_names(meta_path) if meta_path else {}
        log.info("identity names from %s", meta_path or "nowhere (no identity_meta.csv)")
        name = table["identity"].map(names).astype(object)
        table["name"] = name.where(name.notna(), None)
    if references:  # None or an empty config value: no reference list
        ref_path = Path(references)
        ref_path = ref_path if ref_path.is_absolute() or ref_path.exists() else root / ref_path
        if not ref_path.is_file():
            raise FileNotFoundError(f"data.references {references} not found (also under {root})")
        table["is_reference"] = _mark_references(table, ref_path).astype(bool)
    table = table.drop(columns="name_id")
    table.attrs = {"damaged": damaged}
    return table
