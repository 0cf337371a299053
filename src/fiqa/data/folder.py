"""Identity-folder datasets (``root/<identity>/<image>``) and identity-disjoint splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def list_identity_folder(root: str | Path) -> pd.DataFrame:
    """Every regular file under ``root/<identity>/`` as a table (path relative to root, identity).

    All files count, whatever their suffix: a non-image file becomes a failure row later instead
    of silently disappearing. Hidden files and folders (``.name``) are ignored. Listing uses
    ``os.scandir`` (one system call per folder entry batch, fast on millions of files).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory")
    with os.scandir(root) as entries:
        identities = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    rows = []
    for identity in identities:
        with os.scandir(root / identity) as entries:
            names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
        rows += [(f"{identity}/{name}", identity) for name in names]
    if not rows:
        raise ValueError(f"data.root {root} holds no <identity>/<image> files")
    return pd.DataFrame(rows, columns=["path", "identity"])


def assign_splits(identities: pd.Series, val_fraction: float, seed: int) -> pd.Series:
    """Identity-disjoint train/val split, deterministic from ``seed``.

    ``round(val_fraction * n_identities)`` identities (at least one when there are two or more)
    go to validation; the choice depends only on the sorted identity names and the seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"prepare.val_fraction must be in [0, 1), got {val_fraction}")
    unique = np.array(sorted(identities.unique()))
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    val_ids = set(unique[order[:n_val]])
    return identities.map(lambda ident: "val" if ident in val_ids else "train")
