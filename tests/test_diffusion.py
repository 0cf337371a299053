"""The face DDPM (fiqa.diffusion), DifFIQA's formula and product (fiqa.label.diffiqa), and the
ddpm stage."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import ddpm_overfit_losses, demo_config
from fiqa.diffusion.model import FaceDDPM, build_scheduler, build_unet, ddpm_digest, load_ddpm
from fiqa.diffusion.module import DDPMModule
from fiqa.diffusion.sampling import ddim_reconstruct, from_ddpm, q_sample, to_ddpm
from fiqa.diffusion.settings import ScheduleSettings, UNetSettings
from fiqa.extract.products import Batch
from fiqa.label.diffiqa import DiffiqaProduct, DiffiqaSettings, diffiqa_from_embeddings
from fiqa.stages.runner import run_stage

TINY = UNetSettings(sample_size=16, base_width=32, channel_mults=[1, 2], layers_per_block=1)
PAPER_SCHEDULE = ScheduleSettings(1000, 1e-4, 0.02, "linear", "sample")


def test_q_sample_is_the_closed_form_on_a_hand_case():
    """T = 2, linear betas 0.1 and 0.3: abar = (0.9, 0.63)."""
    scheduler = build_scheduler(ScheduleSettings(2, 0.1, 0.3, "linear", "sample"))
    x0, noise = torch.full((1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), -1.0)
    np.testing.assert_allclose(q_sample(scheduler, x0, 0, noise), math.sqrt(0.9) * 0.5
                               - math.sqrt(0.1), rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(q_sample(scheduler, x0, 1, noise), math.sqrt(0.63) * 0.5
                               - math.sqrt(0.37), rtol=1e-6)  # fmt: skip


class _ExactX0(nn.Module):
    """A 'network' that predicts x0 exactly (it knows it): DDIM must return x0."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=self.x0)


def test_ddim_reconstruction_with_an_exact_x0_network_returns_x0():
    ddpm = FaceDDPM(build_unet(TINY), build_scheduler(PAPER_SCHEDULE))
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    x_t = q_sample(ddpm.scheduler, x0, 5, torch.randn(2, 3, 16, 16))
    assert (x_t - x0).abs().max() > 1e-3  # the noise is there
    out = ddim_reconstruct(_ExactX0(x0), ddpm.ddim(), x_t, 5)
    np.testing.assert_allclose(out, x0, atol=1e-5)


def test_ddpm_space_round_trip_and_the_change_carried_to_full_size():
    faces = torch.rand(2, 3, 8, 8) * 255
    np.testing.assert_allclose(from_ddpm(to_ddpm(faces, 8), faces), faces, atol=1e-4)
    # at another size, an unchanged DDPM image leaves the full-size face as it is ...
    np.testing.assert_allclose(from_ddpm(to_ddpm(faces, 4), faces), faces, atol=1e-3)
    # ... and a uniform change of +0.1 (12.75 grey levels) moves every pixel by that much
    mid = torch.full((1, 3, 8, 8), 100.0)
    np.testing.assert_allclose(from_ddpm(to_ddpm(mid, 4) + 0.1, mid), 112.75, atol=1e-3)


def test_diffiqa_formula_on_hand_made_embeddings():
    """cos(e, .) = 1 (x_t), 1/sqrt(2) (x_hat), -1 (x_f,t), 1 (x_f,hat), 0 (x_f):
    q = (1 + 0.7071 - 1 + 1 + 0) / 5; a second repeat with all 1 averages the four terms."""
    e, e_flip = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    one = [torch.tensor([[[2.0, 0.0]]]), torch.tensor([[[1.0, 1.0]]]),
           torch.tensor([[[-1.0, 0.0]]]), torch.tensor([[[5.0, 0.0]]])]  # fmt: skip
    q = diffiqa_from_embeddings(e, e_flip, *one)
    np.testing.assert_allclose(q, [(1 + 1 / math.sqrt(2) - 1 + 1 + 0) / 5])
    two = [torch.cat([t, torch.tensor([[[1.0, 0.0]]])], dim=1) for t in one]
    per_repeat = [(1 + 1 / math.sqrt(2) - 1 + 1), 4.0]
    np.testing.assert_allclose(diffiqa_from_embeddings(e, e_flip, *two),
                               [(np.mean(per_repeat) + 0) / 5])  # fmt: skip


