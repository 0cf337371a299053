"""The GPU tier (``make test-gpu``): what runs on CUDA gives what runs on the CPU.

Every test here needs a CUDA device and is skipped without one (CI never has one). The faces are
the small demo's real prepared faces (conftest ``small_demo``), the FR model is the bundled
SFace. Tolerances were set from the same comparisons on a CPU, where bf16 autocast and an
emulation of TF32 (fp32 numbers rounded to 10 mantissa bits, what cuDNN convolutions use on
Ampere and later GPUs by default) are available; each is stated at its assertion.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from scipy import stats
from torch.utils.data import DataLoader

from conftest import ddpm_overfit_losses, demo_config
from fiqa.config.defaults import regressor_arguments
from fiqa.data.face_store import PreparedFaces
from fiqa.diffusion.module import DDPMModule
from fiqa.diffusion.settings import ScheduleSettings, UNetSettings
from fiqa.extract import FaceSource, Request, extract
from fiqa.fr import FRModel, load_fr_model
from fiqa.label.diffiqa import DiffiqaProduct, DiffiqaSettings
from fiqa.label.huo import LowLevelFeatures
from fiqa.label.magface import EmbeddingNorm
from fiqa.label.serfiq import SerFiqProduct, SerFiqSettings
from fiqa.quality.export import export_onnx
from fiqa.quality.model import QualityRegressor
from fiqa.quality.model_files import onnx_session
from fiqa.quality.scoring import QualityScorer
from fiqa.stages.runner import run_stage

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False)",
    ),
    # Frozen-backbone fits: Lightning notes the eval-mode BatchNorm layers; that is intended.
    pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode"),
]
TWO_GPUS = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (DDP across GPUs)"
)

GPU = {"accelerator": "gpu", "devices": 1}
BATCH = 8
SERFIQ = SerFiqProduct(SerFiqSettings(passes=6, dropout=0.5, calibrate=False), seed=3)
REQUEST = Request((EmbeddingNorm(), LowLevelFeatures(), SERFIQ))
TINY_UNET = UNetSettings(sample_size=16, base_width=32, channel_mults=[1, 2], layers_per_block=1)
PAPER_SCHEDULE = ScheduleSettings(1000, 1e-4, 0.02, "linear", "sample")
FAST_DDPM = ["ddpm.unet.sample_size=16", "ddpm.unet.channel_mults=[1,2]", "ddpm.max_steps=4",
             "ddpm.checkpoint_every=2", "ddpm.batch_size=8", "ddpm.grid_faces=2"]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(small_demo: Path) -> PreparedFaces:
    """The small demo's prepared faces (43 real faces, arcface_112)."""
    return PreparedFaces(small_demo / "data" / "prepared")


@pytest.fixture(scope="module")
def sface() -> FRModel:
    return load_fr_model("sface")


def as_images(faces: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) faces as the float (N, 3, H, W) 0..255 batch the models take."""
    return torch.from_numpy(faces).permute(0, 3, 1, 2).float()


def rows_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row pair (float16 storage leaves the rows ~1e-4 off unit norm)."""
    return F.cosine_similarity(torch.from_numpy(np.asarray(a, np.float32)),
                               torch.from_numpy(np.asarray(b, np.float32)), dim=1).numpy()  # fmt: skip


def quiet_trainer(**options) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **options)  # fmt: skip


# --- a. bf16-mixed training equals fp32 -------------------------------------------------------


