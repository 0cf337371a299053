"""Data module for the quality regressor: prepared faces joined with a labels table.

Train/val come from the manifest ``split`` column (identity-disjoint, made by prepare).
Augmentations are geometry-neutral (horizontal flip, small integer shift / small scale):
blur, noise or compression would change the true quality without changing the label.

Determinism: the train sampler draws the permutation and one augmentation seed per sample
from a seeded generator in the main process, and each sample's augmentation is seeded with
its own seed, so a given ``seed`` gives the same batches whatever ``num_workers`` is.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fiqa.core.align import retarget_faces
from fiqa.data.face_store import PreparedFaces
from fiqa.quality.targets import TargetScaling

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


def geometry_neutral_augmentation(shift_px: int = 4, scale: float = 0.05) -> A.Compose:
    """Horizontal flip plus a small integer shift / scale, borders reflected (no fill colour).

    Args:
        shift_px: Largest shift in pixels (integer shifts copy pixels exactly).
        scale: Largest relative zoom; 0 disables zooming (no interpolation at all).
    """
    transforms: list[A.BasicTransform] = [A.HorizontalFlip(p=0.5)]
    if shift_px > 0 or scale > 0:
        transforms.append(
            A.Affine(
                translate_px=(-shift_px, shift_px),
                scale=(1.0 - scale, 1.0 + scale),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.5,
            )
        )
    compose = A.Compose(transforms)
    seed_augmentation(compose, 0)
    return compose


def seed_augmentation(transform: A.Compose, seed: int) -> None:
    """Seed a Compose with ONE shared random stream.

    ``Compose.set_random_seed`` gives every child the same seed, which makes their random
    draws identical (e.g. flip whenever shift): a shared generator keeps them independent.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and random from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SeededShuffleSampler(Sampler[tuple[int, int]]):
    """Shuffles with its own generator; yields ``(index, augmentation_seed)`` pairs.

    Epoch ``e``'s order and seeds come from a generator seeded with ``(seed, e)``, so an epoch
    has the same batches whether the run was resumed or not. ``skip`` leaves out the first items
    of the first epoch iterated (the ones a run killed mid-epoch already trained on); Lightning's
    ``set_epoch`` moves the sampler on to the next epoch.
    """

    def __init__(self, n: int, seed: int, epoch: int = 0, skip: int = 0) -> None:
        self.n, self.seed, self.epoch, self.skip = n, seed, epoch, skip

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s order next (Lightning calls this before each epoch)."""
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, np.uint64)
        generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        order = torch.randperm(self.n, generator=generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=generator).tolist()
        return iter(list(zip(order, seeds, strict=True))[self.skip :])


class LabelledFaces(Dataset):
    """Rows of a labelled manifest -> {"image", "quality", "sample_id"} samples, re-warped from
    the prepared template to the model's when ``retarget`` names both."""

    def __init__(
        self,
        prepared: PreparedFaces,
        table: pd.DataFrame,
        transform: A.Compose | None,
        retarget: tuple[str, str] | None = None,
    ) -> None:
        self.prepared = prepared
        self.retarget = retarget  # (prepared template, model template) when they differ
        self.shards = table["shard"].to_numpy()
        self.offsets = table["offset"].to_numpy(np.int64)
        self.nbytes = table["nbytes"].to_numpy(np.int64)
        self.labels = table["label"].to_numpy(np.float32)
        self.sample_ids = table["sample_id"].to_numpy(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        face = self.prepared.face_at(self.shards[index], self.offsets[index], self.nbytes[index])
        if self.retarget is not None:
            face = retarget_faces(face[None], *self.retarget)[0]
        if self.transform is not None:
            if aug_seed is not None:
                seed_augmentation(self.transform, aug_seed)
            face = self.transform(image=face)["image"]
        image = torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1))).float()
        return {
            "image": image,
            "quality": torch.tensor(self.labels[index]),
            "sample_id": torch.tensor(self.sample_ids[index]),
        }


