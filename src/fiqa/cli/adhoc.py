"""Ad-hoc stage runs write to their own directory, never over the DVC pipeline's outputs.

``dvc repro`` runs ``fiqa <stage> --config-dir . --config-name params``: the pipeline's config,
writing the pipeline's paths. A stage run by hand from ``conf/`` with overrides that change what
it computes (``fiqa evaluate eval/benchmark=folder ...``, ``fiqa label label=serfiq``) would
replace outputs DVC owns with another config's: instead its outputs go to
``runs/<overrides>/`` (the same sub-paths under another ``paths.root``), and its inputs are read
from there when an earlier ad-hoc run with the same overrides made them, else from the
pipeline's paths, unless the overrides change what the input's stage computes: then the
pipeline's input is another run's and the stage stops with the command that makes its own
(``fiqa label debug=small`` before ``fiqa prepare debug=small``). So ``fiqa label label=serfiq``
then ``fiqa train label=serfiq`` chain in ``runs/label=serfiq/`` on the pipeline's prepared
faces. Runs without such overrides, or with explicit ``paths.*`` overrides
(``paths.root=.``: the pipeline's own paths), write where they are told.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf, open_dict

from fiqa.core.provenance import digest
from fiqa.stages import RUNTIME_KEYS, STAGES, StageError

log = logging.getLogger(__name__)

RUNS = "runs"
SHARED_PATHS = ("root", "cache", "studies")  # never moved: the cache is content-addressed
NOTHING_PUBLISHED = "debug=fdr"  # Lightning's fast_dev_run: no checkpoint, export or metrics
CONTENT_KEYED = ("ddpm",)  # its users check a DDPM by its content digest, not by lineage
PRODUCERS = {out: s.name for s in STAGES.values() for out in s.outs}  # paths key -> its stage


def output_keys(stage: str) -> set[str]:
    """``paths`` keys ``stage`` writes (its outputs, metrics and plots)."""
    s = STAGES[stage]
    return {*s.outs, *(key for key, _ in s.metrics), *(key for key, _ in s.plots)}


def computing_overrides(overrides: list[str]) -> list[str]:
    """The command-line overrides that change what a stage computes (not where its outputs go,
    tracking, parallelism or progress: ``fiqa.stages.RUNTIME_KEYS``; nor ``debug=fdr``, which
    publishes nothing). The other debug presets compute something else (fewer faces, epochs or
    batches), so they count: ``fiqa train debug=limit`` must not replace ``models/``."""

    def runtime(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        return override.lstrip("+") == NOTHING_PUBLISHED or any(
            key == k or key.startswith(f"{k}.") for k in (*RUNTIME_KEYS, "hydra")
        )

    return sorted(o for o in overrides if not runtime(o))


def run_folder(overrides: list[str]) -> str:
    """A directory name for a set of overrides: themselves when short and plain, else a
    readable prefix and their digest."""
    name = re.sub(r"[^A-Za-z0-9=.,_+-]", "_", ",".join(overrides))
    return name if len(name) <= 60 else f"{name[:40]}-{digest(overrides, 8)}"


def changed_stages(cfg: DictConfig) -> set[str]:
    """The stages whose outputs ``cfg`` changes against the default config (``conf/`` without
    overrides): a key of their ``params`` differs, or an input of theirs comes from a changed
    stage (``debug=small`` changes ``data``, so prepare and everything after it)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    from fiqa.config import compose_config

    at_root = [f"paths.root={cfg.paths.root}"]
    inside_app = GlobalHydra.instance().is_initialized()
    base = compose("config", overrides=at_root) if inside_app else compose_config(at_root)
    changed: set[str] = set()
    for stage in STAGES.values():  # in pipeline order
        own = any(_value(cfg, key) != _value(base, key) for key in stage.params)
        if own or any(PRODUCERS.get(dep) in changed for dep in stage.deps):
            changed.add(stage.name)
    return changed


def _value(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node


def place_adhoc_run(stage: str, cfg: DictConfig, overrides: list[str]) -> Path | None:
    """Move the outputs of an ad-hoc run of ``stage`` to ``runs/<overrides>/`` (module
    docstring); returns that directory, or None when the run writes the configured paths.

    Raises:
        StageError: An input that this run's overrides change (its stage computes something
            else with them) is not in the run directory yet: the command that makes it.
    """
    if any(o.lstrip("+~").startswith("paths") for o in overrides):
        return None  # the user said where
    computing = computing_overrides(overrides)
    if not computing:
        return None
    pipeline = Path(cfg.paths.root)
    root = pipeline / RUNS / run_folder(computing)
    outs = output_keys(stage)
    changed = changed_stages(cfg)  # before any path moves: params interpolate paths
    with open_dict(cfg):
        for key in cfg.paths:
            if key in SHARED_PATHS:
                continue
            there = Path(str(cfg.paths[key]))
            mine = root / there.relative_to(pipeline) if there.is_relative_to(pipeline) else there
            producer = PRODUCERS.get(key)
            if key in outs or mine.exists():
                cfg.paths[key] = str(mine)
                continue
            if key in STAGES[stage].deps and producer in changed and key not in CONTENT_KEYED:
                raise StageError(
                    f"{stage}: its input {mine} is not there: these overrides change what "
                    f"`fiqa {producer}` computes, so the pipeline's {there} is another run's. "
                    f"Run `fiqa {producer} {' '.join(computing)}` first"
                )
            cfg.paths[key] = str(there)
    log.warning("%s: an ad-hoc run (%s) writes to %s, not over the pipeline's outputs; "
                "paths.root=. writes the pipeline's", stage, " ".join(computing), root)  # fmt: skip
    return root
