"""The Hydra config tree: params.yaml drift, every option composes, typos fail early."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from fiqa.config import compose_config
from fiqa.config.params_file import compose_params
from fiqa.config.typed import ConfigError
from fiqa.config.validate import validate_config

REPO_ROOT = Path(__file__).resolve().parents[1]

CONF = REPO_ROOT / "conf"
GROUPS = [
    "paths",
    "data",
    "fr",
    "label",
    "model",
    "trainer",
    "logger",
    "eval",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_default(overrides: list[str] | None = None):
    return compose_config(overrides)


def test_params_yaml_equals_composed_default_config():
    committed = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    assert committed == compose_params(CONF), "params.yaml is stale: run `make params`"


def test_config_has_every_design_group():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"
    cfg = compose_default()
    for group in ["paths", "data", "fr", "label", "model", "trainer", "logger", "eval"]:
        assert group in cfg, group
    assert cfg.data.root == "./data/raw"


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in GROUPS if g not in {"paths"} for o in options(g)],
)
def test_every_group_option_composes(override: str):
    cfg = compose_default([override])
    OmegaConf.resolve(cfg)
    assert "root" in cfg.data


def test_typo_in_override_fails_with_the_key_name():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_default(["model.lrr=1e-3"])


def test_paths_follow_root():
    cfg = compose_default(["paths.root=/tmp/x"])
    assert cfg.paths.prepared == "/tmp/x/data/prepared"
    assert cfg.data.root == "/tmp/x/data/raw"


def test_dvc_yaml_params_exist_in_params_yaml():
    dvc = OmegaConf.load(REPO_ROOT / "dvc.yaml")
    params = OmegaConf.load(REPO_ROOT / "params.yaml")
    for name, stage in dvc.stages.items():
        for key in stage.params:
            assert OmegaConf.select(params, key) is not None, f"stage {name}: param {key} missing"
    assert Path(REPO_ROOT / "data.dvc").is_file()


def test_default_config_matches_the_typed_schemas():
    validate_config(compose_default())
    validate_config(OmegaConf.load(REPO_ROOT / "params.yaml"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lr=fast", "model.lr"),
        ("label.methods.serfiq.passes=many", "label.methods.serfiq.passes"),
        ("train.batch_size=0.5", "train.batch_size"),
        ("eval.benchmark.format=csv", "eval.benchmark.format='csv'; choose one of prepared"),
    ],
)
def test_wrong_types_and_values_fail_naming_the_key(override: str, message: str):
    with pytest.raises(ConfigError) as err:
        validate_config(compose_default([override]))
    assert message in str(err.value)


def test_missing_key_is_named():
    cfg = compose_default()
    with open_dict(cfg):
        del cfg.prepare["shard_size"]
    with pytest.raises(ConfigError, match=r"prepare\.shard_size"):
        validate_config(cfg)


@pytest.mark.parametrize("option", options("fr"))
def test_fr_options_name_registered_models_and_require_their_weights(option: str):
    from fiqa.fr import FR_MODELS

    cfg = compose_default([f"fr={option}"])
    assert cfg.fr.name in FR_MODELS
    if option == "sface":  # the one model whose weights ship with the package
        validate_config(cfg)
        return
    with pytest.raises(ConfigError, match=r"fr\.weights"):
        validate_config(cfg)
    validate_config(compose_default([f"fr={option}", "fr.weights=/models/file"]))