class LabelledFeatures(Dataset):
    """Rows of a labelled manifest -> {"features", "quality", "sample_id"} samples from cached
    frozen-part outputs (``fiqa.train.frozen``); with ``flip``, a sample's mirror features are
    taken with probability 1/2, seeded by its augmentation seed."""

    def __init__(self, table: pd.DataFrame, features: Mapping[str, np.ndarray], flip: bool):
        self.rows = table["manifest_row"].to_numpy(np.int64)
        self.labels = table["label"].to_numpy(np.float32)
        self.sample_ids = table["sample_id"].to_numpy(np.int64)
        self.features, self.flip = features, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        mirrored = self.flip and aug_seed is not None and random.Random(aug_seed).random() < 0.5
        values = self.features["mirror" if mirrored else "direct"][self.rows[index]]
        return {
            "features": torch.from_numpy(np.asarray(values, dtype=np.float32)),
            "quality": torch.tensor(self.labels[index]),
            "sample_id": torch.tensor(self.sample_ids[index]),
        }


def join_labels(manifest: pd.DataFrame, labels: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Train/val manifest rows with their label in column ``label``; rows without a label (NaN)
    are left out and counted; errors name bad ids."""
    if "sample_id" not in labels.columns or label_column not in labels.columns:
        raise ValueError(
            f"labels table needs columns 'sample_id' and {label_column!r}; "
            f"it has {list(labels.columns)}"
        )
    if labels["sample_id"].duplicated().any():
        dup = labels.loc[labels["sample_id"].duplicated(), "sample_id"].head(10).tolist()
        raise ValueError(f"labels table has duplicate sample_ids, e.g. {dup}")
    rows = manifest.assign(manifest_row=np.arange(len(manifest)))
    rows = rows[rows["split"].isin(SPLITS)]
    missing = rows.loc[~rows["sample_id"].isin(labels["sample_id"]), "sample_id"]
    if len(missing):
        raise ValueError(
            f"{len(missing)} train/val sample(s) of the manifest have no label, e.g. "
            f"sample_ids {missing.head(10).tolist()}: re-run the label stage on this prepared set"
        )
    table = rows.merge(
        labels[["sample_id", label_column]].rename(columns={label_column: "label"}),
        on="sample_id",
        how="left",
        validate="one_to_one",
    )
    values = table["label"].to_numpy(np.float64)
    if np.isinf(values).any():
        bad = table.loc[np.isinf(values), "sample_id"].head(10).tolist()
        raise ValueError(f"infinite {label_column!r} labels for sample_ids {bad}")
    unlabelled = np.isnan(values)  # e.g. single-image identities under identity-based labels
    if unlabelled.any():
        log.info("%d of %d train/val samples have no %r label and are left out",
                 int(unlabelled.sum()), len(table), label_column)  # fmt: skip
    return table[~unlabelled].reset_index(drop=True)


class QualityDataModule(pl.LightningDataModule):
    """Prepared faces + quality labels as train/val DataLoaders of dict batches.

    Args:
        prepared_dir: Prepared directory (manifest + face shards).
        labels_path: Labels parquet with ``sample_id`` and ``label_column``.
        batch_size: Batch size of both loaders.
        num_workers: DataLoader workers.
        seed: Seed of the train shuffle and augmentations.
        augment: Apply the geometry-neutral train augmentation.
        target_scaling: How labels become regression targets (``fiqa.quality.targets``),
            fitted on the train split: ``rank``, ``minmax`` or ``none``.
        label_column: Column of the labels table to regress.
        aug_shift_px: Largest augmentation shift in pixels.
        aug_scale: Largest augmentation relative zoom.
        template: Alignment template the model takes (its backbone's); faces prepared on
            another template are re-warped (``fiqa.core.align.retarget_faces``).
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        labels_path: str | Path,
        batch_size: int,
        num_workers: int,
        seed: int,
        augment: bool,
        target_scaling: str,
        label_column: str = "quality",
        aug_shift_px: int = 4,
        aug_scale: float = 0.05,
        template: str = "arcface_112",
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.labels_path = Path(labels_path)
        self.template = template
        self.retarget: tuple[str, str] | None = None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.label_column = label_column
        self.target_scaling = target_scaling
        self.scaling: TargetScaling | None = None
        self.aug_shift_px = aug_shift_px
        self.aug_scale = aug_scale
        self.table: pd.DataFrame | None = None
        self.prepared: PreparedFaces | None = None
        # cached frozen-part outputs by manifest row (fiqa.train.frozen): batches of features
        self.features: Mapping[str, np.ndarray] | None = None
        self.start = (0, 0)  # epoch, samples of it already trained (start_at)

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and labels, join them, check the face size."""
        if self.table is not None:
            return
        self.prepared = PreparedFaces(self.prepared_dir)
        if not self.labels_path.is_file():
            raise FileNotFoundError(f"{self.labels_path} not found: run the label stage first")
        labels = pd.read_parquet(self.labels_path)
        try:
            self.table = join_labels(self.prepared.manifest, labels, self.label_column)
        except ValueError as err:
            raise ValueError(f"{self.labels_path}: {err}") from err
        for split in SPLITS:
            if not (self.table["split"] == split).any():
                raise ValueError(f"{self.prepared_dir}: no {split!r} rows in the manifest")
        train = self.table["split"] == "train"
        self.scaling = TargetScaling.fit(self.target_scaling, self.table.loc[train, "label"])
        self.table["raw_label"] = self.table["label"]
        self.table["label"] = self.scaling.apply(self.table["label"].to_numpy())
        source = self.prepared.template
        self.retarget = (source, self.template) if source != self.template else None
        counts = self.table["split"].value_counts().to_dict()
        log.info("quality data: %s samples per split from %s", counts, self.prepared_dir)

    def _split(self, split: str) -> pd.DataFrame:
        if self.table is None:
            self.setup()
        assert self.table is not None
        return self.table[self.table["split"] == split].reset_index(drop=True)

    def _loader(self, dataset: Dataset, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            worker_init_fn=seed_worker,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def use_features(self, features: Mapping[str, np.ndarray]) -> None:
        """Serve cached frozen-part outputs (``direct`` and ``mirror``, by manifest row) instead
        of images from now on."""
        self.features = features

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented train split (seeded; independent of ``num_workers``)."""
        table = self._split("train")
        if self.features is not None:
            dataset: Dataset = LabelledFeatures(table, self.features, flip=self.augment)
        else:
            transform = (
                geometry_neutral_augmentation(self.aug_shift_px, self.aug_scale)
                if self.augment
                else None
            )
            dataset = LabelledFaces(self.prepared, table, transform, self.retarget)
        return self._loader(dataset, SeededShuffleSampler(len(dataset), self.seed, *self.start))

    def start_at(self, epoch: int, batches: int) -> None:
        """Start the train sampler at ``epoch`` after ``batches`` of its batches (a run resumed
        from a checkpoint: ``fiqa.train.staging.train_position``)."""
        self.start = (epoch, batches * self.batch_size)

    def val_dataloader(self) -> DataLoader:
        """Validation split in manifest order, no augmentation."""
        return self._plain_loader(self._split("val"))  # sets up the module first

    def calibration_dataloader(self, max_faces: int) -> DataLoader:
        """At most ``max_faces`` training faces (a sample seeded by ``seed``, in manifest
        order), no augmentation: what the calibration is fitted on."""
        table = self._split("train")
        if len(table) > max_faces:
            rows = np.random.default_rng(self.seed).choice(len(table), max_faces, replace=False)
            table = table.iloc[np.sort(rows)].reset_index(drop=True)
        return self._plain_loader(table)

    def _plain_loader(self, table: pd.DataFrame) -> DataLoader:
        if self.features is not None:
            return self._loader(LabelledFeatures(table, self.features, flip=False), None)
        return self._loader(LabelledFaces(self.prepared, table, None, self.retarget), None)

    def val_faces(self, k: int) -> dict[str, torch.Tensor]:
        """The first ``k`` validation faces as one batch of images (for sample grids)."""
        dataset = LabelledFaces(self.prepared, self._split("val").head(k), None, self.retarget)
        return next(iter(DataLoader(dataset, batch_size=k)))

    def val_dataframe(self) -> pd.DataFrame:
        """Validation rows: sample_id, identity, path, shard, offset and ``label``."""
        return self._split("val")[["sample_id", "identity", "path", "shard", "offset", "label"]]
