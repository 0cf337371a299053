"""Evaluation results of DVC experiments (``dvc exp show --json``), for ``fiqa report --dvc``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fiqa.core.artifacts import EVAL_METRICS

# The metrics file as dvc.yaml declares it (paths.metrics is metrics/ under the repository root).
EVAL_METRICS_FILE = f"metrics/{EVAL_METRICS}"


def dvc_experiment_results(repo: str | Path = ".") -> list[tuple[str, dict]]:
    """``(name, eval.json contents)`` of the workspace, the baseline commits and every DVC
    experiment of ``repo`` that has evaluation metrics, in ``dvc exp show`` order.

    Raises:
        RuntimeError: Naming the command's error when ``dvc exp show`` fails.
    """
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc exp show --json` failed in {repo}: {proc.stderr.strip()[-500:]}")
    found: dict[str, dict] = {}
    for name, results in _walk(json.loads(proc.stdout)):
        found.setdefault(name, results)
    return list(found.items())


def _walk(node: Any) -> Iterator[tuple[str, dict]]:
    """Entries with ``data.metrics["metrics/eval.json"].data`` anywhere in the JSON tree."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
        return
    if not isinstance(node, dict):
        return
    data = node.get("data") or {}
    metrics = ((data.get("metrics") or {}).get(EVAL_METRICS_FILE) or {}).get("data")
    if metrics:
        yield str(node.get("name") or node.get("rev", "?"))[:32], metrics
    for key in ("experiments", "revs"):
        yield from _walk(node.get(key))
