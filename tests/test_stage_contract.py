"""dvc.yaml cannot go stale: its code deps are what each stage imports, its params every config
key each stage reads (recorded while the stage runs on the demo)."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig

from conftest import demo_config
from fiqa.cli.dvc_yaml import project_dvc_yaml
from fiqa.config.validate import validate_config
from fiqa.pipeline.dvc_yaml import import_closure
from fiqa.stages import RUNTIME_KEYS, STAGES

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"


def dvc_params(dvc_yaml: Path) -> dict[str, list[str]]:
    """``{stage: params}`` as ``dvc.yaml`` declares them."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: [str(p) for p in stage.get("params", [])] for name, stage in stages.items()}


@contextlib.contextmanager
def recorded_reads(cfg: DictConfig) -> Iterator[set[str]]:
    """Every key of ``cfg`` read while the block runs (``cfg.a.b``, ``.get``, ``in``, merges and
    conversions all go through ``DictConfig._get_node``), list indices dropped."""
    reads: set[str] = set()
    original = DictConfig._get_node
    busy = False

    def recording(self, key, *args, **kwargs):
        nonlocal busy
        node = original(self, key, *args, **kwargs)
        if not busy:  # computing a full key reads parent nodes itself
            busy = True
            try:
                if self._get_root() is cfg:
                    reads.add(re.sub(r"\[\d+\]", "", self._get_full_key(key)))
            finally:
                busy = False
        return node

    DictConfig._get_node = recording
    try:
        yield reads
    finally:
        DictConfig._get_node = original


def undeclared(reads: set[str], declared: list[str]) -> list[str]:
    """Read keys that no declared key covers: neither the key, nor a group above it, nor (for a
    container read on the way down) a key below it."""
    allowed = [*declared, *RUNTIME_KEYS]
    return sorted(
        key for key in reads
        if not any(key == d or key.startswith(d + ".") or d.startswith(key + ".") for d in allowed)
    )  # fmt: skip


def test_dvc_yaml_is_what_fiqa_dvc_yaml_writes() -> None:
    assert (REPO_ROOT / "dvc.yaml").read_text() == project_dvc_yaml(REPO_ROOT), "make dvc-yaml"


def test_code_deps_are_the_import_closure_and_stay_each_stages_own() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    closure = {
        name: {p.relative_to(REPO_ROOT).as_posix() for p in import_closure([f"fiqa.stages.{name}"],
                                                                           SRC)}
        for name in STAGES
    }  # fmt: skip
    for name, files in closure.items():
        assert files <= set(stages[name]["deps"]), name
    extract = {p.relative_to(REPO_ROOT).as_posix() for p in (SRC / "fiqa" / "extract").glob("*.py")}
    assert extract <= closure["label"]  # the engine computes the labels' embeddings
    assert not any(f.startswith("src/fiqa/label/") for f in closure["prepare"] | closure["train"])
    assert "src/fiqa/label/serfiq.py" in closure["evaluate"]  # blind methods on benchmarks


def test_recorder_sees_reads_and_the_check_flags_an_undeclared_key() -> None:
    from fiqa.config import compose_config

    cfg = compose_config()
    with recorded_reads(cfg) as reads:
        _ = cfg.label.fr_models, cfg.eval.get("fmr"), "precision" in cfg.extract
        dict(cfg.trainer)
    assert {"label.fr_models", "eval.fmr", "extract.precision", "trainer.max_epochs"} <= reads
    assert undeclared(reads, ["label.fr_models", "eval", "trainer"]) == ["extract.precision"]


@pytest.mark.slow
def test_every_config_key_a_stage_reads_is_a_declared_param(demo_root: Path, small_demo: Path):
    """Run the four stages on the demo; what each reads must be in its dvc.yaml params (or a
    runtime key that changes no output), else `dvc repro` would serve stale outputs."""
    declared = dvc_params(REPO_ROOT / "dvc.yaml")
    cfg = demo_config(demo_root, small_demo, "debug=smoke", "eval.benchmark.split=all")
    validate_config(cfg)  # reads every key: not part of the stage
    missing = {}
    for stage in STAGES:
        with recorded_reads(cfg) as reads:
            importlib.import_module(f"fiqa.stages.{stage}").run(cfg)
        missing[stage] = undeclared(reads, declared[stage])
        assert reads, stage
    assert missing == {stage: [] for stage in STAGES}, f"read but not declared: {missing}"
