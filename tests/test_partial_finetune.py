"""Partial-depth fine-tuning (``model.train_blocks``): the top trunk blocks train with the
embedding layers and the head, the frozen blocks keep their BatchNorm statistics, training on
the cached activation at the cut equals training on images, and evaluation scores such a model
from its own file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from fiqa.config import compose_config
from fiqa.config.defaults import datamodule_arguments, regressor_arguments
from fiqa.config.typed import ConfigError
from fiqa.config.validate import load_settings
from fiqa.quality.model import QualityRegressor
from fiqa.quality.model_files import check_checkpoint
from fiqa.quality.trunk import pretrained_frozen_part, shared_trunk, shares_frozen_part
from fiqa.train.datamodule import QualityDataModule
from test_train_module import make_prepared

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")

# SFace's embedding layers (forward_head) and the trunk modules its last k blocks are.
SFACE_HEAD = {"embedding.weight", "embedding.bias", "embedding_bn.weight", "embedding_bn.bias"}
SFACE_TOP = {1: ("block13", "bn"), 3: ("block11", "block12", "block13", "bn")}


def regressor(**overrides) -> QualityRegressor:
    """A regressor on the bundled SFace (pretrained), linear head, ``freeze=trunk``."""
    return QualityRegressor(**regressor_arguments(**({"head": "linear", "freeze": "trunk"}
                                                     | overrides)))  # fmt: skip


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("partial")
    return root / "prepared", make_prepared(root)


def trainable(model: QualityRegressor) -> set[str]:
    return {name for name, p in model.backbone.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("k", [1, 3])
def test_the_last_blocks_train_and_the_frozen_ones_keep_their_statistics(k: int) -> None:
    model = regressor(train_blocks=k)
    top = SFACE_TOP[k]
    names = [name.split(".") for name, _ in model.backbone.named_parameters()]
    in_top = {".".join(n) for n in names if n[0] == "trunk" and n[1] in top}
    assert {name.split(".")[1] for name in in_top} == set(top)
    assert trainable(model) == SFACE_HEAD | in_top  # all of the top blocks, nothing below
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    modes = {name: block.training for name, block in model.backbone.trunk.named_children()}
    assert modes == {name: name in top for name in modes}
    frozen_bn, top_bn = model.backbone.trunk.block10.pw.bn, model.backbone.trunk.block13.pw.bn
    before = frozen_bn.running_mean.clone(), top_bn.running_mean.clone()
    model(torch.rand(2, 3, 112, 112) * 255)
    assert torch.equal(frozen_bn.running_mean, before[0])  # eval mode: statistics kept
    assert not torch.equal(top_bn.running_mean, before[1])  # train mode: they follow the batch
    assert not any(m.training for m in model.eval().modules())


def test_iresnet_blocks_are_its_residual_units_the_last_with_bn2() -> None:
    model = regressor(backbone="iresnet18", pretrained=False, train_blocks=2)
    assert len(model.backbone.trunk_blocks()) == 9  # stem + 8 units
    units = {".".join(n.split(".")[: 2 if n.startswith("layer") else 1]) for n in trainable(model)}
    assert units == {"layer4.0", "layer4.1", "bn2", "fc", "features"}
    assert model.cut_shape == (256, 14, 14)  # layer3's output


def test_no_train_blocks_keeps_the_whole_trunk_frozen_and_older_checkpoints_load(
    tmp_path: Path,
) -> None:
    model = regressor(train_blocks=0)
    assert model.cut is None and trainable(model) == SFACE_HEAD
    hparams = {k: v for k, v in model.hparams.items() if k != "train_blocks"}
    old = tmp_path / "old.ckpt"  # a checkpoint written before model.train_blocks existed
    torch.save({"pytorch-lightning_version": pl.__version__, "state_dict": model.state_dict(),
                "hyper_parameters": hparams}, old)  # fmt: skip
    check_checkpoint(old, QualityRegressor)
    loaded = QualityRegressor.load_from_checkpoint(old, map_location="cpu", pretrained=False)
    assert loaded.hparams.train_blocks == 0 and loaded.cut is None
    assert trainable(loaded) == SFACE_HEAD
    assert shared_trunk(old) is not None  # still scored from the FR network's shared pass
    partial = {**hparams, "train_blocks": 1}
    assert pretrained_frozen_part(partial) and not shares_frozen_part(partial)


def test_unsupported_backbones_and_too_many_blocks_are_refused_by_name() -> None:
    options = {"blocks": [1, 1, 1, 1], "scale": 1, "num_features": 32}
    tiny = {"backbone": "mobilefacenet", "pretrained": False, "backbone_options": options}
    with pytest.raises(ValueError, match=r"model\.train_blocks=1: backbone 'mobilefacenet'"):
        regressor(train_blocks=1, **tiny)
    with pytest.raises(ValueError, match=r"model\.train_blocks=15: backbone 'sface' has 14"):
        regressor(train_blocks=15)
    with pytest.raises(ValueError, match=r"model\.train_blocks=1 needs model\.freeze=trunk"):
        regressor(train_blocks=1, freeze="backbone")
    with pytest.raises(ConfigError, match=r"model\.train_blocks"):
        load_settings(compose_config(["model.train_blocks=-1"]))


def test_every_cut_splits_the_trunk_exactly() -> None:
    net = regressor().backbone.eval()
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        whole = net.forward_features(x)
        for cut in range(len(net.trunk_blocks()) + 1):
            torch.testing.assert_close(net.forward_from(net.forward_to(x, cut), cut), whole)


def cached_activations(labelled: tuple[Path, Path], root: Path, cut: int) -> dict:
    """The activations at ``cut`` of every prepared face and its mirror, through the cache."""
    from fiqa.config.extraction import extractor
    from fiqa.data.face_store import PreparedFaces
    from fiqa.extract import FaceSource
    from fiqa.train.frozen import frozen_features

    runner = extractor(load_settings(compose_config([f"paths.root={root}"])))
    source = FaceSource.from_prepared(PreparedFaces(labelled[0]))
    return frozen_features(regressor_arguments(), source, runner, batch_size=8, cut=cut)


def first_faces(labelled: tuple[Path, Path], features: dict | None) -> dict:
    """8 training faces in manifest order, unaugmented: images, or their cached activations."""
    data = QualityDataModule(*labelled, **datamodule_arguments(augment=False))
    data.setup()
    if features is not None:
        data.use_features(features)
    return next(iter(data.calibration_dataloader(8)))


def sgd_step(model: QualityRegressor, batch: dict, lr: float) -> dict[str, torch.Tensor]:
    """One plain SGD step (the update is the gradient: the comparison measures it) in train
    mode; returns every tensor of the state dict after it."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    loss = model.loss_fn(model.predict_batch(batch), batch["quality"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_on_cached_activations_equals_training_on_images(
    labelled: tuple[Path, Path], tmp_path: Path
) -> None:
    """train_blocks=2 on SFace: the activation at block 12 (512 x 14 x 14), cached as float16,
    gives the image path's predictions and the same SGD update (same batch, no flip) within
    float16 rounding: predictions to 2e-3 of their spread over the batch (measured: 3e-4),
    each tensor's update to 5% of its L2 norm (measured: at most 2.2%, in the first trainable
    block, which sees the rounded activations directly)."""
    pl.seed_everything(0, verbose=False)
    model = regressor(train_blocks=2)
    assert (model.cut, model.cut_shape) == (12, (512, 14, 14))
    features = cached_activations(labelled, tmp_path, model.cut)
    assert features["direct"].shape == (24, 512 * 14 * 14)
    assert features["direct"].dtype == features["mirror"].dtype == np.float16
    images, cached = first_faces(labelled, None), first_faces(labelled, features)
    assert torch.equal(images["sample_id"], cached["sample_id"])
    with torch.no_grad():
        mirror = model.backbone.forward_to(images["image"][:2].flip(3), model.cut).flatten(1)
    rows = torch.from_numpy(features["mirror"][:2].astype(np.float32))
    torch.testing.assert_close(rows, mirror, atol=1e-6, rtol=1e-3)  # float16 rounding

    model.eval()
    with torch.no_grad():
        by_images, by_cache = model.predict_batch(images), model.predict_batch(cached)
    spread = float(by_images.max() - by_images.min())
    assert spread > 0
    assert float((by_images - by_cache).abs().max()) <= 2e-3 * spread

    twin = copy.deepcopy(model)  # the same weights, stepped on the cached activations
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after_images, after_cache = sgd_step(model, images, 0.1), sgd_step(twin, cached, 0.1)
    moved = {k for k in start if not torch.equal(after_images[k], start[k])}
    assert {"backbone.trunk.block12.dw.conv.weight", "backbone.trunk.bn.weight",
            "backbone.embedding.weight", "head.weight"} <= moved  # fmt: skip
    assert not any(k.startswith("backbone.trunk.block11.") for k in moved)
    for key, before in start.items():
        step_images, step_cache = after_images[key] - before, after_cache[key] - before
        if key not in moved:
            assert not step_cache.any(), key
            continue
        # 1e-6: a bias before a train-mode BatchNorm has no gradient, its step is rounding noise
        off = float((step_images - step_cache).float().norm())
        assert off <= 0.05 * float(step_images.float().norm()) + 1e-6, key


