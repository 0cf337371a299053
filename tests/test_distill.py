"""Teacher-student distillation (Huo et al. 2022, eq. 6) and the params/FLOPs cost table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from fiqa.config.defaults import datamodule_arguments, distillation_arguments, regressor_arguments
from fiqa.data.preparation import write_prepared
from fiqa.fr import load_fr_model
from fiqa.fr.mobilefacenet import MobileFaceNet
from fiqa.fr.sface import SFaceNet
from fiqa.quality.model import QualityRegressor
from fiqa.train.cost import cost_markdown, cost_table, model_cost
from fiqa.train.distill import (
    DistillationModule,
    class_mean_embeddings,
    cosine_logits,
    distillation_losses,
)
from fiqa.train.distill_data import IdentityFacesDataModule

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode")

# Tiny MobileFaceNets (~0.1 G MACs): the teacher's 32-D vs the student's 16-D embedding
# exercises the MSE projection.
TEACHER_OPTIONS = {"blocks": [1, 1, 1, 1], "scale": 1, "num_features": 32}
STUDENT_OPTIONS = {"blocks": [1, 1, 1, 1], "scale": 1, "num_features": 16}
N_TRAIN_IDS, PER_ID = 4, 4

EQ6_WEIGHTS = (0.4, 0.2, 0.4)  # (a, b, c) of Huo et al.'s eq. 6 (MSE, soft CE, hard CE)


# --- loss terms by hand ------------------------------------------------------------------


def test_distillation_loss_matches_hand_computation() -> None:
    f_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f_t = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # softmax rows: student [1/4, 3/4], [2/3, 1/3]; teacher [1/2, 1/2], [3/4, 1/4]
    c_s = torch.tensor([[0.0, math.log(3)], [math.log(2), 0.0]])
    c_t = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    labels = torch.tensor([1, 0])
    mse = (0 + 1 + 0 + 1) / 4
    kd = (
        -(0.5 * math.log(1 / 4) + 0.5 * math.log(3 / 4))
        - (0.75 * math.log(2 / 3) + 0.25 * math.log(1 / 3))
    ) / 2
    ce = (-math.log(3 / 4) - math.log(2 / 3)) / 2
    terms = distillation_losses(f_s, f_t, c_s, c_t, labels, EQ6_WEIGHTS, temperature=1.0)
    assert terms["mse"].item() == pytest.approx(mse)
    assert terms["kd"].item() == pytest.approx(kd)
    assert terms["ce"].item() == pytest.approx(ce)
    assert terms["loss"].item() == pytest.approx(0.4 * mse + 0.2 * kd + 0.4 * ce)
    assert terms["loss"].item() == pytest.approx(0.480203, abs=1e-6)

    # T = 2 halves the logits, the soft term is scaled by T^2 = 4; label -1 is skipped.
    r3, r2 = math.sqrt(3), math.sqrt(2)
    kd_t2 = (
        4
        * (
            -(0.5 * math.log(1 / (1 + r3)) + 0.5 * math.log(r3 / (1 + r3)))
            - (r3 / (1 + r3) * math.log(r2 / (1 + r2)) + 1 / (1 + r3) * math.log(1 / (1 + r2)))
        )
        / 2
    )
    terms = distillation_losses(
        f_s, f_t, c_s, c_t, torch.tensor([1, -1]), weights=(1.0, 2.0, 3.0), temperature=2.0
    )
    assert terms["kd"].item() == pytest.approx(kd_t2)
    assert terms["ce"].item() == pytest.approx(-math.log(3 / 4))
    assert terms["loss"].item() == pytest.approx(mse + 2 * kd_t2 - 3 * math.log(3 / 4))
    no_labels = distillation_losses(
        f_s, f_t, c_s, c_t, torch.tensor([-1, -1]), EQ6_WEIGHTS, temperature=1.0
    )
    assert no_labels["ce"].item() == 0.0


def test_centre_logits_match_hand_computation() -> None:
    emb = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, -1])  # -1: not a training identity, ignored
    # normalised: (0.6, 0.8), (1, 0) -> class 0 mean (0.8, 0.4); (0, 1) -> class 1; class 2 empty
    centres = class_mean_embeddings(emb, labels, num_classes=3)
    assert torch.allclose(centres, torch.tensor([[0.8, 0.4], [0.0, 1.0], [0.0, 0.0]]))
    logits = cosine_logits(torch.tensor([[1.0, 1.0]]), centres, scale=10.0)
    cos0 = (0.8 + 0.4) / (math.sqrt(2) * math.sqrt(0.8**2 + 0.4**2))
    expected = [10 * cos0, 10 / math.sqrt(2), 0.0]
    assert logits[0].tolist() == pytest.approx(expected, abs=1e-5)


# --- a real fit on tiny synthetic identities ------------------------------------------------


def make_faces(seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """4 train identities x 4 faces (a smooth pattern each, plus noise) and 1 val identity."""
    rng = np.random.default_rng(seed)
    faces, identities, splits = [], [], []
    for ident in range(N_TRAIN_IDS + 1):
        coarse = rng.uniform(0, 255, (8, 8, 3))
        base = np.kron(coarse, np.ones((14, 14, 1)))
        for _ in range(PER_ID):
            noisy = base + rng.normal(0, 12, base.shape)
            faces.append(np.clip(noisy, 0, 255).astype(np.uint8))
            identities.append(f"person{ident}")
            splits.append("val" if ident == N_TRAIN_IDS else "train")
    return np.stack(faces), identities, splits


def write_teacher(path: Path, faces: np.ndarray) -> None:
    """A random tiny teacher whose BatchNorm statistics come from the faces (sane scale)."""
    torch.manual_seed(1)
    net = MobileFaceNet(0.0, TEACHER_OPTIONS["num_features"], (1, 1, 1, 1), 1)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one pass sets the statistics
    with torch.no_grad():
        net.train()(torch.from_numpy(faces).permute(0, 3, 1, 2).float())
    torch.save(net.state_dict(), path)


class LossRecorder(pl.Callback):
    """The total loss and its MSE term at every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.mse: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.losses.append(float(outputs["loss"]))
        self.mse.append(float(trainer.callback_metrics["train/loss_mse"]))


