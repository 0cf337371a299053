"""On-disk cache of per-face FR outputs, keyed by (faces, FR model, preprocessing).

Layout of one cache entry ``<root>/<model>-<key16>/``::

    key.json               what the key hashes: faces fingerprint, model, weights, templates, flip
    embedding.npy          (n, D) float16, L2-normalised        } one file per finished product,
    <product>[-<hash>].npy (n, ...) its dtype, per settings     } written atomically after all
                           (norm, low_level, serfiq-..., ...)   } rows are done
    parts-<hash>/          rank<r>-<id>.npz partial results of an unfinished pass (rows + values)

A pass computes the missing products for fixed row batches (batch b = rows [b*B, (b+1)*B)); each
rank writes the batches it owns into its own part files, so a killed run resumes from the batches
on disk and a merge is the same for any number of ranks.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fiqa.core.atomic import atomic_path, write_json_atomic
from fiqa.core.provenance import digest
from fiqa.extract.faces import FaceSource
from fiqa.fr.model import FRModel

log = logging.getLogger(__name__)


def entry_key(source: FaceSource, model: FRModel, flip: bool, precision: str) -> dict:
    """The fields that identify a cache entry."""
    info = model.info
    return {
        "faces": source.fingerprint,
        "n": source.n,
        "source_template": source.template,
        "fr_model": info.name,
        "weights_sha256": info.weights_sha256,
        "model_template": info.template,
        "input_size": list(info.input_size),
        "flip": bool(flip),
        "precision": precision,
    }


class CacheEntry:
    """One ``<root>/<model>-<key>/`` directory."""

    def __init__(self, root: str | Path, key: dict):
        self.key = key
        self.directory = Path(root) / f"{key['fr_model']}-{digest(key, 16)}"
        self.n = int(key["n"])

    def path(self, product: str) -> Path:
        return self.directory / f"{product}.npy"

    def missing(self, products: list[str]) -> list[str]:
        return [p for p in products if not self.path(p).is_file()]

    def parts_dir(self, products: list[str]) -> Path:
        return self.directory / f"parts-{digest(sorted(products), 12)}"

    def open(self) -> None:
        """Create the directory and record (or check) its key."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if key_file.is_file():
            stored = json.loads(key_file.read_text())
            if stored != self.key:
                raise ValueError(f"{key_file} holds another key: {stored} vs {self.key}")
        else:
            write_json_atomic(key_file, self.key)

    def done_batches(self, products: list[str], batch_size: int) -> set[int]:
        """Batches whose rows are already in part files (a batch is always written whole)."""
        done: set[int] = set()
        for part in sorted(self.parts_dir(products).glob("*.npz")):
            with np.load(part) as data:
                rows = data["rows"]
            done.update((rows[rows % batch_size == 0] // batch_size).tolist())
        return done

    def merge(self, layouts: Mapping[str, tuple[Any, int]]) -> None:
        """Assemble each product (``{file stem: (storage dtype, ndim)}``, ``Request.layouts``)
        from the part files, check every row is there, write it."""
        products = list(layouts)
        parts = sorted(self.parts_dir(products).glob("*.npz"))
        covered = np.zeros(self.n, dtype=bool)
        outputs: dict[str, np.ndarray] = {}
        tmp_paths = {}
        bad: dict[str, list[np.ndarray]] = {}
        for part in parts:
            with np.load(part) as data:
                rows = data["rows"]
                covered[rows] = True
                for product in products:
                    values = data[product]
                    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
                    if not finite.all():
                        bad.setdefault(product, []).append(rows[~finite])
                    if product not in outputs:
                        tmp = self.path(product).with_suffix(".npy.merging")
                        tmp_paths[product] = tmp
                        outputs[product] = np.lib.format.open_memmap(
                            tmp,
                            mode="w+",
                            dtype=layouts[product][0],
                            shape=(self.n, *values.shape[1:]),
                        )
                    outputs[product][rows] = values
        if bad:
            detail = "; ".join(
                f"{p} for rows {np.sort(np.concatenate(r))[:10].tolist()}" for p, r in bad.items()
            )
            for tmp in tmp_paths.values():
                tmp.unlink(missing_ok=True)
            raise FloatingPointError(
                f"{self.key['fr_model']} on faces {self.key['faces'][:12]}: non-finite {detail} "
                f"(part files kept in {self.parts_dir(products)})"
            )
        if self.n and not covered.all():
            missing = np.flatnonzero(~covered)
            raise RuntimeError(
                f"{self.directory}: {len(missing)} rows missing from the part files after "
                f"extraction (first {missing[:10].tolist()})"
            )
        for product in products:
            if product not in outputs:  # n == 0
                with atomic_path(self.path(product)) as tmp, open(tmp, "wb") as fh:
                    dtype, ndim = layouts[product]
                    np.save(fh, np.zeros((0,) * ndim, dtype))
                continue
            outputs[product].flush()
            del outputs[product]
            tmp_paths[product].replace(self.path(product))
        for part in parts:
            part.unlink()
        if parts:
            parts[0].parent.rmdir()
        log.info("cache %s: merged %s from %d part files", self.directory, products, len(parts))

    def load(self, product: str) -> np.ndarray:
        """A finished product, memory-mapped read-only: (n, d) float16 embeddings (unit rows up
        to float16 rounding; chunked consumers re-normalise), the other products in their
        storage dtype. Nothing is read into memory until used."""
        return np.load(self.path(product), mmap_mode="r")


def write_part(directory: Path, rank: int, index: int, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write one rank's buffered batches as ``rank<r>-<index>-<random>.npz``."""
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]  # not numpy's RNG: a seeded run must not reuse a name
    path = directory / f"rank{rank:03d}-{index:06d}-{token}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def unit_rows(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a cached (float16, memory-mapped) embedding product as float32 unit
    vectors (re-normalised after the float16 rounding)."""
    emb = np.asarray(embeddings[rows], dtype=np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
