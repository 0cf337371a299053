"""One run's extraction settings and FR models: ``Extractor.outputs(fr, faces, request)``.

``ExtractionSettings`` is the ``extract`` config group and ``FREntry`` one FR model entry (the
``fr`` group, or an item of ``label.fr_models`` / ``eval.fr_models``); both are the schemas the
config is validated against, so every value is stated once, in ``conf/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fiqa.core.containers import plain_container
from fiqa.extract.cache import CacheEntry
from fiqa.extract.faces import FaceSource
from fiqa.extract.predict import cache_entry, extract
from fiqa.extract.products import Request
from fiqa.fr import FRModel, load_fr_model


@dataclass
class ExtractionSettings:
    """How extraction runs (the ``extract`` config group).

    Attributes:
        accelerator: Lightning accelerator (cpu | gpu | auto).
        devices: Device count, ids or "auto"; > 1 with a DDP strategy: each rank writes its
            own part files.
        num_nodes: Nodes of a multi-node run.
        strategy: Lightning strategy.
        precision: Lightning precision; part of the cache key (bf16 gives other embeddings).
        num_workers: Spawned DataLoader workers decoding faces.
        part_rows: Rows a rank buffers before writing a part file (the resume unit).
        progress: Show Lightning's progress bar.
    """

    accelerator: str
    devices: Any
    num_nodes: int
    strategy: str
    precision: str
    num_workers: int
    part_rows: int
    progress: bool


@dataclass
class FREntry:
    """One FR model and how to run it.

    Attributes:
        name: FR registry name (``fiqa.fr``).
        weights: Weights file; None = the model's bundled file (sface only).
        batch_size: Faces per forward pass (fixed batches are the resume unit).
        flip: Embed as the mean of face and mirror.
        options: Architecture options (``conf/fr/*.yaml``).
    """

    name: str
    weights: str | None
    batch_size: int
    flip: bool
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], defaults: FREntry) -> FREntry:
        """An entry given as ``{name, weights?, options?, batch_size?, flip?}``; the batch size
        and flip it leaves out are ``defaults``' (the ``fr`` group)."""
        if entry.get("name") is None:
            raise ValueError(
                f"an FR model entry needs a 'name', got keys {sorted(map(str, entry))}"
            )
        return cls(
            name=str(entry["name"]),
            weights=entry.get("weights"),
            batch_size=int(entry.get("batch_size", defaults.batch_size)),
            flip=bool(entry.get("flip", defaults.flip)),
            options=plain_container(entry.get("options") or {}),
        )

    def model_config(self) -> dict[str, Any]:
        """What ``fiqa.fr.load_fr_model`` needs: name, weights, options."""
        return {"name": self.name, "weights": self.weights, "options": dict(self.options)}


class Extractor:
    """Extraction with one run's cache and settings; loads each FR model once (keyed by name,
    weights and options), however many face sets or methods use it.

    Args:
        cache_root: Directory of the extraction cache (``paths.cache``).
        settings: The ``extract`` config group.
    """

    def __init__(self, cache_root: str | Path, settings: ExtractionSettings) -> None:
        self.cache_root = Path(cache_root)
        self.settings = settings
        self._models: dict[str, FRModel] = {}

    def model(self, fr: FREntry) -> FRModel:
        """The loaded model of an entry."""
        key = json.dumps(fr.model_config(), sort_keys=True, default=str)
        if key not in self._models:
            self._models[key] = load_fr_model(fr.model_config())
        return self._models[key]

    def cache_entry(self, fr: FREntry, source: FaceSource) -> CacheEntry:
        """Where ``outputs`` of the entry's model on ``source`` are cached: ``key.json`` and one
        ``<product>.npy`` per product (``embedding.npy``: (n, D) float16 unit rows)."""
        return cache_entry(self.model(fr), source, cache_root=self.cache_root, flip=fr.flip,
                           precision=self.settings.precision)  # fmt: skip

    def cached(self, fr: FREntry, source: FaceSource, request: Request | None = None) -> bool:
        """Whether ``outputs`` of these arguments are all in the cache (no FR pass)."""
        stems = (request or Request()).stems(fr.batch_size)
        return not self.cache_entry(fr, source).missing(list(stems.values()))

    def outputs(
        self, fr: FREntry, source: FaceSource, request: Request | None = None
    ) -> dict[str, np.ndarray]:
        """``fiqa.extract.extract`` of ``source`` by the entry's model, with its flip and batch
        size and this run's cache and Trainer settings."""
        return extract(
            self.model(fr),
            source,
            request,
            cache_root=self.cache_root,
            flip=fr.flip,
            batch_size=fr.batch_size,
            num_workers=self.settings.num_workers,
            part_rows=self.settings.part_rows,
            trainer=asdict(self.settings),
        )