def distiller(root: Path, num_classes: int, **overrides) -> DistillationModule:
    """A MobileFaceNet teacher (``root/teacher.pth``) and a small MobileFaceNet student."""
    teacher = {"name": "mobilefacenet", "weights": str(root / "teacher.pth"),
               "options": TEACHER_OPTIONS}  # fmt: skip
    student = {"name": "mobilefacenet", "pretrained": False, "weights": None,
               "options": STUDENT_OPTIONS}  # fmt: skip
    arguments = distillation_arguments(teacher=teacher, student=student, **overrides)
    return DistillationModule(num_classes=num_classes, **arguments)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("distill")
    faces, identities, splits = make_faces()
    write_prepared(root / "prepared", faces, identities, splits)
    write_teacher(root / "teacher.pth", faces)
    loader = datamodule_arguments(batch_size=8, augment=False)
    loader.pop("target_scaling")  # identity classes, no quality targets
    datamodule = IdentityFacesDataModule(root / "prepared", **loader)
    pl.seed_everything(0, workers=True)
    module = distiller(root, datamodule.num_classes, lr=3e-3, scheduler="none")
    recorder = LossRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=20,
        check_val_every_n_epoch=5,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(root / "distill.ckpt")
    train_faces = torch.from_numpy(faces[: N_TRAIN_IDS * PER_ID]).permute(0, 3, 1, 2).float()
    return {
        "root": root,
        "module": module.eval(),
        "datamodule": datamodule,
        "losses": recorder.losses,
        "mse": recorder.mse,
        "metrics": dict(trainer.callback_metrics),
        "faces": train_faces,
    }


def test_identity_datamodule_numbers_train_identities(fitted: dict) -> None:
    datamodule = fitted["datamodule"]
    assert datamodule.identities == [f"person{i}" for i in range(N_TRAIN_IDS)]
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["label"].dtype == torch.int64
    assert batch["label"].tolist() == [-1] * PER_ID  # val identities are not training classes
    labels = torch.cat([b["label"] for b in datamodule.train_dataloader()])
    assert sorted(labels.tolist()) == sorted(list(range(N_TRAIN_IDS)) * PER_ID)


def test_fit_computes_teacher_centres_and_lowers_loss(fitted: dict) -> None:
    module, losses = fitted["module"], fitted["losses"]
    labels = torch.arange(N_TRAIN_IDS).repeat_interleave(PER_ID)
    with torch.no_grad():
        expected = class_mean_embeddings(module.teacher(fitted["faces"]), labels, N_TRAIN_IDS)
    assert bool(module.class_weights_ready)
    assert torch.allclose(module.teacher_class_weights, expected, atol=1e-5)
    assert len(losses) == 20
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.7 * first, losses
    mse = fitted["mse"]  # the student also moves towards the teacher's embeddings
    assert np.mean(mse[-4:]) < 0.9 * np.mean(mse[:4]), mse
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert isinstance(module.projection, nn.Linear)  # 16-D student -> 32-D teacher
    metrics = fitted["metrics"]
    for name in ("train/loss", "train/loss_mse", "train/loss_kd", "train/loss_ce", "val/loss"):
        assert torch.isfinite(metrics[name]), name
    assert -1.0 <= float(metrics["val/student_teacher_cos"]) <= 1.0


