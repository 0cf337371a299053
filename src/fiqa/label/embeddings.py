"""Embedding extraction over a prepared set, streamed in chunks, stored as float16."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fiqa.atomic import atomic_path, write_json_atomic
from fiqa.data.prepared import PreparedFaces
from fiqa.fr import FRModel

log = logging.getLogger(__name__)


def iter_face_chunks(
    prepared: PreparedFaces, chunk: int = 512
) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, uint8 faces) over the manifest in order; memory bounded by ``chunk``."""
    for start in range(0, len(prepared), chunk):
        rows = np.arange(start, min(start + chunk, len(prepared)))
        yield slice(rows[0], rows[-1] + 1), prepared.faces(rows)


def embed_chunks(
    model: FRModel,
    n: int,
    chunks: Iterable[tuple[slice, np.ndarray]],
    batch_size: int = 64,
    flip: bool = False,
    on_features: Callable[[slice, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """L2-normalised float32 embeddings (n, d) of faces arriving as (row slice, uint8 faces).

    ``on_features(rows, features)`` receives each chunk's backbone features, so methods that
    need them (SER-FIQ) share this single backbone pass instead of running their own.
    """
    out = np.empty((n, model.embedding_size), np.float32)
    for rows, faces in tqdm(chunks, desc=f"embed {model.info.name}", unit="chunk"):
        if flip or on_features is None:
            out[rows] = model.embed(faces, batch_size=batch_size, flip=flip)
        if on_features is not None:
            features = model.features(faces, batch_size=batch_size)
            if not flip:
                out[rows] = F.normalize(model.head(features), dim=1).cpu().numpy()
            on_features(rows, features)
    check_finite(out, model.info.name)
    return out


def embed_prepared(
    model: FRModel,
    prepared: PreparedFaces,
    batch_size: int = 64,
    flip: bool = False,
    on_features: Callable[[slice, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """``embed_chunks`` over every face of ``prepared``, in manifest order."""
    chunks = iter_face_chunks(prepared)
    return embed_chunks(model, len(prepared), chunks, batch_size, flip, on_features)


def check_finite(out: np.ndarray, name: str) -> None:
    """Raise naming the manifest rows whose embeddings are NaN or infinite."""
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise FloatingPointError(
            f"{name}: non-finite embeddings for manifest rows {bad[:10].tolist()}"
        )


def save_embeddings(directory: Path, model: FRModel, embeddings: np.ndarray, flip: bool) -> Path:
    """Store embeddings as float16 ``<name>.npy`` plus a ``<name>.json`` describing them."""
    path = directory / f"{model.info.name}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, embeddings.astype(np.float16))
    write_json_atomic(
        directory / f"{model.info.name}.json",
        {
            "fr_model": model.info.name,
            "weights_sha256": model.info.weights_sha256,
            "template": model.info.template,
            "flip": flip,
            "shape": list(embeddings.shape),
            "dtype": "float16",
        },
    )
    return path


def load_embeddings(directory: Path, name: str) -> np.ndarray:
    """Embeddings saved by ``save_embeddings`` as float32, re-normalised after the float16 trip."""
    path = directory / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run the label stage with {name!r} in label.fr_models"
        )
    emb = np.load(path).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)
