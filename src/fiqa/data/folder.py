"""Identity-folder datasets (``root/<identity>/<image>``) and identity-disjoint splits."""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


#: Reasons a folder entry is not listed as an image; prepare turns each into a failure row.
LISTING_FAILURE_REASONS = (
    "outside_identity_folder",  # an image directly in the root, not in an <identity>/ folder
    "nested_folder",  # a folder inside an identity folder (not descended into)
    "not_a_file",  # a folder named like an image (x.jpg/), a FIFO, socket or device
    "dangling_link",  # a symbolic link whose target does not exist
    "symlink_loop",  # a symbolic link that resolves to itself (ELOOP)
    "unreadable",  # an entry or identity folder that cannot be inspected (permissions, I/O)
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def _entry_kind(entry: os.DirEntry) -> str:
    """``file``, ``dir`` (both after following symbolic links) or a listing failure reason."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError as err:  # DirEntry tests raise on all but a missing link target
        return "symlink_loop" if err.errno == errno.ELOOP else "unreadable"
    return "dangling_link" if entry.is_symlink() else "not_a_file"


def _visible_entries(folder: Path) -> list[tuple[str, str]]:
    """(name, kind) of the non-hidden entries of ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted((e.name, _entry_kind(e)) for e in entries if not e.name.startswith("."))


def _list_identity(root: Path, identity: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Image paths (relative to ``root``) and (path, reason) of the odd entries of one
    identity folder."""
    try:
        entries = _visible_entries(root / identity)
    except OSError as err:
        return [], [(identity, "symlink_loop" if err.errno == errno.ELOOP else "unreadable")]
    images, damaged = [], []
    for name, kind in entries:
        path = f"{identity}/{name}"
        if kind == "file":
            images.append(path)
        elif kind == "dir":
            image_like = name.lower().endswith(IMAGE_SUFFIXES)
            damaged.append((path, "not_a_file" if image_like else "nested_folder"))
        else:
            damaged.append((path, kind))
    return images, damaged


def list_identity_folder(root: str | Path) -> pd.DataFrame:
    """Every regular file under ``root/<identity>/`` as a table (path relative to root, identity).

    All files count, whatever their suffix: a non-image file becomes a failure row later instead
    of silently disappearing. Hidden files and folders (``.name``) are ignored, and so are
    non-image files in the root (``metadata.csv``, a README: counted in one log line). Other
    entries (images in the root, sub-folders, dangling links, symbolic-link loops, unreadable
    folders) are listed in ``table.attrs["damaged"]`` as (path, reason), reasons from
    :data:`LISTING_FAILURE_REASONS`, with one warning counting them; the listing never aborts
    on them. Listing uses ``os.scandir`` (one system call per folder entry batch, fast on
    millions of files; a stat only for symbolic links).

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
        ValueError: If no identity folder holds a file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory")
    rows, damaged, sidecars = [], [], []
    for name, kind in _visible_entries(root):
        if kind == "dir":
            images, odd = _list_identity(root, name)
            rows += [(path, name) for path in images]
            damaged += odd
        elif kind == "file" and not name.lower().endswith(IMAGE_SUFFIXES):
            sidecars.append(name)  # metadata.csv, README: beside the dataset, not in it
        else:
            damaged.append((name, "outside_identity_folder" if kind == "file" else kind))
    if sidecars:
        log.info("%s: %d files beside the identity folders are not images, not listed: %s",
                 root, len(sidecars), ", ".join(sidecars[:5]))  # fmt: skip
    if damaged:
        counts = dict(Counter(reason for _, reason in damaged))
        log.warning("%s: %d entries are not <identity>/<file> images: %s (first: %s)",
                    root, len(damaged), counts, damaged[0][0])  # fmt: skip
    if not rows:
        raise ValueError(f"data.root {root} holds no <identity>/<image> files")
    table = pd.DataFrame(rows, columns=["path", "identity"])
    table.attrs["damaged"] = damaged
    return table


def assign_splits(
    identities: pd.Series,
    val_fraction: float,
    seed: int,
    max_faces: int | None = None,
    min_images: int = 1,
) -> pd.Series:
    """Identity-disjoint train/val split, deterministic from ``seed``.

    ``round(val_fraction * n)`` of the ``n`` identities with at least ``min_images`` faces (at
    least one when there are two or more) go to validation, taken in a seeded order of their
    sorted names; with ``max_faces``, that order stops before the held-out faces would exceed
    ``max_faces`` (still at least one identity), so a dataset of millions holds out a validation
    split of bounded size. Identities with fewer faces always train: adding single-image
    identities with ``min_images=2`` leaves the validation split as it was without them.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"prepare.val_fraction must be in [0, 1), got {val_fraction}")
    unique, codes, counts = np.unique(identities.to_numpy(), return_inverse=True,
                                      return_counts=True)  # fmt: skip
    eligible = np.flatnonzero(counts >= min_images)
    n_val = round(val_fraction * len(eligible))
    if val_fraction > 0 and len(eligible) >= 2:
        n_val = min(max(n_val, 1), len(eligible) - 1)
    chosen = eligible[np.random.default_rng(seed).permutation(len(eligible))[:n_val]]
    if max_faces is not None and n_val:
        fits = int(np.searchsorted(np.cumsum(counts[chosen]), max_faces, side="right"))
        chosen = chosen[: max(fits, 1)]
    held_out = np.zeros(len(unique), bool)
    held_out[chosen] = True
    return pd.Series(np.where(held_out[codes], "val", "train"), index=identities.index,
                     name=identities.name)  # fmt: skip