def test_a_cached_partial_fit_is_scored_from_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stage with ``train.cache_frozen`` and ``train_blocks=1`` trains on SFace's
    cached block-13 activations and writes a checkpoint that evaluation scores from its file
    (its top block changed: no shared FR pass), as its ONNX export does."""
    from fiqa.eval.qualities import method_qualities
    from test_shared_trunk import evaluation, face_images, onnx_scores, record_file_scoring
    from test_train_outputs import labelled_root, train

    root = labelled_root(tmp_path / "run")
    summary = train(root, "train.cache_frozen=true", "model.train_blocks=1", "model.head=linear")
    assert np.isfinite(summary["train/best_val_spearman"])
    assert list(root.rglob("trunk_cut13_mirror*"))  # the cached activations at the cut
    ckpt = root / "models" / "quality.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["hyper_parameters"]["train_blocks"] == 1
    pretrained = regressor().backbone.trunk.state_dict()
    for block, trained in (("block12", False), ("block13", True)):
        key = f"{block}.pw.conv.weight"
        same = torch.equal(saved["state_dict"][f"backbone.trunk.{key}"], pretrained[key])
        assert same != trained, block
    assert shared_trunk(ckpt) is None

    faces = face_images(10, 7)
    data, sources = evaluation(faces, tmp_path / "eval", {"partial": {"path": str(ckpt)}})
    from_file = record_file_scoring(monkeypatch)
    out = method_qualities(data, sources)
    assert from_file == [ckpt]
    expected = onnx_scores(root / "models" / "quality.onnx", faces)
    assert np.ptp(expected) > 0
    assert np.max(np.abs(out["partial"].values - expected)) <= 1e-4
