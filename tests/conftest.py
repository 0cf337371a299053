"""Shared fixtures: environment isolation and the optional real-face data in ../shared/data."""

from __future__ import annotations

import os
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
