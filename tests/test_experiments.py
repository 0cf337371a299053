"""Smoke test of every experiment config: ddpm + label + train (fast_dev_run) on a small demo set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fiqa.config import compose_config
from fiqa.fr.iresnet import IResNet
from fiqa.stages.runner import run_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))
SMOKE = [
    "logger=none",
    "debug=fdr",
    "train.batch_size=8",
    "label.methods.serfiq.passes=4",
    "label.methods.diffiqa.repeats=1",
    "extract.progress=false",
    # a 16 x 16 DDPM trained for 2 steps: the wiring of the DifFIQA experiments, not their quality
    "ddpm.unet.sample_size=16",
    "ddpm.unet.channel_mults=[1,2]",
    "ddpm.max_steps=2",
]


@pytest.fixture(scope="module")
def demo_root(small_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's small demo, prepared, copied into one root for every experiment."""
    root = tmp_path_factory.mktemp("experiments")
    shutil.copytree(small_demo / "data" / "prepared", root / "data" / "prepared")
    (root / "raw").symlink_to(small_demo / "raw")
    return root


def random_iresnet_weights(root: Path, depth: int) -> Path:
    """An arcface_torch-format backbone.pth of a randomly initialised iResNet (no real weights
    here): the experiment's wiring runs, the numbers mean nothing."""
    path = root / f"iresnet{depth}.pth"
    if not path.exists():
        torch.save(IResNet(depth).state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_labels_and_trains(demo_root: Path, experiment: str) -> None:
    overrides = [f"experiment={experiment}", f"paths.root={demo_root}",
                 f"data.root={demo_root / 'raw'}", *SMOKE]  # fmt: skip
    cfg = compose_config(overrides)
    if cfg.model.name == "regressor" and cfg.model.backbone.startswith("iresnet"):
        weights = random_iresnet_weights(demo_root, int(cfg.model.backbone[len("iresnet") :]))
        cfg = compose_config([*overrides, f"model.backbone_weights={weights}"])
    assert cfg.experiment_name == experiment
    run_stage("ddpm", cfg)  # trains only for the DifFIQA experiments, once (a cached DDPM)
    run_stage("label", cfg)
    result = run_stage("train", cfg)
    assert "train/loss" in result and torch.isfinite(torch.tensor(result["train/loss"]))
    assert not (demo_root / "models.partial").exists()  # fast_dev_run writes nothing


@pytest.mark.slow
def test_distillation_chain_writes_student_model_costs_and_one_wandb_run(
    demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huo2022 end to end (short): distil, train the regressor on the student, export it, the
    Table-1 costs, both fits logged into one offline W&B run."""
    import json

    wandb_dir = demo_root / "wandb-home"
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(wandb_dir))
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config(["experiment=huo2022", f"paths.root={demo_root}",
                          f"data.root={demo_root / 'raw'}", "logger=wandb", "debug=limit",
                          "train.batch_size=8", "label.methods.serfiq.passes=4"])  # fmt: skip
    run_stage("label", cfg)
    run_stage("train", cfg)
    metrics = json.loads((demo_root / "metrics" / "train.json").read_text())
    for role in ("teacher", "student", "quality_model"):
        assert metrics[f"cost/{role}/params_m"] > 0
    assert metrics["cost/student/params_m"] < metrics["cost/teacher/params_m"]
    assert metrics["train/val_mae_constant"] > 0 and metrics["train/beats_constant"] in (0.0, 1.0)
    assert (demo_root / "models" / "quality.onnx").is_file()
    cost = (demo_root / "models" / "cost.md").read_text()
    assert "student (mobilefacenet)" in cost and "teacher (sface)" in cost
    runs = list((demo_root / "wandb").glob("offline-run-*"))  # under paths.root, not the cwd
    assert len(runs) == 2, runs  # label's, and train's with both fits
