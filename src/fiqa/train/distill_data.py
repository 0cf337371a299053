"""Prepared faces with identity class ids, for teacher-student distillation.

Class ids 0..K-1 are the sorted identities of the ``train`` split; ``val`` faces (other
identities, identity-disjoint) get -1. Only the train loader is augmented (geometry-neutral,
seeded like the quality data module).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fiqa.data.face_store import PreparedFaces
from fiqa.train.datamodule import (
    LabelledFaces,
    SeededShuffleSampler,
    geometry_neutral_augmentation,
    seed_worker,
)

log = logging.getLogger(__name__)


class IdentityFaces(LabelledFaces):
    """Manifest rows -> ``{"image", "label" (int64 class id, -1 unknown), "sample_id"}``."""

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(key)
        sample["label"] = sample.pop("quality").long()  # float32 holds ids < 2**24 exactly
        return sample


class IdentityFacesDataModule(pl.LightningDataModule):
    """Prepared faces with identity class ids for distillation.

    Class ids 0..K-1 are the sorted identities of the ``train`` split; ``val`` faces (other
    identities) get -1. Only the train loader is augmented (geometry-neutral, seeded).

    Args:
        prepared_dir: Prepared directory (manifest + face shards).
        batch_size: Batch size of both loaders.
        num_workers: DataLoader workers.
        seed: Seed of the train shuffle and augmentations.
        augment: Apply the geometry-neutral train augmentation.
        aug_shift_px: Largest augmentation shift in pixels.
        aug_scale: Largest augmentation relative zoom.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        batch_size: int,
        num_workers: int,
        seed: int,
        augment: bool,
        aug_shift_px: int = 4,
        aug_scale: float = 0.05,
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.augment, self.aug_shift_px, self.aug_scale = augment, aug_shift_px, aug_scale
        self.prepared: PreparedFaces | None = None
        self.identities: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and number the train identities."""
        if self.prepared is not None:
            return
        prepared = PreparedFaces(self.prepared_dir)
        manifest = prepared.manifest
        self.identities = sorted(manifest.loc[manifest["split"] == "train", "identity"].unique())
        if not self.identities:
            raise ValueError(f"{self.prepared_dir}: no 'train' rows in the manifest")
        ids = {name: k for k, name in enumerate(self.identities)}
        prepared.manifest = manifest.assign(label=manifest["identity"].map(ids).fillna(-1))
        self.prepared = prepared
        log.info("distillation data: %d train identities from %s", len(ids), self.prepared_dir)

    @property
    def num_classes(self) -> int:
        """Number of train identities K (after ``setup``)."""
        self.setup()
        return len(self.identities)

    def _dataset(self, split: str, augment: bool) -> IdentityFaces:
        self.setup()
        assert self.prepared is not None
        rows = self.prepared.manifest[self.prepared.manifest["split"] == split]
        transform = (
            geometry_neutral_augmentation(self.aug_shift_px, self.aug_scale) if augment else None
        )
        return IdentityFaces(self.prepared, rows.reset_index(drop=True), transform)

    def _loader(self, dataset: IdentityFaces, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            worker_init_fn=seed_worker,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented train split; full batches only (BatchNorm needs > 1 sample)."""
        dataset = self._dataset("train", self.augment)
        sampler = SeededShuffleSampler(len(dataset), self.seed)
        return self._loader(dataset, sampler=sampler, drop_last=len(dataset) > self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        """Validation split in manifest order (labels -1), or [] when there is none."""
        dataset = self._dataset("val", False)
        return self._loader(dataset) if len(dataset) else []