class _StepRecord(pl.Callback):
    """The loss and the gradients of the (one) optimisation step, before the optimizer uses them."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.loss = float(trainer.callback_metrics["train/loss"])
        self.grad = torch.cat([p.grad.detach().double().flatten().cpu()
                               for p in pl_module.parameters() if p.grad is not None])  # fmt: skip


def test_bf16_mixed_training_step_equals_fp32(prepared: PreparedFaces) -> None:
    """One Lightning step of the eDifFIQA recipe on SFace (full fine-tuning, consistency term)
    under ``bf16-mixed`` and ``32-true`` from the same weights and batch: the same loss, the
    same gradient direction and the same predictions before and after the step.

    On a CPU, bf16 autocast against fp32 gave: loss 6e-4 relative, gradient cosine 0.991,
    predictions 0.4% of their range off; the bounds below leave 5x or more.
    """
    images = as_images(prepared.faces(np.arange(16)))
    samples = [{"image": images[i], "quality": torch.tensor(i / 15), "sample_id": torch.tensor(i)}
               for i in range(16)]  # fmt: skip
    torch.manual_seed(0)
    # MSE: its gradient is smooth in the prediction (L1's is a sign that rounding could flip)
    base = QualityRegressor(**regressor_arguments(freeze="none", consistency_weight=0.5,
                                                  loss="mse"))  # fmt: skip
    base.eval()
    with torch.no_grad():
        before = base.cuda()(images.cuda()).float().cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            before_bf16 = base(images.cuda()).float().cpu()
    base.cpu()
    span = float(before.max() - before.min())
    assert span > 0.05  # an untrained head still ranks these faces apart
    assert float((before_bf16 - before).abs().max()) <= 0.05 * span

    runs = {}
    for precision in ("32-true", "bf16-mixed"):
        model, record = copy.deepcopy(base).train(), _StepRecord()
        trainer = quiet_trainer(**GPU, precision=precision, max_steps=1, callbacks=[record])
        trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=16))
        assert trainer.global_step == 1
        model.eval()
        with torch.no_grad():
            after = model.to("cuda")(images.cuda()).float().cpu()
        runs[precision] = record, after
    (fp32, after32), (bf16, after16) = runs["32-true"], runs["bf16-mixed"]
    assert math.isfinite(bf16.loss) and bf16.loss == pytest.approx(fp32.loss, rel=1e-2)
    assert bf16.grad.shape == fp32.grad.shape and bool(torch.isfinite(bf16.grad).all())
    assert float(F.cosine_similarity(bf16.grad, fp32.grad, dim=0)) >= 0.95
    assert not torch.allclose(after32, before, atol=1e-3)  # the step changed the model
    assert float((after16 - after32).abs().max()) <= 0.05 * float(after32.max() - after32.min())


# --- b. DDP on two GPUs gives what one GPU gives ----------------------------------------------


@TWO_GPUS
def test_two_gpu_ddp_extraction_gives_the_one_gpu_labels(
    sface: FRModel, prepared: PreparedFaces, tmp_path: Path
) -> None:
    """Each rank writes the row batches it owns, rank 0 merges: embeddings, norms, low-level
    features and SER-FIQ scores (masks seeded per batch) equal one GPU's. Batches are the same
    rows in both runs, so only float rounding may differ (the bound of the CPU DDP test)."""
    source = FaceSource.from_prepared(prepared)
    one = extract(sface, source, REQUEST, cache_root=tmp_path / "one", batch_size=BATCH,
                  trainer=GPU)  # fmt: skip
    two = extract(sface, source, REQUEST, cache_root=tmp_path / "two", batch_size=BATCH,
                  trainer={"accelerator": "gpu", "devices": 2, "strategy": "ddp_spawn"})  # fmt: skip
    (entry,) = (tmp_path / "two").iterdir()
    assert not list(entry.glob("parts-*"))  # merged and cleaned up
    assert set(two) == set(one) and len(two["embedding"]) == len(prepared)
    for key, values in one.items():
        np.testing.assert_allclose(two[key], values, rtol=1e-3, atol=2e-4, err_msg=key)
    # a rank-order or batch-to-row mix-up would move whole rows: far above rounding
    assert np.abs(one["serfiq"] - np.roll(one["serfiq"], BATCH)).max() > 1e-3


@TWO_GPUS
def test_two_gpu_ddp_validation_metrics_equal_one_gpu(prepared: PreparedFaces) -> None:
    """The regressor's epoch metrics gather every rank's predictions and drop the samples the
    distributed sampler repeats to even out the ranks (43 faces on 2 ranks: one repeat).
    Batches of one face: every forward pass has the same shape in both runs."""
    images = as_images(prepared.faces())
    samples = [{"image": images[i], "quality": torch.tensor(float(i % 7)),
                "sample_id": torch.tensor(i)} for i in range(len(images))]  # fmt: skip
    assert len(samples) % 2 == 1
    torch.manual_seed(0)
    model = QualityRegressor(**regressor_arguments(head="mlp", head_hidden=16, freeze="backbone"))
    results = {}
    for devices in (1, 2):
        strategy = "ddp_spawn" if devices > 1 else "auto"
        trainer = quiet_trainer(accelerator="gpu", devices=devices, strategy=strategy)
        (results[devices],) = trainer.validate(copy.deepcopy(model),
                                               DataLoader(samples, batch_size=1))  # fmt: skip
    one, two = results[1], results[2]
    assert set(one) == {"val/loss", "val/spearman", "val/pearson", "val/mae"} == set(two)
    for name in ("val/loss", "val/mae"):  # a repeated sample would move these by ~1e-2
        assert two[name] == pytest.approx(one[name], abs=1e-4), name
    for name in ("val/spearman", "val/pearson"):
        assert two[name] == pytest.approx(one[name], abs=1e-3), name


# --- c. SFace embeddings on CUDA equal the CPU's ----------------------------------------------


def test_cuda_extraction_gives_the_cpu_embeddings(
    sface: FRModel, prepared: PreparedFaces, tmp_path: Path
) -> None:
    """The extraction loop on one GPU and ``FRModel.embed`` on a CUDA model give the CPU's
    embeddings: cosine >= 0.9999 per face. The deterministic products agree within what TF32
    convolutions change (emulated on a CPU: cosine >= 0.99999, norms 8e-4 relative, low-level
    features 0.011 absolute in float16 storage; the bounds leave 6x or more)."""
    source = FaceSource.from_prepared(prepared)
    cpu = extract(sface, source, REQUEST, cache_root=tmp_path / "cpu", batch_size=BATCH)
    cuda = extract(sface, source, REQUEST, cache_root=tmp_path / "cuda", batch_size=BATCH,
                   trainer=GPU)  # fmt: skip
    assert next(sface.net.parameters()).device.type == "cpu"  # the loop gave the model back
    assert rows_cosine(cuda["embedding"], cpu["embedding"]).min() >= 0.9999
    np.testing.assert_allclose(cuda["norm"], cpu["norm"], rtol=1e-2)
    np.testing.assert_allclose(cuda["low_level"], cpu["low_level"], rtol=3e-2, atol=3e-2)
    # SER-FIQ draws its masks from a generator on the batch's device: other draws on CUDA
    assert cuda["serfiq"].shape == (len(prepared),)
    assert ((cuda["serfiq"] > 0) & (cuda["serfiq"] <= 1)).all()

    faces = prepared.faces()
    on_cuda = load_fr_model("sface", device="cuda")
    embedded = on_cuda.embed(torch.from_numpy(faces))
    assert embedded.device.type == "cuda"
    assert rows_cosine(embedded.cpu().numpy(), sface.embed(faces)).min() >= 0.9999
    flipped = on_cuda.embed(faces, flip=True)  # numpy in, numpy out
    assert rows_cosine(flipped, sface.embed(faces, flip=True)).min() >= 0.9999


# --- d. the face DDPM trains on CUDA; DifFIQA labels compute there -----------------------------


def test_ddpm_overfits_a_batch_on_cuda_in_bf16() -> None:
    """The CPU test's overfitting check on CUDA under bf16 autocast (the paper preset's
    precision): on a CPU in bf16 the loss fell to 0.06 of its start in 60 steps."""
    torch.manual_seed(0)
    module = DDPMModule.of(TINY_UNET, PAPER_SCHEDULE, train_t_max=100, lr=2e-3).cuda()
    x0 = torch.rand(8, 3, 16, 16, device="cuda") * 2 - 1
    before, after = ddpm_overfit_losses(module, x0, bf16=True)
    assert math.isfinite(before) and after < 0.2 * before


def test_ddpm_stage_and_diffiqa_labels_on_cuda(
    demo_root: Path, small_demo: Path, sface: FRModel, prepared: PreparedFaces, tmp_path: Path
) -> None:
    """The ddpm stage trains on the GPU in bf16-mixed (EMA, checkpoints, the sample grid drawn
    there), the label stage computes DifFIQA labels through the GPU extraction loop, and
    DifFIQA scores on CUDA agree with the CPU's up to the noise draws.

    The noise comes from a generator on the batch's device, so CUDA and CPU perturb the faces
    with other draws: CUDA against the CPU (seed 0) must differ no more than the CPU with
    seed 1 against seed 0 (x2, mean over the faces); with n = 4, t = 5 the CPU seeds gave
    Spearman 0.995 between each other.
    """
    cfg = demo_config(demo_root, small_demo, *FAST_DDPM, "label=diffiqa", "ddpm.accelerator=gpu",
                      "ddpm.precision=bf16-mixed", "extract.accelerator=gpu",
                      "extract.progress=false", "label.compute=[]",
                      "label.methods.diffiqa.repeats=1")  # fmt: skip
    trained = run_stage("ddpm", cfg)
    assert trained["ddpm/trained_now"] == 1.0 and trained["ddpm/steps"] == 4.0
    assert math.isfinite(trained["ddpm/loss"])
    record = json.loads((demo_root / "ddpm" / "ddpm.json").read_text())
    assert record["trained"] and record["settings"]["accelerator"] == "gpu"
    assert (demo_root / "ddpm" / "samples.png").stat().st_size > 0

    summary = run_stage("label", cfg)
    labels = pd.read_parquet(demo_root / "data" / "labels" / "labels.parquet")
    assert summary["label/samples"] == len(labels) == len(prepared)
    assert labels["quality"].equals(labels["diffiqa"]) and labels["diffiqa"].notna().all()
    assert labels["diffiqa"].between(-1, 1).all() and labels["diffiqa"].std() > 0

    source = FaceSource.from_prepared(prepared)

    def diffiqa(seed: int, trainer: dict | None = None) -> np.ndarray:
        params = DiffiqaSettings(str(demo_root / "ddpm"), TINY_UNET, PAPER_SCHEDULE, 4, 5)
        out = extract(sface, source, Request((DiffiqaProduct(params, seed),)),
                      cache_root=tmp_path / f"seed{seed}-{'gpu' if trainer else 'cpu'}",
                      batch_size=16, trainer=trainer)  # fmt: skip
        return np.asarray(out["diffiqa"], np.float64)

    cuda, cpu, cpu_seed1 = diffiqa(0, GPU), diffiqa(0), diffiqa(1)
    assert np.isfinite(cuda).all() and (np.abs(cuda) <= 1).all()
    noise = np.abs(cpu_seed1 - cpu).mean()
    assert np.abs(cuda - cpu).mean() <= 2 * noise + 1e-3
    assert stats.spearmanr(cuda, cpu)[0] >= 0.9


# --- e. scoring on CUDA: fiqa score --device cuda, onnxruntime's CUDA provider ------------------


@pytest.fixture(scope="module")
def quality_model(prepared: PreparedFaces, tmp_path_factory: pytest.TempPathFactory):
    """A regressor fitted briefly on the CPU: its checkpoint and its ONNX export."""
    root = tmp_path_factory.mktemp("gpu-quality-model")
    pl.seed_everything(0, verbose=False)
    model = QualityRegressor(
        **regressor_arguments(head="mlp", head_hidden=16, freeze="backbone", lr=1e-2)
    )
    images = as_images(prepared.faces(np.arange(8)))
    samples = [{"image": images[i], "quality": torch.tensor(i / 8), "sample_id": torch.tensor(i)}
               for i in range(8)]  # fmt: skip
    trainer = quiet_trainer(accelerator="cpu", max_epochs=1)
    trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=4))
    trainer.save_checkpoint(root / "model.ckpt")
    model.eval()
    report = export_onnx(model, root / "model.onnx", dynamo=False)  # the fast exporter
    return root / "model.ckpt", Path(report["path"])


def test_fiqa_score_on_cuda_gives_the_cpu_scores(
    quality_model: tuple[Path, Path], small_demo: Path, tmp_path: Path
) -> None:
    """``fiqa score --device cuda`` puts the checkpoint's model on the GPU (the CPU run
    allocates nothing there) and scores every prepared face as ``--device cpu`` does: TF32
    convolutions and matrix products, emulated on a CPU, moved these scores by 1.3e-3."""
    from fiqa.cli.main import main

    ckpt = quality_model[0]
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.parquet"
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        code = main(["score", "--checkpoint", str(ckpt), "--prepared",
                     str(small_demo / "data" / "prepared"), "--out", str(out), "--device",
                     device, "--batch-size", "16"])  # fmt: skip
        assert code == 0
        runs[device] = pd.read_parquet(out), torch.cuda.max_memory_allocated() - start
    (cpu, cpu_bytes), (cuda, cuda_bytes) = runs["cpu"], runs["cuda"]
    assert cpu_bytes == 0 and cuda_bytes > 10 * 2**20  # SFace's weights alone are ~38 MB
    assert cuda["sample_id"].tolist() == cpu["sample_id"].tolist()
    assert np.ptp(cpu["quality"]) > 0.05
    np.testing.assert_allclose(cuda["quality"], cpu["quality"], rtol=0, atol=1e-2)
    assert stats.spearmanr(cuda["quality"], cpu["quality"])[0] >= 0.99


def test_onnxruntime_cuda_provider_gives_the_cpu_scores(
    quality_model: tuple[Path, Path], prepared: PreparedFaces
) -> None:
    """The exported graph scores the same on onnxruntime's CUDA and CPU providers (same bound
    as the torch scores)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        pytest.skip(f"onnxruntime has no CUDAExecutionProvider (available: {available}); "
                    "the GPU build is the onnxruntime-gpu package")  # fmt: skip
    onnx_path = quality_model[1]
    session = onnx_session(onnx_path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider", (
        f"onnxruntime fell back to {session.get_providers()}: its CUDA provider did not load"
    )
    faces = prepared.faces()
    cpu = QualityScorer.from_path(onnx_path, device="cpu").score(faces, batch_size=16)
    cuda = QualityScorer.from_path(onnx_path, device="cuda").score(faces, batch_size=16)
    assert np.ptp(cpu) > 0.05
    np.testing.assert_allclose(cuda, cpu, rtol=0, atol=1e-2)