def test_checkpoint_round_trip_without_hydra(fitted: dict) -> None:
    module, path = fitted["module"], fitted["root"] / "distill.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    loaded = DistillationModule.load_from_checkpoint(path).eval()
    assert loaded.hparams.student["options"] == STUDENT_OPTIONS
    assert torch.equal(loaded.teacher_class_weights, module.teacher_class_weights)
    faces = fitted["faces"][:3]
    with torch.no_grad():
        assert torch.allclose(loaded(faces), module(faces))
        assert torch.allclose(loaded.teacher(faces), module.teacher(faces))


def test_saved_student_loads_for_the_regressor(fitted: dict) -> None:
    """The student file loads through the FR registry, and the quality regressor starts from it."""
    module, path = fitted["module"], fitted["root"] / "student.pt"
    module.save_student(path)
    config = {"name": "mobilefacenet", "weights": str(path), "options": STUDENT_OPTIONS}
    registry_net = load_fr_model(config).net
    regressor = QualityRegressor(
        **regressor_arguments(backbone="mobilefacenet", backbone_weights=str(path),
                              backbone_options=STUDENT_OPTIONS, head_hidden=8)
    ).eval()  # fmt: skip
    faces = fitted["faces"][:3]
    with torch.no_grad():
        expected = module.student_backbone().eval()(faces)
        assert torch.allclose(registry_net(faces), expected)
        assert torch.allclose(regressor.backbone(faces), expected)
    assert regressor.backbone_info.embedding_size == 16


def test_linear_teacher_head_from_file(fitted: dict, tmp_path: Path) -> None:
    weight, bias = torch.zeros(N_TRAIN_IDS, 32), torch.arange(N_TRAIN_IDS, dtype=torch.float32)
    weight[0, 0], weight[1, 1] = 2.0, -1.0
    torch.save({"weight": weight, "bias": bias}, tmp_path / "head.pt")
    module = distiller(fitted["root"], N_TRAIN_IDS, teacher_class_weights=str(tmp_path / "head.pt"),
                       teacher_head="linear")  # fmt: skip
    emb = torch.zeros(1, 32)
    emb[0, 0], emb[0, 1] = 3.0, 5.0
    assert module.teacher_logits(emb)[0].tolist() == [6.0, -4.0, 2.0, 3.0]
    torch.save(torch.zeros(N_TRAIN_IDS, 7), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        distiller(fitted["root"], N_TRAIN_IDS, teacher_class_weights=str(tmp_path / "bad.pt"))


# --- params and FLOPs ------------------------------------------------------------------------


def test_model_cost_counts_multiply_adds_twice() -> None:
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 5))
    # 12 x 5 multiply-adds; 60 weights + 5 biases
    assert model_cost(linear, (2, 2)) == {"params": 65, "flops": 2 * 60, "macs": 60}
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # 5 x 5 outputs x 8 channels x (3 x 3 x 3) taps; bias additions are not counted
    assert model_cost(conv, (5, 5)) == {
        "params": 8 * 27 + 8,
        "flops": 2 * 25 * 8 * 27,
        "macs": 5400,
    }
    depthwise = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False).train()
    # 3 x 3 outputs per channel, 9 taps of one input channel each
    assert model_cost(depthwise, (6, 6), channels=4) == {
        "params": 36,
        "flops": 2 * 4 * 9 * 9,
        "macs": 324,
    }
    assert depthwise.training  # the mode is restored


def test_cost_table_for_sface() -> None:
    rows = cost_table({"sface": (SFaceNet(), (112, 112))})
    assert rows[0]["params"] == 9_642_880
    assert rows[0]["params_m"] == pytest.approx(9.64, abs=0.01)
    assert 1.1e9 < rows[0]["flops"] < 1.2e9 and rows[0]["macs"] * 2 == rows[0]["flops"]
    table = cost_markdown(rows)
    assert table.splitlines()[0] == "| Model | Params (M) | FLOPs (G) | MACs (G) |"
    assert "| sface | 9.64 | 1.148 | 0.574 |" in table
