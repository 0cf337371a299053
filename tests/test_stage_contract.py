"""dvc.yaml cannot go stale: its code deps are what each stage imports, its params every config
key each stage reads (recorded while the stage runs on the demo)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import pytest
import yaml

from conftest import demo_config
from fiqa.cli.dvc_yaml import project_dvc_yaml
from fiqa.config.schemas import Settings
from fiqa.config.validate import load_settings
from fiqa.pipeline.dvc_yaml import import_closure
from fiqa.stages import RUNTIME_KEYS, STAGES

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"


def dvc_params(dvc_yaml: Path) -> dict[str, list[str]]:
    """``{stage: params}`` as ``dvc.yaml`` declares them."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: [str(p) for p in stage.get("params", [])] for name, stage in stages.items()}


@contextlib.contextmanager
def recorded_reads(settings: Settings) -> Iterator[set[str]]:
    """Every settings key read while the block runs: each field of a typed group read
    (``label.target``; a container field whole, ``eval.benchmark``), but not the path to it
    (reading ``settings.label`` to reach ``label.target`` reads no value), ``asdict`` and
    properties included. Each dataclass of ``settings`` gets a recording subclass for the block."""
    reads: set[str] = set()
    swapped: list[tuple[object, type]] = []

    def record(obj: object, prefix: str) -> None:
        names = {f.name for f in fields(obj)}
        for name in names:
            value = object.__getattribute__(obj, name)
            if is_dataclass(value):
                record(value, f"{prefix}{name}.")
        cls = type(obj)

        def getattribute(self: object, name: str) -> object:
            value = object.__getattribute__(self, name)
            if name in names and not is_dataclass(value):
                reads.add(prefix + name)
            return value

        swapped.append((obj, cls))
        object.__setattr__(obj, "__class__", type(cls.__name__, (cls,),
                                                  {"__getattribute__": getattribute}))  # fmt: skip

    record(settings, "")
    try:
        yield reads
    finally:
        for obj, cls in swapped:
            object.__setattr__(obj, "__class__", cls)


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
    settings = {"src/fiqa/config/validate.py", "src/fiqa/config/schemas.py"}
    for name, files in closure.items():
        code = {d for d in stages[name]["deps"] if d.startswith("src/")}
        assert code == files | settings, name
    extract = {p.relative_to(REPO_ROOT).as_posix() for p in (SRC / "fiqa" / "extract").glob("*.py")}
    assert extract <= closure["label"]  # the engine computes the labels' embeddings
    assert not any(f.startswith("src/fiqa/label/") for f in closure["prepare"] | closure["train"])
    assert "src/fiqa/label/serfiq.py" in closure["evaluate"]  # blind methods on benchmarks


def test_recorder_sees_reads_and_the_check_flags_an_undeclared_key() -> None:
    from fiqa.config import compose_config

    settings = load_settings(compose_config())
    with recorded_reads(settings) as reads:
        _ = settings.label.fr_models, settings.eval.fmrs, settings.extract.precision
        asdict(settings.model)
    assert {"label.fr_models", "eval.fmr", "eval.extra_fmrs", "extract.precision",
            "model.lr"} <= reads  # fmt: skip
    assert "label" not in reads and "eval" not in reads  # the way to a value is no read
    assert undeclared(reads, ["label.fr_models", "eval", "model"]) == ["extract.precision"]
    assert type(settings.label).__name__ == "LabelSettings" and "lr" in asdict(settings.model)


@pytest.mark.slow
def test_every_config_key_a_stage_reads_is_a_declared_param(demo_root: Path, small_demo: Path):
    """Run the four stages on the demo; what each reads of its settings must be in its dvc.yaml
    params (or a runtime key that changes no output), else `dvc repro` would serve stale
    outputs."""
    declared = dvc_params(REPO_ROOT / "dvc.yaml")
    cfg = demo_config(demo_root, small_demo, "debug=smoke", "eval.benchmark.split=all")
    missing = {}
    for stage in STAGES:
        settings = load_settings(cfg)  # the runner's conversion: not part of the stage
        with recorded_reads(settings) as reads:
            importlib.import_module(f"fiqa.stages.{stage}").run(settings)
        missing[stage] = undeclared(reads, declared[stage])
        assert reads, stage
    assert missing == {stage: [] for stage in STAGES}, f"read but not declared: {missing}"