class _PixelFR(nn.Module):
    """A fake FR model whose embedding is the face itself at 4 x 4 (chosen, not learnt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x - 127.5, 4).flatten(1)


def _saved_ddpm(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    FaceDDPM(build_unet(TINY), build_scheduler(PAPER_SCHEDULE)).save(path)
    return path


def _scores(ddpm: Path, seed: int, faces: torch.Tensor, repeats: int = 2) -> torch.Tensor:
    product = DiffiqaProduct(DiffiqaSettings(str(ddpm), TINY, PAPER_SCHEDULE, repeats, 5), seed)
    net = _PixelFR()
    return product.compute(Batch(net, faces, net(faces), None, index=0))


def test_diffiqa_product_is_deterministic_for_a_seed_and_keyed_by_the_ddpm(tmp_path):
    faces = torch.rand(3, 3, 24, 24) * 255
    ddpm = _saved_ddpm(tmp_path / "a")
    first = _scores(ddpm, 0, faces)
    assert first.shape == (3,) and bool(((first > -1) & (first <= 1)).all())
    torch.testing.assert_close(_scores(ddpm, 0, faces), first)
    assert not torch.equal(_scores(ddpm, 1, faces), first)
    params = DiffiqaSettings(str(ddpm), TINY, PAPER_SCHEDULE, 2, 5)
    stem = DiffiqaProduct(params, 0).stem(64)
    other = _saved_ddpm(tmp_path / "b", seed=1)  # other weights: another cache file
    assert DiffiqaProduct(replace(params, ddpm=str(other)), 0).stem(64) != stem
    copy = tmp_path / "copy"  # the same DDPM elsewhere: the same cache file
    copy.mkdir()
    for f in (ddpm / "unet").iterdir():
        (copy / "unet").mkdir(exist_ok=True)
        (copy / "unet" / f.name).write_bytes(f.read_bytes())
    (copy / "scheduler").mkdir()
    for f in (ddpm / "scheduler").iterdir():
        (copy / "scheduler" / f.name).write_bytes(f.read_bytes())
    assert DiffiqaProduct(replace(params, ddpm=str(copy)), 0).stem(64) == stem
    assert DiffiqaProduct(replace(params, t=6), 0).stem(64) != stem


def test_ddpm_loads_from_a_pipeline_folder_a_unet_folder_and_a_state_dict(tmp_path):
    pipeline = _saved_ddpm(tmp_path / "pipe")
    reference = load_ddpm(pipeline, TINY, PAPER_SCHEDULE).unet.state_dict()
    state = tmp_path / "unet.pt"
    torch.save(reference, state)
    for source in (pipeline, pipeline / "unet", state):
        loaded = load_ddpm(source, TINY, PAPER_SCHEDULE)
        assert loaded.sample_size == 16
        for name, value in loaded.unet.state_dict().items():
            torch.testing.assert_close(value, reference[name])
    assert ddpm_digest(state) != ddpm_digest(pipeline)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        load_ddpm(tmp_path / "nothing", TINY, PAPER_SCHEDULE)


def test_ddpm_loss_falls_when_overfitting_a_small_batch():
    torch.manual_seed(0)
    module = DDPMModule.of(TINY, PAPER_SCHEDULE, train_t_max=100, lr=2e-3)
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    before, after = ddpm_overfit_losses(module, x0)
    assert after < 0.2 * before


# ---- the ddpm stage on the small demo ------------------------------------------------------

FAST = ["ddpm.unet.sample_size=16", "ddpm.unet.channel_mults=[1,2]", "ddpm.max_steps=4",
        "ddpm.checkpoint_every=2", "ddpm.batch_size=8", "ddpm.grid_faces=2"]  # fmt: skip


@pytest.mark.slow
def test_ddpm_stage_trains_only_when_a_method_reads_it_and_reuses_what_it_trained(
    demo_root, small_demo
):
    record = demo_root / "ddpm" / "ddpm.json"
    run_stage("ddpm", demo_config(demo_root, small_demo, *FAST))  # label=faceqnet
    assert json.loads(record.read_text())["trained"] is False
    params = DiffiqaSettings(str(demo_root / "ddpm"), TINY, PAPER_SCHEDULE, 1, 5)
    with pytest.raises(FileNotFoundError, match="no DDPM there; train one with `fiqa ddpm`"):
        DiffiqaProduct(params, 0).stem(64)  # a label run before a DDPM was trained
    first = run_stage("ddpm", demo_config(demo_root, small_demo, *FAST, "label=diffiqa"))
    assert first["ddpm/trained_now"] == 1.0 and first["ddpm/steps"] == 4.0
    saved = json.loads(record.read_text())
    assert saved["trained"] and saved["digest"] == ddpm_digest(demo_root / "ddpm")
    assert (demo_root / "ddpm" / "samples.png").stat().st_size > 0
    assert load_ddpm(demo_root / "ddpm", TINY, PAPER_SCHEDULE).sample_size == 16
    # another label.compute: the stage reruns under DVC, the DDPM is not retrained
    again = run_stage("ddpm", demo_config(demo_root, small_demo, *FAST, "label=diffiqa",
                                          "label.compute=[serfiq]"))  # fmt: skip
    assert again["ddpm/trained_now"] == 0.0
    assert json.loads(record.read_text())["digest"] == saved["digest"]


@pytest.mark.slow
def test_killed_ddpm_training_resumes_and_continues_the_step_count(
    demo_root, small_demo, monkeypatch
):
    from fiqa.diffusion import fit

    original = fit._Progress.on_train_batch_end

    def killed_at_step_3(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 3:
            raise RuntimeError("killed")

    cfg = demo_config(demo_root, small_demo, *FAST, "label=diffiqa")
    monkeypatch.setattr(fit._Progress, "on_train_batch_end", killed_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        run_stage("ddpm", cfg)
    assert not (demo_root / "ddpm").exists()  # nothing half-written
    monkeypatch.setattr(fit._Progress, "on_train_batch_end", original)
    summary = run_stage("ddpm", cfg)
    training = json.loads((demo_root / "ddpm" / "ddpm.json").read_text())["training"]
    assert training["resumed"] and training["steps"] == 4 and training["steps_this_run"] == 2
    assert summary["ddpm/steps"] == 4.0


@pytest.mark.slow
def test_label_diffiqa_on_the_demo_gives_a_blind_column_per_fr_model(demo_root, small_demo):
    overrides = [*FAST, "label=diffiqa", "label.methods.diffiqa.repeats=1", "label.compute=[]",
                 "extract.progress=false", "debug=limit"]  # fmt: skip
    cfg = demo_config(demo_root, small_demo, *overrides)
    run_stage("ddpm", cfg)
    summary = run_stage("label", cfg)
    labels = pd.read_parquet(demo_root / "data" / "labels" / "labels.parquet")
    assert labels["quality"].equals(labels["diffiqa"]) and labels["diffiqa"].notna().all()
    assert labels["diffiqa"].between(-1, 1).all() and labels["diffiqa"].std() > 0
    assert summary["label/samples"] == len(labels)
