"""A reproduction study as a DVC pipeline: one training set, one regressor per label method,
their blind evaluation beside per-image methods and baselines.

``fiqa study`` writes the study's pipeline into ``paths.studies/<study.name>/`` and DVC runs it:
what is up to date, what a killed run left to do and what a changed setting invalidates are
decided by ``dvc.lock``, as for the project's own pipeline. Every step is a pipeline stage run
by its own command on the study's config (``params.yaml``, the composed config with the study's
paths and evaluation)::

    prepare              the training set                      data/prepared/
    ddpm                 DifFIQA's face DDPM (when read)        ddpm/
    label-<m>            the labels of study method m           data/labels/<m>/
    train-<m>            the regressor on them                  models/<m>/, metrics/<m>/train.json
                         (with study.seeds = n > 1: train-<m>-s<seed>, one per seed, in
                         models/<m>/s<seed>/ and metrics/<m>/s<seed>/, rows <m>(R)-s<seed>)
    evaluate             the blind matrix of every <m>(R)       metrics/eval.json, plots/, reports/

A study method is a label column: a label method or its eDifFIQA-corrected labels
(``<method>+ediffiqa``), optionally in a variant, ``<column>.<variant>``: the same column with
the settings of ``study.variants.<variant>`` (dotted keys over the study's config, e.g.
``{prepare.copies.per_face: 1}`` or ``{model.train_blocks: 2}``), its row ``<column>.<variant>(R)``
in the same tables. A variant's stages run on its own config file (``params-<variant>.yaml``);
one that changes the data or ``prepare`` gets its own ``prepare-<variant>`` stage
(``data/prepared.<variant>/``), one that changes no data, ``prepare`` or ``label`` setting trains
on the labels of its column's plain row (when the study has it). A variant may not move a
validation identity (the benchmark of every row is the plain prepared set's validation split):
the split's settings must be the study's, up to single-image identities kept for training
(``data.min_images`` below ``prepare.val_min_images``). Each stage's params are only the
settings its outputs depend on (a method's own and those it reads), so a changed label setting
relabels and retrains only the methods it changes, and an added method adds only its own two
stages.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

import fiqa
from fiqa.config.diffusion import reads_ddpm
from fiqa.config.evaluation import benchmark_spec
from fiqa.config.extraction import label_frs
from fiqa.config.labels import label_settings
from fiqa.config.typed import ConfigError
from fiqa.config.validate import load_settings
from fiqa.core.artifacts import EDC_PLOTS, EVAL_METRICS, QUALITY_CHECKPOINT, TRAIN_METRICS
from fiqa.core.atomic import write_text_atomic
from fiqa.label import METHODS
from fiqa.label.correction import split_column
from fiqa.label.diffiqa import METHOD as DDPM_METHOD
from fiqa.label.registry import column_dependencies
from fiqa.pipeline.dvc_yaml import DvcStage, code_deps, relative, render
from fiqa.stages import DDPM_KEYS, STAGES, StageError

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
VARIANT_SEP = "."  # <column>.<variant>
DATA_GROUPS = ("data.", "prepare.")  # keys of a variant that make its own prepared set
RUNTIME_PREPARE = ("prepare.num_workers",)  # change no prepared byte
DVC_FILE = "dvc.yaml"
HEADER = """\
# Written by `fiqa study` from the study's config (params.yaml beside it): do not edit by hand.
# Run it again with `fiqa study <the same overrides>`, or with `dvc repro {dvc_yaml}` from {workdir}.
"""
DATA_INPUTS = ("root", "table", "exclude", "references")  # data keys naming input files
BENCHMARK_INPUTS = ("root", "table", "path", "images_root")  # benchmark keys naming inputs


@dataclass(frozen=True)
class Study:
    """A study's DVC pipeline.

    Attributes:
        directory: Its folder (``dvc.yaml``, ``params.yaml`` and every output), relative to
            ``workdir``.
        workdir: Where every stage command runs (relative paths in the config mean the same
            there as for ``fiqa study``); inside the DVC repository of ``directory``.
        methods: The study methods (label columns), one regressor each.
        config: The study's config (``params.yaml``).
        stages: Its stages in pipeline order.
        variants: The config of each variant its methods use (``params-<variant>.yaml``).
    """

    directory: Path
    workdir: Path
    methods: list[str]
    config: dict[str, Any]
    stages: list[DvcStage]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dvc_yaml(self) -> Path:
        return self.directory / DVC_FILE

    def target(self, stage: str) -> str:
        """The ``dvc repro`` target of one of its stages."""
        return f"{self.dvc_yaml.as_posix()}:{stage}"

    def stage_names(self, kind: str) -> list[str]:
        """Its ``label-*`` or ``train-*`` stages, in method order (a method's seeds together)."""
        return [s.name for s in self.stages if s.name.startswith(f"{kind}-")]


def study_config(cfg: DictConfig) -> tuple[Path, DictConfig]:
    """The study folder and the config its stages run with: ``cfg`` with the paths of the study
    (outputs under ``paths.studies/<study.name>``; the raw data, the cache and the studies
    folder as they are), ``experiment_name: study-<name>`` (the W&B group of its runs), no
    label columns besides each stage's target, and the evaluation of the study: its benchmarks
    and FR models, every study method's regressor as ``<m>(R)`` beside ``study.blind``."""
    methods = study_methods(cfg)
    cfg = cfg.copy()
    name = str(cfg.study.name)
    directory = Path(str(cfg.paths.studies)) / name
    benchmarks = [benchmark_spec(b, f"study.benchmarks[{i}]")
                  for i, b in enumerate(cfg.study.benchmarks)]  # fmt: skip
    if not benchmarks:
        raise ConfigError("study.benchmarks is empty: give at least one benchmark")
    with open_dict(cfg):
        for key in ("raw", "cache", "studies"):  # inputs and shared folders stay where they are
            cfg.paths[key] = str(cfg.paths[key])
        cfg.paths.root = str(directory)
        cfg.study.name = name
        cfg.experiment_name = f"study-{name}"
        cfg.label.compute = []
        cfg.eval.benchmark, cfg.eval.benchmarks = benchmarks[0], benchmarks[1:]
        cfg.eval.fr_models = cfg.study.fr_models
    label_fr_names = {v: list(label_frs(load_settings(variant_config(cfg, v))))
                      for v in {split_variant(m)[1] for m in methods}}  # fmt: skip
    with open_dict(cfg):
        runs = [(m, seed) for m in methods for seed in study_seeds(cfg)]
        cfg.eval.methods = [*(regressor_name(m, s) for m, s in runs), *cfg.study.blind]
        cfg.eval.quality_models = {
            regressor_name(m, s): {"path": str(directory / "models" / run_folder(m, s)
                                               / QUALITY_CHECKPOINT),
                                   "fr_models": label_fr_names[split_variant(m)[1]]}
            for m, s in runs
        }  # fmt: skip
    return directory, cfg


_ABSENT = object()


def variant_config(cfg: DictConfig, variant: str | None) -> DictConfig:
    """The study config ``cfg`` with the settings of ``study.variants.<variant>`` (``cfg`` for
    None); one that changes the data or ``prepare`` prepares into ``<paths.prepared>.<variant>``.

    Raises:
        ConfigError: For a key the config does not have, or settings that would move a
            validation identity (module docstring), naming the variant and the keys.
    """
    if variant is None:
        return cfg
    settings = cfg.study.variants[variant]
    out = cfg.copy()
    with open_dict(out):
        for key, value in settings.items():
            if OmegaConf.select(out, key, default=_ABSENT) is _ABSENT:
                raise ConfigError(f"study.variants.{variant}: {key} is no config key")
            OmegaConf.update(out, key, value, merge=False)
        if own_prepared(settings):
            out.paths.prepared = f"{cfg.paths.prepared}{VARIANT_SEP}{variant}"
    moved = moved_split_keys(cfg, out)
    if moved:
        raise ConfigError(f"study.variants.{variant}: {moved} would change the validation split "
                          "every row is evaluated on; a variant may add training faces "
                          "(prepare.copies, data.min_images below prepare.val_min_images), not "
                          "move validation identities")  # fmt: skip
    return out


def own_prepared(settings: Mapping[str, Any]) -> bool:
    """A variant with these settings prepares its own set."""
    return any(k.startswith(DATA_GROUPS) and k not in RUNTIME_PREPARE for k in settings)


def moved_split_keys(base: DictConfig, variant: DictConfig) -> list[str]:
    """The data and ``prepare`` keys of ``variant`` that may move a validation identity:
    any change but the degraded copies, the workers, and ``data.min_images`` where both values
    are at most ``prepare.val_min_images`` (an identity with fewer faces never validates)."""
    free = {"prepare.copies", "prepare.num_workers", "data.min_images"}
    moved = []
    for group in ("data", "prepare"):
        a, b = (OmegaConf.to_container(c[group], resolve=True) for c in (base, variant))
        moved += [f"{group}.{k}" for k in sorted({*a, *b})
                  if f"{group}.{k}" not in free and a.get(k) != b.get(k)]  # fmt: skip
    lows = [c.data.get("min_images") or 1 for c in (base, variant)]
    if lows[0] != lows[1] and max(lows) > int(variant.prepare.val_min_images):
        moved.append("data.min_images")
    return moved


def study_seeds(cfg: DictConfig) -> list[int | None]:
    """The training seeds of every method: ``[None]`` (``train.seed`` as configured, one
    training) when ``study.seeds`` is 1, else ``train.seed``, ``train.seed + 1``, ..."""
    n = int(cfg.study.seeds)
    return [None] if n == 1 else [int(cfg.train.seed) + k for k in range(n)]


def regressor_name(method: str, seed: int | None = None) -> str:
    """The evaluation name of the regressor trained on ``method``'s labels (as DifFIQA(R)),
    ``-s<seed>`` appended for one of several seeds."""
    return f"{method}(R)" + ("" if seed is None else f"-s{seed}")


def run_folder(method: str, seed: int | None) -> str:
    """A training's folder under the study's ``models/`` and ``metrics/``."""
    return method if seed is None else f"{method}/s{seed}"


def split_variant(method: str) -> tuple[str, str | None]:
    """``(label column, variant or None)`` of a study method ``<column>[.<variant>]``."""
    column, sep, variant = method.partition(VARIANT_SEP)
    return column, (variant if sep else None)


def study_methods(cfg: DictConfig) -> list[str]:
    """``study.methods``, checked: label methods or ``<method>+ediffiqa``, each once, optionally
    ``.<variant>`` of ``study.variants``.

    Raises:
        ConfigError: Naming an unknown or repeated method, or an unknown variant.
    """
    methods = [str(m) for m in cfg.study.methods]
    unknown = [m for m in methods if split_column(split_variant(m)[0])[0] not in METHODS]
    if unknown:
        raise ConfigError(f"study.methods: unknown {unknown}; use label methods "
                          f"({', '.join(METHODS)}) or <method>+ediffiqa, each optionally "
                          f".<variant> of study.variants")  # fmt: skip
    variants = cfg.study.get("variants") or {}
    undefined = [m for m in methods if split_variant(m)[1] not in (None, *variants)]
    if undefined:
        raise ConfigError(f"study.methods: {undefined} name a variant that study.variants does "
                          f"not define (it has {sorted(variants)})")  # fmt: skip
    if len(set(methods)) != len(methods):
        raise ConfigError(f"study.methods names a method twice: {methods}")
    if not methods:
        raise ConfigError("study.methods is empty: give the label methods to train on")
    return methods


def study_pipeline(cfg: DictConfig, workdir: Path) -> Study:
    """The study of ``cfg`` (``study_config``) with commands run from ``workdir``.

    Raises:
        ConfigError: For an unknown study method or an empty benchmark list.
        StageError: When the study folder is not inside a DVC repository holding ``workdir``.
    """
    directory, study_cfg = study_config(cfg)
    workdir = workdir.absolute()
    root = dvc_root(workdir)
    if not directory.absolute().is_relative_to(root):
        raise StageError(f"the study folder {directory.absolute()} is outside the DVC "
                         f"repository {root}: set paths.studies inside it")  # fmt: skip
    methods = study_methods(cfg)
    configs = {}  # the config each variant's stages run with (None: the study's)
    for variant in (None, *dict.fromkeys(v for m in methods if (v := split_variant(m)[1]))):
        config = OmegaConf.to_container(variant_config(study_cfg, variant), resolve=True)
        assert isinstance(config, dict)
        configs[variant] = config
    directory = Path(relative(directory, workdir))
    stages = _stages(directory, workdir, methods, study_seeds(cfg), configs)
    variants = {v: c for v, c in configs.items() if v is not None}
    return Study(directory, workdir, methods, configs[None], stages, variants)


def params_file(variant: str | None) -> str:
    """The config file name (no suffix) of a variant's stages, of the study's for None."""
    return Path(PARAMS_FILE).stem + ("" if variant is None else f"-{variant}")


def dvc_root(start: Path) -> Path:
    """The DVC repository holding ``start`` (its nearest folder with ``.dvc/``).

    Raises:
        StageError: Outside any DVC repository.
    """
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise StageError(f"{start} is not inside a DVC repository: a study is a DVC pipeline; run "
                     "fiqa study from the fiqa repository (or `dvc init` a project folder)")  # fmt: skip


def _stages(directory: Path, workdir: Path, methods: list[str], seeds: list[int | None],
            configs: Mapping[str | None, Mapping[str, Any]]) -> list[DvcStage]:  # fmt: skip
    """The study's stages (module docstring), paths relative to ``workdir``; ``configs``: the
    config of the study (None) and of each variant."""
    src = Path(fiqa.__file__).resolve().parent.parent
    d = directory.as_posix()
    wdir = relative(workdir, workdir / directory)  # the stages run where fiqa study was run
    config = configs[None]
    params = {v: label_settings(load_settings(OmegaConf.create(c))) for v, c in configs.items()}
    paths = {k: relative(v, workdir) for k, v in config["paths"].items()}
    blind = [str(m) for m in config["study"]["blind"]]
    ddpm_read = any(reads_ddpm(split_variant(c)[0], params[split_variant(c)[1]])
                    for c in [*methods, *blind])  # fmt: skip
    ddpm_deps = [paths["ddpm"]] if ddpm_read else []

    def stage(kind: str, columns: Sequence[str], name: str = "", overrides: str = "",
              variant: str | None = None, **entry: Any) -> DvcStage:  # fmt: skip
        config_name = params_file(variant)
        cmd = f"fiqa {kind} --config-dir {shlex.quote(d)} --config-name {config_name} {overrides}"
        return DvcStage(name=name or kind, cmd=cmd.strip(),
                        deps=[*code_deps(kind, src, workdir), *entry.pop("deps")],
                        params=study_params(kind, columns, params[variant]),
                        params_file=f"{d}/{config_name}.yaml", wdir=wdir, **entry)  # fmt: skip

    stages = [stage("prepare", [], deps=_inputs(config["data"], DATA_INPUTS, workdir),
                    outs=[paths["prepared"]])]  # fmt: skip
    prepared = {None: paths["prepared"]}
    for variant, variant_cfg in configs.items():
        own = relative(variant_cfg["paths"]["prepared"], workdir)
        if variant is not None and own != paths["prepared"]:
            stages.append(stage("prepare", [], f"prepare-{variant}", variant=variant,
                                deps=_inputs(variant_cfg["data"], DATA_INPUTS, workdir),
                                outs=[own]))  # fmt: skip
        prepared[variant] = own
    if ddpm_read:
        stages.append(stage("ddpm", [DDPM_METHOD], overrides=f"label.target={DDPM_METHOD}",
                            deps=[paths["prepared"]], outs=[paths["ddpm"]]))  # fmt: skip
    for m in methods:
        column, variant = split_variant(m)
        labels = f"{d}/data/labels/{m}"
        if variant is not None and _shares_labels(config["study"]["variants"][variant], column,
                                                  methods):  # fmt: skip
            labels = f"{d}/data/labels/{column}"  # the same labels as the plain row's
        else:
            ddpm = ddpm_deps if reads_ddpm(column, params[variant]) else []
            stages.append(stage("label", [column], f"label-{m}",
                                f"label.target={column} paths.labels={labels}", variant,
                                deps=[prepared[variant], *ddpm], outs=[labels]))  # fmt: skip
        for seed in seeds:
            run = run_folder(m, seed)
            models, metrics = f"{d}/models/{run}", f"{d}/metrics/{run}"
            seeded = "" if seed is None else f" train.seed={seed}"
            suffix = "" if seed is None else f"-s{seed}"
            stages.append(stage("train", [column], f"train-{m}{suffix}",
                                f"label.target={column} paths.labels={labels} "
                                f"paths.models={models} paths.metrics={metrics}{seeded}", variant,
                                deps=[prepared[variant], labels], outs=[models],
                                metrics=[f"{metrics}/{TRAIN_METRICS}"]))  # fmt: skip
    benchmarks = [config["eval"]["benchmark"], *config["eval"]["benchmarks"]]
    inputs = [p for b in benchmarks for p in _inputs(b, BENCHMARK_INPUTS, workdir)]
    stages.append(stage("evaluate", [b for b in blind if split_column(b)[0] in METHODS],
                        deps=[paths["prepared"], *ddpm_deps,
                              *(f"{d}/models/{run_folder(m, s)}" for m in methods for s in seeds),
                              *inputs],
                        outs=[paths["reports"]], metrics=[f"{paths['metrics']}/{EVAL_METRICS}"],
                        plots=[(f"{paths['plots']}/{EDC_PLOTS}", EDC_PLOTS)]))  # fmt: skip
    return stages


def _shares_labels(settings: Mapping[str, Any], column: str, methods: list[str]) -> bool:
    """A variant with ``settings`` trains on the labels of ``column``'s plain row: the study
    has that row and the variant changes nothing labels depend on (data, ``prepare``,
    ``label``)."""
    return column in methods and not any(k.startswith((*DATA_GROUPS, "label.")) for k in settings)


def study_params(stage: str, columns: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    """The params of a study stage of kind ``stage`` about the label columns ``columns``: the
    stage's declared params (``fiqa.stages.STAGES``) with the label group narrowed to the
    settings those columns depend on (``label.methods.<m>`` for each method they read, the
    ``label.ediffiqa`` settings for corrected columns, the DDPM's architecture for DifFIQA).
    The target is in the stage's command, not a param."""
    methods = {m for c in columns for m in column_dependencies(c, params)}
    corrected = any(split_column(c)[1] for c in columns)
    keys: list[str] = []
    for key in STAGES[stage].params:
        for k in ("label.fr_models", "label.seed", "label.methods", "label.ediffiqa") \
                if key == "label" else (key,):  # fmt: skip
            if k == "label.methods":
                keys += [f"label.methods.{m}" for m in METHODS if m in methods]
            elif (k in ("label.target", "label.compute", "eval.methods")
                  or (k.startswith("label.methods.") and k.split(".")[2] not in methods)
                  or (k == "label.ediffiqa" and not corrected)
                  or (k in DDPM_KEYS and DDPM_METHOD not in methods)):  # fmt: skip
                continue
            else:
                keys.append(k)
    return keys


def _inputs(spec: Mapping[str, Any], keys: Iterable[str], workdir: Path) -> list[str]:
    """The files and folders a data or benchmark config names (``keys`` naming existing
    paths), relative to ``workdir``: DVC reruns the stage when they change."""
    values = [spec.get(k) for k in keys]
    return [relative(v, workdir) for v in values if isinstance(v, str) and Path(v).exists()]


def write_study(study: Study) -> None:
    """Write the study's ``params.yaml``, each variant's ``params-<variant>.yaml`` and
    ``dvc.yaml`` (each atomically)."""
    for variant, config in {None: study.config, **study.variants}.items():
        text = yaml.safe_dump(config, sort_keys=False, width=100)
        write_text_atomic(study.directory / f"{params_file(variant)}.yaml", text)
    header = HEADER.format(dvc_yaml=study.dvc_yaml.as_posix(), workdir=study.workdir)
    write_text_atomic(study.dvc_yaml, render(study.stages, header))
    log.info("study %s: %d stages in %s", study.directory, len(study.stages), study.dvc_yaml)


def reproduce(study: Study, stages: Sequence[str] = (), single_item: bool = False) -> None:
    """``dvc repro`` the study's ``stages`` (and what they depend on, unless ``single_item``;
    all of them when none is named), from its working directory. The stage commands find
    ``fiqa`` beside this interpreter. DVC waits for its repository lock (``--wait-for-lock``):
    trainings side by side take it in turn to hash their inputs and record their outputs,
    which on a large prepared set lasts longer than DVC's default 3 s of retries.

    Raises:
        StageError: DVC failed (a stage failed: its output is above); the finished stages are
            recorded in ``dvc.lock`` and are not run again.
    """
    targets = [study.target(s) for s in stages] or [study.dvc_yaml.as_posix()]
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro",
           *(["--single-item"] if single_item else []), *targets]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log.info("study: %s", shlex.join(["dvc", *cmd[4:]]))
    done = subprocess.run(cmd, cwd=study.workdir, env=env, check=False)
    if done.returncode != 0:
        raise StageError(
            f"`dvc repro {' '.join(cmd[5:])}` exited {done.returncode} (the failing stage's "
            "output is above); finished stages are recorded in dvc.lock: fix the cause and run "
            "fiqa study again to continue"
        )
