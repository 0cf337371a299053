"""Ad-hoc stage runs write to their own directory, never over the DVC pipeline's outputs.

``dvc repro`` runs ``fiqa <stage> --config-dir . --config-name params``: the pipeline's config,
writing the pipeline's paths. A stage run by hand from ``conf/`` with overrides that change what
it computes (``fiqa evaluate eval/benchmark=folder ...``, ``fiqa label label=serfiq``) would
replace outputs DVC owns with another config's: instead its outputs go to
``runs/<overrides>/`` (the same sub-paths under another ``paths.root``), and its inputs are read
from there when an earlier ad-hoc run with the same overrides made them, else from the
pipeline's paths. So ``fiqa label label=serfiq`` then ``fiqa train label=serfiq`` chain in
``runs/label=serfiq/``. Runs without such overrides, or with explicit ``paths.*`` overrides
(``paths.root=.``: the pipeline's own paths), write where they are told.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from omegaconf import DictConfig, open_dict

from fiqa.core.provenance import digest
from fiqa.stages import RUNTIME_KEYS, STAGES

log = logging.getLogger(__name__)

RUNS = "runs"
SHARED_PATHS = ("root", "cache", "studies")  # never moved: the cache is content-addressed


def output_keys(stage: str) -> set[str]:
    """``paths`` keys ``stage`` writes (its outputs, metrics and plots)."""
    s = STAGES[stage]
    return {*s.outs, *(key for key, _ in s.metrics), *(key for key, _ in s.plots)}


def computing_overrides(overrides: list[str]) -> list[str]:
    """The command-line overrides that change what a stage computes (not where its outputs go,
    tracking, parallelism or progress: ``fiqa.stages.RUNTIME_KEYS``)."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    runtime = (*RUNTIME_KEYS, "hydra", "debug")
    return sorted(o for o in overrides
                  if not any(key(o) == k or key(o).startswith(f"{k}.") for k in runtime))  # fmt: skip


def run_name(overrides: list[str]) -> str:
    """A directory name for a set of overrides: themselves when short and plain, else a
    readable prefix and their digest."""
    name = re.sub(r"[^A-Za-z0-9=.,_+-]", "_", ",".join(overrides))
    return name if len(name) <= 60 else f"{name[:40]}-{digest(overrides, 8)}"


def place_adhoc_run(stage: str, cfg: DictConfig, overrides: list[str]) -> Path | None:
    """Move the outputs of an ad-hoc run of ``stage`` to ``runs/<overrides>/`` (module
    docstring); returns that directory, or None when the run writes the configured paths."""
    if any(o.lstrip("+~").startswith("paths") for o in overrides):
        return None  # the user said where
    computing = computing_overrides(overrides)
    if not computing:
        return None
    pipeline = Path(cfg.paths.root)
    root = pipeline / RUNS / run_name(computing)
    outs = output_keys(stage)
    with open_dict(cfg):
        for key in cfg.paths:
            if key in SHARED_PATHS:
                continue
            there = Path(str(cfg.paths[key]))
            mine = root / there.relative_to(pipeline) if there.is_relative_to(pipeline) else there
            if key in outs or mine.exists():
                cfg.paths[key] = str(mine)
            else:
                cfg.paths[key] = str(there)
    log.warning("%s: an ad-hoc run (%s) writes to %s, not over the pipeline's outputs; "
                "paths.root=. writes the pipeline's", stage, " ".join(computing), root)  # fmt: skip
    return root
