"""The Hydra config tree: params.yaml drift, every option composes, typos fail early."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from fiqa.config import compose_config
from fiqa.config.extraction import label_frs
from fiqa.config.params_file import compose_params
from fiqa.config.typed import ConfigError
from fiqa.config.validate import load_settings

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
    """The options of a config group: its files, and for ``label`` the registered methods
    (``label=<method>`` options come from the method registry, not from files)."""
    if group == "label":
        from fiqa.label import METHODS

        return sorted(METHODS)
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def leaves(node, prefix: str = "") -> dict[str, object]:
    """``{dotted key: value}`` of every leaf of a config node, interpolations unresolved."""
    out: dict[str, object] = {}
    for key in node:
        value = node._get_node(key)
        if OmegaConf.is_dict(value) and len(value):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = (
                OmegaConf.to_container(value) if OmegaConf.is_config(value) else value._value()
            )
    return out


def compose_default(overrides: list[str] | None = None):
    return compose_config(overrides)


def committed_files(repo: Path, into: Path) -> Path:
    """``params.yaml`` and ``conf/`` of ``repo`` as committed at HEAD (what ``dvc repro`` reads
    in a fresh checkout), extracted into ``into``; ``repo`` itself outside a git checkout."""
    if shutil.which("git") is None:
        return repo
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", "HEAD", "params.yaml", "conf"],
        capture_output=True,
    )
    if archive.returncode != 0:  # no git checkout, or params.yaml and conf/ not committed there
        return repo
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def params_drift(repo: Path, scratch: Path) -> str | None:
    """Why ``repo``'s params.yaml disagrees with its ``conf/`` composed; None when it agrees.

    The committed params.yaml must be HEAD's ``conf/`` composed, so that ``dvc exp run -S
    label.target=crfiqa``, which rewrites the workspace's params.yaml, is no drift. Edits of
    ``conf/`` not yet committed must compose to the workspace's params.yaml (``make params`` run)
    or to the committed one (edits that change no value).
    """
    committed = committed_files(repo, scratch)
    params = (committed / "params.yaml").read_text(encoding="utf-8")
    if params != compose_params(committed / "conf"):
        where = "the committed params.yaml" if committed != repo else "params.yaml"
        return f"{where} is stale: run `make params` (and commit it)"
    if committed != repo:
        workspace = (repo / "params.yaml").read_text(encoding="utf-8")
        if compose_params(repo / "conf") not in {params, workspace}:
            return "conf/ changed since params.yaml was written: run `make params`"
    return None


def test_params_yaml_equals_composed_default_config(tmp_path: Path):
    assert params_drift(REPO_ROOT, tmp_path) is None


def git(repo: Path, *args: str) -> None:
    identity = ["-c", "user.name=fiqa", "-c", "user.email=fiqa@test", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "-C", str(repo), *identity, *args], check=True, capture_output=True)


@pytest.fixture
def params_repo(tmp_path: Path) -> Path:
    """A git repository holding a copy of conf/ and its params.yaml, committed."""
    repo = tmp_path / "repo"
    shutil.copytree(CONF, repo / "conf")
    (repo / "params.yaml").write_text(compose_params(repo / "conf"), encoding="utf-8")
    git(repo, "init", "-q")
    git(repo, "add", "params.yaml", "conf")
    git(repo, "commit", "-q", "-m", "conf and params.yaml")
    return repo


def edit_config(repo: Path) -> None:
    config = repo / "conf" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("experiment_name: demo", "experiment_name: edited"), "utf-8")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_params_drift_accepts_a_dvc_experiment_and_uncommitted_make_params(
    params_repo: Path, tmp_path: Path
):
    experiment = compose_params(params_repo / "conf", ["label.target=crfiqa"])  # dvc exp run -S
    (params_repo / "params.yaml").write_text(experiment, encoding="utf-8")
    assert experiment != compose_params(params_repo / "conf")  # the workspace file differs
    assert params_drift(params_repo, tmp_path / "a") is None
    edit_config(params_repo)  # a conf/ edit, then `make params`, not committed yet
    (params_repo / "params.yaml").write_text(compose_params(params_repo / "conf"), "utf-8")
    assert params_drift(params_repo, tmp_path / "b") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_params_drift_names_a_stale_committed_file_and_a_forgotten_make_params(
    params_repo: Path, tmp_path: Path
):
    edit_config(params_repo)  # `make params` forgotten
    assert "conf/ changed" in params_drift(params_repo, tmp_path / "a")
    git(params_repo, "commit", "-q", "-am", "conf/ edited, params.yaml stale")
    assert "committed params.yaml is stale" in params_drift(params_repo, tmp_path / "b")
    (params_repo / "params.yaml").write_text(compose_params(params_repo / "conf"), "utf-8")
    assert "committed params.yaml is stale" in params_drift(params_repo, tmp_path / "c")


def test_params_drift_outside_git_compares_the_workspace_file(tmp_path: Path):
    repo = tmp_path / "export"
    shutil.copytree(CONF, repo / "conf")
    (repo / "params.yaml").write_text(compose_params(repo / "conf"), encoding="utf-8")
    assert params_drift(repo, tmp_path / "scratch") is None
    edit_config(repo)
    assert params_drift(repo, tmp_path / "scratch") == (
        "params.yaml is stale: run `make params` (and commit it)"
    )


def test_every_design_group_has_options_and_the_default_names_its_data():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"
    cfg = compose_default()
    assert (cfg.data.name, cfg.fr.name, cfg.model.name) == ("demo", "sface", "regressor")
    assert cfg.data.root == "./data/raw" and cfg.label.target == "faceqnet"


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in GROUPS if g not in {"paths", "label"} for o in options(g)],
)
def test_every_group_option_composes_with_its_own_values(override: str):
    """Selecting an option puts every value its file states into the composed config."""
    group, option = override.split("=")
    file = OmegaConf.load(CONF / group / f"{option}.yaml")
    file.pop("defaults", None)
    cfg = compose_default([override])
    OmegaConf.resolve(OmegaConf.create(OmegaConf.to_container(cfg)))  # interpolations resolve
    package = cfg if group in {"experiment", "debug"} else cfg[group]  # _global_ packages
    composed = leaves(package)
    for key, value in leaves(file).items():
        assert composed[key] == value, f"{override}: {key}"


@pytest.mark.parametrize("method", options("label"))
def test_label_option_of_every_registered_method(method: str):
    cfg = compose_default([f"label={method}"])
    assert cfg.label.target == method
    common = OmegaConf.load(CONF / "label" / "common.yaml")
    assert list(cfg.label.compute) == list(common.compute)
    assert set(cfg.label.methods) == set(options("label"))  # every method's settings
    load_settings(cfg) if method != "magface" else None


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
    load_settings(compose_default())
    load_settings(OmegaConf.load(REPO_ROOT / "params.yaml"))


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
        load_settings(compose_default([override]))
    assert message in str(err.value)


def test_missing_key_is_named():
    cfg = compose_default()
    with open_dict(cfg):
        del cfg.prepare["shard_size"]
    with pytest.raises(ConfigError, match=r"prepare\.shard_size"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match=r"missing: data\.table"):  # ??? over a schema default
        load_settings(compose_default(["data=table"]))


@pytest.mark.parametrize("option", options("fr"))
def test_fr_options_name_registered_models_and_require_their_weights(option: str):
    from fiqa.fr import FR_BUILDERS

    cfg = compose_default([f"fr={option}"])
    assert cfg.fr.name in FR_BUILDERS
    if option == "sface":  # the one model whose weights ship with the package
        load_settings(cfg)
        return
    with pytest.raises(ConfigError, match=r"fr\.weights"):
        load_settings(cfg)
    load_settings(compose_default([f"fr={option}", "fr.weights=/models/file"]))


def test_model_schemas_name_exactly_the_constructor_arguments_which_state_no_defaults():
    from dataclasses import fields
    from inspect import signature

    from fiqa.quality.model import QualityRegressor
    from fiqa.train.distill import DistillationModule
    from fiqa.train.fit import DISTILL_ONLY
    from fiqa.train.settings import DistillSettings, RegressorHeadSettings, RegressorSettings

    def arguments(cls: type) -> dict:
        return {k: p for k, p in signature(cls.__init__).parameters.items() if k != "self"}

    regressor = {f.name for f in fields(RegressorSettings)} - {"name"}
    assert regressor == set(arguments(QualityRegressor))
    backbone = {"backbone", "pretrained", "backbone_weights", "backbone_options"}
    assert {f.name for f in fields(RegressorHeadSettings)} == regressor - backbone
    distill = {f.name for f in fields(DistillSettings)} - set(DISTILL_ONLY)
    assert distill == set(arguments(DistillationModule)) - {"num_classes"}
    for cls in (QualityRegressor, DistillationModule):  # the values come from conf/ only
        assert all(p.default is p.empty for p in arguments(cls).values()), cls.__name__


def test_fr_entries_complete_names_and_mappings_and_refuse_duplicates():
    from fiqa.config.extraction import fr_entries
    from fiqa.config.typed import typed
    from fiqa.extract import FREntry

    cfg = compose_default(["fr.batch_size=16", "label.fr_models=[sface,{name: dlib_resnet, "
                           "weights: /m/d.dat, flip: true},iresnet50]"])  # fmt: skip
    entries = fr_entries(cfg.label.fr_models, typed(cfg.fr, FREntry), "label.fr_models")
    assert entries["sface"] == typed(cfg.fr, FREntry)
    assert entries["dlib_resnet"] == FREntry("dlib_resnet", "/m/d.dat", 16, True, {})
    assert entries["iresnet50"] == FREntry("iresnet50", None, 16, False, {})
    with pytest.raises(ConfigError, match=r"label\.fr_models: FR models listed twice: \['sface'\]"):
        label_frs(load_settings(compose_default(["label.fr_models=[sface,sface]"])))


@pytest.mark.parametrize(
    ("override", "message"),
    [("prepare.shard_size=0", "prepare.shard_size must be >= 1, got 0"),
     ("prepare.detector=mtcnn", "prepare.detector='mtcnn'; choose one of")],
)  # fmt: skip
def test_settings_objects_check_their_values(override: str, message: str):
    from fiqa.config.typed import typed
    from fiqa.data.preparation import PrepareSettings

    with pytest.raises(ValueError, match=message):
        typed(compose_default([override]).prepare, PrepareSettings)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prepare.shard_size=0", "prepare.shard_size=0: must be >= 1"),
        ("prepare.shard_size=-5", "prepare.shard_size=-5: must be >= 1"),
        ("prepare.val_fraction=1.5", "prepare.val_fraction=1.5: must be in [0, 1)"),
        ("prepare.val_fraction=1.0", "prepare.val_fraction=1.0: must be in [0, 1)"),
        ("prepare.max_failure_rate=-0.1", "prepare.max_failure_rate=-0.1: must be in [0, 1]"),
        ("prepare.num_workers=-1", "prepare.num_workers=-1: must be >= 0"),
        ("eval.fmr=2", "eval.fmr=2: must be in (0, 1)"),
        ("eval.fmr=0", "eval.fmr=0: must be in (0, 1)"),
        ("eval.extra_fmrs=[0.01,1.0]", "eval.extra_fmrs[1]=1.0: must be in (0, 1)"),
        ("eval.discard_limits=[0.2,1.5]", "eval.discard_limits[1]=1.5: must be in (0, 1]"),
        ("eval.discard_limits=[0]", "eval.discard_limits[0]=0: must be in (0, 1]"),
        ("train.batch_size=0", "train.batch_size=0: must be >= 1"),
        ("fr.batch_size=0", "fr.batch_size=0: must be >= 1"),
        ("extract.part_rows=0", "extract.part_rows=0: must be >= 1"),
        ("label.methods.serfiq.passes=1", "label.methods.serfiq.passes=1: must be >= 2"),
        ("label.methods.serfiq.dropout=1.0", "label.methods.serfiq.dropout=1.0: must be in (0, 1)"),
        ("label.ediffiqa.top=0", "label.ediffiqa.top=0: must be in (0, 1]"),
        ("label.methods.diffiqa.t=1000", "label.methods.diffiqa.t=1000: must be < label.methods"),
        ("ddpm.batch_size=0", "ddpm.batch_size=0: must be >= 1"),
        ("model.lr=0", "model.lr=0: must be > 0"),
        ("model.consistency_weight=1.0", "model.consistency_weight=1.0: must be in [0, 1)"),
        ("train.early_stopping_patience=0", "train.early_stopping_patience=0: must be >= 1"),
        ("label.methods.faceqan.eps=2", "label.methods.faceqan.eps must be in (0, 1)"),  # own check
    ],
)
def test_out_of_range_values_fail_at_start_naming_the_key_and_range(override: str, message: str):
    """Checked by load_settings (no model, no image): before, shard_size=0 failed inside the
    stage and eval.fmr / val_fraction only after the FR model ran / every image was read."""
    with pytest.raises(ConfigError) as err:
        load_settings(compose_default([override]))
    assert message in str(err.value)


def test_out_of_range_values_of_the_distill_model_are_named():
    for override, message in [("model.temperature=0", "model.temperature=0: must be > 0"),
                              ("model.loss_weights=[0.4,-1,0.4]", "model.loss_weights[1]=-1"),
                              ("model.regressor.lr=-1", "model.regressor.lr=-1: must be > 0")]:  # fmt: skip
        with pytest.raises(ConfigError) as err:
            load_settings(compose_default(["model=distill", override]))
        assert message in str(err.value)
    load_settings(compose_default(["model=distill"]))
    load_settings(compose_default(["train.early_stopping_patience=null"]))  # null: off


@pytest.mark.parametrize("key", ["data.root", "paths.root"])
def test_an_empty_folder_key_fails_naming_it(key: str):
    """``data.root=`` would scan the current directory (the repository) as a dataset."""
    with pytest.raises(ConfigError, match=rf"^{key} is empty: set it to "):
        load_settings(compose_default([f"{key}="]))


def test_every_range_checked_key_is_a_config_key():
    """The table cannot name a key that no config has (a check that would never run)."""
    from fiqa.config.ranges import ELEMENT_RANGES, RANGES

    configs = [compose_default(), compose_default(["model=distill"]),
               compose_default(["data=table", "data.table=/t.csv"])]  # fmt: skip
    absent = object()
    for key in [*RANGES, *ELEMENT_RANGES]:
        assert any(OmegaConf.select(c, key, default=absent) is not absent for c in configs), key
