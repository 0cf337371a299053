"""Regressor training features: overfitting, resume, unfreezing, validation EDC, consistency,
schedulers, trunk freezing on any architecture, re-warping to the backbone's template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from fiqa.config.defaults import datamodule_arguments, regressor_arguments
from fiqa.config.validate import load_settings
from fiqa.core.edc import edc_curve, pair_quality, pauc
from fiqa.core.pairs import PairSampling, pair_scores
from fiqa.quality.model import QualityRegressor, head_parameter_names
from fiqa.train.callbacks import UnfreezeBackbone, ValidationEDC
from fiqa.train.datamodule import QualityDataModule
from test_train_module import make_prepared

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")

# A tiny MobileFaceNet from scratch, fully trained: seconds per epoch on a CPU.
TINY = {"backbone": "mobilefacenet", "pretrained": False, "head_hidden": 16, "freeze": "none",
        "backbone_options": {"blocks": [1, 1, 1, 1], "scale": 1, "num_features": 32}}  # fmt: skip


def tiny(**overrides) -> QualityRegressor:
    return QualityRegressor(**regressor_arguments(**(TINY | overrides)))


def labelled_data(labelled: tuple[Path, Path], **overrides) -> QualityDataModule:
    return QualityDataModule(*labelled, **datamodule_arguments(**overrides))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("callbacks")
    return root / "prepared", make_prepared(root)


def trainer(tmp_path: Path, max_epochs: int = 1, **kwargs) -> pl.Trainer:
    options = {"accelerator": "cpu", "max_epochs": max_epochs, "logger": False,
               "enable_progress_bar": False, "enable_model_summary": False,
               "num_sanity_val_steps": 0, "default_root_dir": tmp_path}  # fmt: skip
    return pl.Trainer(**(options | kwargs))


def test_overfitting_one_batch_drives_the_loss_down(labelled, tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    model = tiny(lr=3e-3, backbone_lr=3e-3, scheduler="none", loss="mse")
    data = labelled_data(labelled, batch_size=8, augment=False)
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer(tmp_path, max_epochs=30, overfit_batches=1, enable_checkpointing=False,
            callbacks=[Record()]).fit(model, datamodule=data)  # fmt: skip
    assert losses[-1] < 0.2 * losses[0], f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"


def test_resume_continues_the_step_count(labelled, tmp_path: Path) -> None:
    data = labelled_data(labelled, batch_size=8)
    last = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last=True)
    first = trainer(tmp_path, max_epochs=1, callbacks=[last])
    first.fit(tiny(), datamodule=data)
    steps_per_epoch = first.global_step
    assert steps_per_epoch > 0 and (tmp_path / "ckpt" / "last.ckpt").is_file()
    resumed = trainer(tmp_path, max_epochs=3)
    resumed.fit(tiny(), datamodule=data, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.global_step == 3 * steps_per_epoch
    assert resumed.current_epoch == 3


def test_unfreeze_at_epoch_trains_the_backbone_from_then_on(labelled, tmp_path: Path) -> None:
    model = tiny(freeze="backbone", unfreeze_at_epoch=1, scheduler="none")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    snapshots: list[list[torch.Tensor]] = []

    class Snapshot(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            snapshots.append([p.detach().clone() for p in pl_module.backbone.parameters()])

    start = [p.detach().clone() for p in model.backbone.parameters()]
    data = labelled_data(labelled, batch_size=8)
    trainer(tmp_path, max_epochs=2, enable_checkpointing=False,
            callbacks=[UnfreezeBackbone(1), Snapshot()]).fit(model, datamodule=data)  # fmt: skip
    unchanged = all(torch.equal(a, b) for a, b in zip(start, snapshots[0], strict=True))
    assert unchanged, "the frozen backbone changed during epoch 0"
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1], strict=True))
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert model.backbone.training


@pytest.mark.parametrize(
    "rule",
    [PairSampling(all_up_to=10_000, genuine_per_identity=1, impostors=1, seed=0),  # all pairs
     PairSampling(all_up_to=0, genuine_per_identity=2, impostors=60, seed=3)],  # a sample
    ids=["all-pairs", "sampled"],
)  # fmt: skip
def test_validation_edc_logs_the_pauc_of_the_predictions(
    labelled, tmp_path: Path, rule: PairSampling
) -> None:
    data = labelled_data(labelled, batch_size=8)
    data.setup()
    val = data.val_dataframe()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((val["identity"].nunique(), 16))
    codes = val["identity"].factorize()[0]
    emb = centres[codes] + 1.5 * rng.standard_normal((len(val), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    edc = ValidationEDC(val["sample_id"].to_numpy(), val["identity"].to_numpy(), emb,
                        fmr=0.1, limits=(0.2, 0.3), pairs=rule)  # fmt: skip
    model = tiny()
    fitted = trainer(tmp_path, enable_checkpointing=False, callbacks=[edc])
    fitted.fit(model, datamodule=data)
    # recompute from the model's predictions on the validation split
    model.eval()
    batch = next(iter(torch.utils.data.DataLoader(data.val_dataloader().dataset, batch_size=64)))
    with torch.no_grad():
        q = model(batch["image"]).numpy()
    pairs = rule.pairs(val["identity"].to_numpy())
    assert edc.pairs.a.tolist() == pairs.a.tolist()  # the callback compares the rule's pairs
    scores = pair_scores(emb, pairs)
    curve = edc_curve(scores[pairs.genuine], pair_quality(q[pairs.a], q[pairs.b])[pairs.genuine],
                      scores[~pairs.genuine], fmr=0.1)  # fmt: skip
    assert curve.fnmr[0] > 0  # some recognition errors to discard
    for limit in (0.2, 0.3):
        logged = float(fitted.callback_metrics[f"val/pauc@{limit:g}"])
        assert logged == pytest.approx(pauc(curve, limit), abs=1e-6)


def test_consistency_term_starts_at_zero_and_keeps_the_fr_reference(tmp_path: Path) -> None:
    """With SFace's real weights the backbone starts equal to the FR model: the term is 0 at
    step 0; the reference stays fixed (not trained, not in the checkpoint)."""
    model = QualityRegressor(**regressor_arguments(
        head="linear", freeze="none", consistency_weight=0.5, scheduler="none", lr=1e-4,
        backbone_lr=1e-4))  # fmt: skip
    model.setup("fit")
    (reference,) = model._fr_reference
    batch = {"image": torch.rand(4, 3, 112, 112) * 255, "quality": torch.rand(4),
             "sample_id": torch.arange(4)}  # fmt: skip
    with torch.no_grad():
        embedding = model.backbone.eval()(batch["image"])
        target = reference(batch["image"])
    assert torch.allclose(embedding, target, atol=1e-5)
    model.train()
    optimizer = model.configure_optimizers()
    loss = model.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in reference.parameters())
    assert not any(k.startswith("_fr_reference") for k in model.state_dict())
    with torch.no_grad():
        moved = model.backbone.eval()(batch["image"])
    consistency = (1 - torch.nn.functional.cosine_similarity(moved, target)).mean()
    assert 0 < float(consistency) < 1


def test_trunk_freezing_finds_the_embedding_layers_of_any_architecture() -> None:
    model = tiny(freeze="trunk")
    head = head_parameter_names(model.backbone, model.input_size)
    assert head and all(n.startswith("features.") for n in head)  # MobileFaceNet's GDC head
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == head


def test_step_scheduler_divides_the_learning_rate_by_ten(labelled, tmp_path: Path) -> None:
    model = tiny(scheduler="step", lr=1e-2, backbone_lr=1e-2)
    data = labelled_data(labelled, batch_size=4)
    fitted = trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    fitted.fit(model, datamodule=data)
    assert fitted.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


def test_faces_are_rewarped_to_the_backbone_template(labelled) -> None:
    """A FaceNet-style backbone takes 160x160 faces on facenet_160: the data module re-warps."""
    data = labelled_data(labelled, batch_size=4, template="facenet_160")
    batch = next(iter(data.val_dataloader()))
    assert tuple(batch["image"].shape) == (4, 3, 160, 160)


def test_training_on_cached_trunk_features_equals_training_on_images(labelled, tmp_path: Path):
    """freeze=trunk on SFace's weights: the trunk's outputs, cached once, give the image path's
    predictions before training and after an epoch (to float16 rounding of the features)."""
    from fiqa.config import compose_config
    from fiqa.config.extraction import extractor
    from fiqa.data.face_store import PreparedFaces
    from fiqa.extract import FaceSource
    from fiqa.quality.trunk import shares_frozen_part
    from fiqa.train.frozen import frozen_features

    arguments = regressor_arguments(head="linear", freeze="trunk", scheduler="none", lr=1e-2,
                                    backbone_lr=1e-3)  # fmt: skip
    assert shares_frozen_part(arguments)
    assert not shares_frozen_part({**arguments, "unfreeze_at_epoch": 1})
    runner = extractor(load_settings(compose_config([f"paths.root={tmp_path}"])))
    features = frozen_features(arguments, FaceSource.from_prepared(PreparedFaces(labelled[0])),
                               runner, batch_size=8)  # fmt: skip
    assert features["direct"].shape == (24, 50176) and features["direct"].dtype == np.float16

    models, datas = [], []
    for cached in (False, True):
        pl.seed_everything(0, verbose=False)
        model = QualityRegressor(**arguments)
        data = labelled_data(labelled, batch_size=8, augment=False)
        data.setup()
        if cached:
            data.use_features(features)
        trainer(tmp_path / str(cached), enable_checkpointing=False).fit(model, datamodule=data)
        models.append(model.eval())
        datas.append(data)
    val_images = next(iter(datas[0].val_dataloader()))
    val_cached = next(iter(datas[1].val_dataloader()))
    assert set(val_cached) == {"features", "quality", "sample_id"}
    with torch.no_grad():
        by_images = models[0](val_images["image"])
        by_features = models[1].predict_batch(val_cached)
        same_model_on_images = models[1](val_images["image"])
    torch.testing.assert_close(by_features, same_model_on_images, atol=2e-3, rtol=0)
    torch.testing.assert_close(by_features, by_images, atol=2e-2, rtol=0)
    assert not torch.allclose(by_images, torch.zeros_like(by_images))
