"""Finding and composing the Hydra config tree outside a Hydra app (tests, notebooks, tools)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

# src/fiqa/config/compose.py -> repository root (editable install)
_REPO_CONF = Path(__file__).resolve().parents[3] / "conf"


def config_dir() -> Path:
    """The config tree: ``$FIQA_CONFIG_DIR``, else ``./conf``, else the repository's ``conf/``."""
    for candidate in (os.environ.get("FIQA_CONFIG_DIR"), "conf", _REPO_CONF):
        if candidate and (Path(candidate) / "config.yaml").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        "no Hydra config tree found: run from the fiqa repository root or set FIQA_CONFIG_DIR"
    )


def compose_config(overrides: list[str] | None = None, directory: Path | None = None) -> DictConfig:
    """The composed config with Hydra ``overrides``, outside any Hydra app.

    >>> cfg = compose_config(["data=folder", "data.root=/data/faces", "logger=none"])

    Args:
        overrides: Hydra overrides.
        directory: Config tree (default ``config_dir()``).
    """
    from hydra import compose, initialize_config_dir

    root = directory or config_dir()
    with initialize_config_dir(str(Path(root).resolve()), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))
