"""Shared fixtures: environment isolation and the optional real-face data in ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Set before any test module imports wandb / albumentations / cv2.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data (real faces and FR models); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real-face test data only exists in the dev setup)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_wandb(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep every W&B file of a test inside a temporary directory."""
    wandb_root = tmp_path_factory.getbasetemp() / "wandb-home"
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(wandb_root))


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo, small (6 LFW identities x 5 images + 3 portraits x 6), built and
    prepared once per session: ``<root>/raw`` and ``<root>/data/prepared``. Read it only; tests
    that run stages use ``demo_root``."""
    from fiqa.config import compose_config
    from fiqa.data.demo import build_demo
    from fiqa.stages.runner import run_stage

    root = tmp_path_factory.mktemp("small-demo")
    build_demo(root / "raw", seed=0, portrait_images=6, lfw_identities=6, lfw_images=5)
    cfg = compose_config([f"paths.root={root}", f"data.root={root / 'raw'}", "logger=none"])
    run_stage("prepare", cfg)
    return root


@pytest.fixture
def demo_root(small_demo: Path, tmp_path: Path) -> Path:
    """A private ``paths.root`` holding a copy of the small demo's prepared faces (its raw data
    stays shared at ``small_demo / "raw"``): stages run here cannot disturb other tests."""
    shutil.copytree(small_demo / "data" / "prepared", tmp_path / "data" / "prepared")
    return tmp_path


def demo_config(root: Path, small_demo: Path, *overrides: str):
    """The composed config of a stage run in ``root`` on the small demo, without tracking."""
    from fiqa.config import compose_config

    return compose_config([f"paths.root={root}", f"data.root={small_demo / 'raw'}",
                           "logger=none", *overrides])  # fmt: skip


def ddpm_overfit_losses(module, x0, steps: int = 60, bf16: bool = False) -> tuple[float, float]:
    """A DDPM module's loss on ``x0`` (fixed noise draw) before and after ``steps`` Adam steps
    fitting that one batch, on ``x0``'s device (``bf16``: under bf16 autocast there)."""
    import torch

    fork = [torch.cuda.current_device()] if x0.is_cuda else []

    def fixed_loss() -> float:
        with torch.no_grad(), torch.random.fork_rng(devices=fork):
            torch.manual_seed(123)
            return float(module.loss(x0))

    before = fixed_loss()
    optimiser = torch.optim.Adam(module.parameters(), lr=2e-3)
    for _ in range(steps):
        optimiser.zero_grad()
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(x0)
        loss.backward()
        optimiser.step()
    return before, fixed_loss()
