"""Quality regressor, its data module and the epoch-level correlation metrics."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from scipy import stats

from fiqa.config.defaults import datamodule_arguments, regressor_arguments
from fiqa.data.face_store import PreparedFaces, write_table
from fiqa.data.preparation import write_prepared
from fiqa.quality.metrics import average_ranks, mean_absolute_error, pearson, spearman
from fiqa.quality.model import QualityRegressor
from fiqa.train.datamodule import (
    QualityDataModule,
    geometry_neutral_augmentation,
    seed_augmentation,
)

# Frozen-backbone fits: Lightning notes the eval-mode BatchNorm layers; that is intended.
pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")

VAL_METRICS = ("val/loss", "val/spearman", "val/pearson", "val/mae")


def make_prepared(root: Path, n_ids: int = 6, per_id: int = 4, seed: int = 0) -> Path:
    """Tiny prepared dir (2 shards) with graded blur and labels; last 2 identities are val.

    Returns:
        The labels parquet path (the prepared dir is ``root / "prepared"``).
    """
    rng = np.random.default_rng(seed)
    faces, identities, splits, quality = [], [], [], []
    for ident in range(n_ids):
        base = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 1.5)
        for k in range(per_id):
            faces.append(cv2.GaussianBlur(base, (0, 0), 0.6 * k) if k else base)
            identities.append(f"id{ident}")
            splits.append("val" if ident >= n_ids - 2 else "train")
            quality.append(1.0 - k / per_id)
    prepared = write_prepared(
        root / "prepared", np.stack(faces), identities, splits, shard_size=len(faces) // 2
    )
    labels = prepared.manifest[["sample_id", "path", "identity"]].assign(quality=quality)
    write_table(root / "labels.parquet", labels)
    return root / "labels.parquet"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("quality-data")
    labels = make_prepared(root)
    return root / "prepared", labels


def tiny_trainer() -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


# --- metrics ---------------------------------------------------------------------------


def test_average_ranks_share_ties() -> None:
    ranks = average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_spearman_and_pearson_hand_case() -> None:
    preds = torch.tensor([1.0, 2.0, 2.0, 3.0])
    target = torch.tensor([1.0, 3.0, 2.0, 4.0])
    # ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): cov 4.5, variances 4.5 and 5.
    assert spearman(preds, target) == pytest.approx(4.5 / math.sqrt(4.5 * 5.0), abs=1e-12)
    assert spearman(preds, target) == pytest.approx(stats.spearmanr(preds, target)[0], abs=1e-12)
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])) == pytest.approx(
        stats.pearsonr([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])[0], abs=1e-12
    )
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([9.0, 5.0, 1.0])) == -1.0
    assert math.isnan(pearson(torch.ones(4), target))
    assert mean_absolute_error(preds, target) == pytest.approx(0.5)


# --- module ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("backbone", "vgg"),
        ("head", "deep"),
        ("loss", "huber"),
        ("scheduler", "exponential"),
        ("freeze", "all"),
    ],
)
def test_unknown_names_list_choices(key: str, value: str) -> None:
    message = (
        "unknown FR model 'vgg'; known: "
        if key == "backbone"
        else f"unknown model.{key} '{value}'; choose one of"
    )
    with pytest.raises(ValueError, match=message):
        QualityRegressor(**regressor_arguments(**{key: value}))


def test_fit_logs_metrics_and_checkpoint_round_trip(labelled: tuple[Path, Path], tmp_path: Path):
    prepared, labels = labelled
    pl.seed_everything(0, verbose=False)
    # A frozen backbone keeps this CPU test fast; test_backbone_step_uses_both_lrs covers
    # fine-tuning.
    model = QualityRegressor(**regressor_arguments(head="mlp", head_hidden=32, freeze="backbone"))
    dm = QualityDataModule(prepared, labels, **datamodule_arguments(batch_size=8, seed=0))
    trainer = tiny_trainer()
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    for name in ("train/loss", *VAL_METRICS):
        assert name in metrics, f"{name} not logged; got {sorted(metrics)}"
        assert torch.isfinite(metrics[name]), name
    assert -1.0 <= float(metrics["val/spearman"]) <= 1.0

    # Epoch metrics equal a recomputation over all val samples.
    model.eval()
    val = next(iter(torch.utils.data.DataLoader(dm.val_dataloader().dataset, batch_size=64)))
    with torch.no_grad():
        preds = model(val["image"])
    assert float(metrics["val/spearman"]) == pytest.approx(
        stats.spearmanr(preds.numpy(), val["quality"].numpy())[0], abs=1e-5
    )
    assert float(metrics["val/mae"]) == pytest.approx(
        float((preds - val["quality"]).abs().mean()), abs=1e-5
    )

    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    for overrides in ({}, {"pretrained": False}):
        loaded = QualityRegressor.load_from_checkpoint(ckpt, **overrides).eval()
        assert loaded.hparams.head_hidden == 32
        with torch.no_grad():
            assert torch.equal(loaded(val["image"]), preds)


def test_frozen_backbone_trains_head_only() -> None:
    model = QualityRegressor(
        **regressor_arguments(pretrained=False, head="linear", freeze="backbone", scheduler="none")
    )
    model.train()
    assert not model.backbone.training and model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    optimizer = model.configure_optimizers()
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in model.head.parameters()}


def test_frozen_trunk_trains_embedding_layer_and_head() -> None:
    # real SFace weights
    model = QualityRegressor(**regressor_arguments(head="linear", freeze="trunk", scheduler="none"))
    model.train()
    assert not model.backbone.trunk.training and model.backbone.embedding.training
    trunk_before = [p.detach().clone() for p in model.backbone.trunk.parameters()]
    embedding_before = model.backbone.embedding.weight.detach().clone()
    optimizer = model.configure_optimizers()
    # 4 samples: with 2, BatchNorm1d in train mode outputs +-1 whatever the input (no gradient).
    batch = {"image": torch.rand(4, 3, 112, 112) * 255,
             "quality": torch.tensor([0.2, 0.9, 0.5, 0.1]),
             "sample_id": torch.arange(4)}  # fmt: skip
    model.training_step(batch, 0).backward()
    optimizer.step()
    assert all(p.grad is None for p in model.backbone.trunk.parameters())
    trunk_after = model.backbone.trunk.parameters()
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, trunk_after, strict=True))
    assert not torch.equal(embedding_before, model.backbone.embedding.weight)


def test_backbone_step_uses_both_lrs() -> None:
    model = QualityRegressor(**regressor_arguments(head="linear", freeze="none", lr=1e-2,
                                                   backbone_lr=1e-3, scheduler="none"))  # fmt: skip
    optimizer = model.configure_optimizers()
    lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert {lrs[id(p)] for p in model.head.parameters()} == {1e-2}
    assert {lrs[id(p)] for p in model.backbone.parameters()} == {1e-3}
    decay = {
        id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]
    }
    assert decay[id(model.backbone.embedding.weight)] == 1e-4
    assert decay[id(model.backbone.trunk.stem.prelu.weight)] == 0.0
    before = model.backbone.embedding.weight.detach().clone()
    batch = {"image": torch.rand(2, 3, 112, 112) * 255, "quality": torch.tensor([0.2, 0.9]),
             "sample_id": torch.tensor([0, 1])}  # fmt: skip
    assert model.training and model.backbone.training
    model.training_step(batch, 0).backward()
    optimizer.step()
    assert not torch.equal(before, model.backbone.embedding.weight)


def test_nan_loss_names_the_batch() -> None:
    model = QualityRegressor(**regressor_arguments(pretrained=False, head="linear"))
    batch = {
        "image": torch.rand(2, 3, 112, 112) * 255,
        "quality": torch.tensor([0.5, float("nan")]),
        "sample_id": torch.tensor([11, 12]),
    }
    with pytest.raises(FloatingPointError, match=r"batch 7 \(first sample_ids \[11, 12\]\)"):
        model.training_step(batch, 7)


# --- data module -----------------------------------------------------------------------


def test_datamodule_batches_and_val_dataframe(labelled: tuple[Path, Path]) -> None:
    dm = QualityDataModule(*labelled, **datamodule_arguments(batch_size=8, seed=3))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (8, 3, 112, 112)
    assert batch["quality"].dtype == torch.float32 and batch["sample_id"].dtype == torch.int64
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 255.0
    val = dm.val_dataframe()
    assert {"sample_id", "identity", "path", "label"} <= set(val.columns)
    assert set(val["identity"]) == {"id4", "id5"} and len(val) == 8
    train_ids = set(dm.table.loc[dm.table["split"] == "train", "identity"])
    assert train_ids.isdisjoint(val["identity"])


def test_datamodule_same_seed_same_first_batch(labelled: tuple[Path, Path]) -> None:
    def first_batch(seed: int, workers: int) -> dict[str, torch.Tensor]:
        dm = QualityDataModule(
            *labelled, **datamodule_arguments(batch_size=8, seed=seed, num_workers=workers)
        )
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))

    a, b, c = first_batch(5, 0), first_batch(5, 2), first_batch(6, 0)
    assert torch.equal(a["sample_id"], b["sample_id"]) and torch.equal(a["image"], b["image"])
    assert not torch.equal(a["sample_id"], c["sample_id"])


def test_missing_labels_are_named(labelled: tuple[Path, Path], tmp_path: Path) -> None:
    prepared, labels = labelled
    partial = pd.read_parquet(labels)
    partial = partial[~partial["sample_id"].isin([3, 20])]
    write_table(tmp_path / "partial.parquet", partial)
    dm = QualityDataModule(prepared, tmp_path / "partial.parquet", **datamodule_arguments())
    with pytest.raises(ValueError, match=r"2 train/val sample\(s\).*sample_ids \[3, 20\]"):
        dm.setup("fit")


def test_augmentation_is_geometry_neutral(labelled: tuple[Path, Path]) -> None:
    transform = geometry_neutral_augmentation(shift_px=4, scale=0.0)
    names = {type(t).__name__ for t in transform.transforms}
    assert names == {"HorizontalFlip", "Affine"}
    face = PreparedFaces(labelled[0]).face(1)
    original_values = set(np.unique(face).tolist())
    flips = shifts = 0
    for seed in range(40):
        seed_augmentation(transform, seed)
        out = transform(image=face)["image"]
        assert out.shape == face.shape and out.dtype == np.uint8
        # Flips and integer shifts with reflected borders only copy existing pixels.
        assert set(np.unique(out).tolist()) <= original_values
        if np.array_equal(out, face[:, ::-1]):
            flips += 1
            assert np.array_equal(np.sort(out, axis=None), np.sort(face, axis=None))
        elif not np.array_equal(out, face):
            shifts += 1
    assert flips > 0 and shifts > 0

    # The default (with a small zoom) keeps the intensity statistics.
    zoom = geometry_neutral_augmentation()
    for seed in range(10):
        seed_augmentation(zoom, seed)
        out = zoom(image=face)["image"].astype(np.float64)
        assert abs(out.mean() - face.mean()) < 2.0
        assert abs(out.std() - face.std()) < 0.1 * face.std()


def test_rows_without_a_label_are_left_out_and_infinite_ones_refused(labelled, tmp_path: Path):
    prepared, labels = labelled
    table = pd.read_parquet(labels)
    table.loc[table["sample_id"].isin([3, 20]), "quality"] = np.nan  # e.g. single-image ids
    write_table(tmp_path / "nan.parquet", table)
    dm = QualityDataModule(prepared, tmp_path / "nan.parquet", **datamodule_arguments())
    dm.setup("fit")
    assert len(dm.table) == len(table) - 2 and not dm.table["sample_id"].isin([3, 20]).any()
    table.loc[table["sample_id"] == 5, "quality"] = np.inf
    write_table(tmp_path / "inf.parquet", table)
    dm = QualityDataModule(prepared, tmp_path / "inf.parquet", **datamodule_arguments())
    with pytest.raises(ValueError, match=r"infinite 'quality' labels for sample_ids \[5\]"):
        dm.setup("fit")
