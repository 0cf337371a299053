"""Typed schemas of the composed config: a wrong type or value fails at stage start.

Hydra's struct mode already rejects unknown keys (``model.lrr=1``); merging the composed config
into these dataclasses also rejects wrong types (``model.lr=fast``) and missing keys, naming
the key. The schemas hold types only: every value comes from ``conf/``. ``trainer`` is passed
to ``pytorch_lightning.Trainer`` as is and validated there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """The composed config does not match its schema; the message names the key."""


# src/fiqa/config.py -> repository root (editable install)
_REPO_CONF = Path(__file__).resolve().parents[2] / "conf"


def config_dir() -> Path:
    """The config tree: ``$FIQA_CONFIG_DIR``, else ``./conf``, else the repository's ``conf/``."""
    for candidate in (os.environ.get("FIQA_CONFIG_DIR"), "conf", _REPO_CONF):
        if candidate and (Path(candidate) / "config.yaml").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        "no Hydra config tree found: run from the fiqa repository root or set FIQA_CONFIG_DIR"
    )


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed config with Hydra ``overrides``, outside any Hydra app (tests, notebooks).

    >>> cfg = compose_config(["data=folder", "data.root=/data/faces", "logger=none"])
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


@dataclass
class PathsConfig:
    root: str = MISSING
    raw: str = MISSING
    prepared: str = MISSING
    labels: str = MISSING
    models: str = MISSING
    metrics: str = MISSING
    plots: str = MISSING
    reports: str = MISSING
    cache: str = MISSING


@dataclass
class DataConfig:
    name: str = MISSING
    format: str = MISSING
    root: str = MISSING
    metadata: str | None = MISSING
    # Format-specific keys (None where a format does not use them).
    subsets: list[str] | None = None  # vggface2
    use_landmarks: bool | None = None  # vggface2
    references: str | None = None  # vggface2: FaceQnet reference list
    rec: str | None = None  # ms1m
    idx: str | None = None  # ms1m


@dataclass
class FRConfig:
    name: str = MISSING
    weights: str | None = MISSING
    batch_size: int = MISSING
    flip: bool = MISSING
    options: dict[str, Any] = field(default_factory=dict)  # architecture-specific


@dataclass
class ExtractConfig:
    accelerator: str = MISSING
    devices: Any = MISSING  # int, list of ids or "auto"
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    num_workers: int = MISSING
    part_rows: int = MISSING
    progress: bool = MISSING


@dataclass
class PrepareConfig:
    detector: str = MISSING
    score_threshold: float = MISSING
    pad_ratio: float = MISSING
    face_selection: str = MISSING
    template: str = MISSING
    templates: dict[str, Any] = MISSING
    num_workers: int = MISSING
    val_fraction: float = MISSING
    shard_size: int = MISSING
    max_failure_rate: float = MISSING
    seed: int = MISSING


@dataclass
class FaceQnetParams:
    reference: str = MISSING
    reference_list: str | None = MISSING


@dataclass
class SerFiqParams:
    passes: int = MISSING
    dropout: float = MISSING
    calibrate: bool = MISSING


@dataclass
class CrFiqaParams:
    chunk_rows: int | None = MISSING


@dataclass
class SddFiqaParams:
    samples: int = MISSING
    repeats: int = MISSING


@dataclass
class FusedParams:
    how: str = MISSING
    weights: dict[str, float] = MISSING


@dataclass
class MagFaceParams:
    model: dict[str, Any] = MISSING  # a MagFace FR model: {name, weights, options}


@dataclass
class FaceQanParams:
    eps: float = MISSING
    iterations: int = MISSING
    copies: int = MISSING
    power: float = MISSING
    batch_size: int = MISSING


@dataclass
class HuoParams:
    weights: list[float] = MISSING  # a, b, c of S = a S_v + b S_r + c S_c
    how: str = MISSING
    subtract_min: bool = MISSING


@dataclass
class LabelMethods:
    """Methods computed by the label stage; one left out (None) is not computed."""

    faceqnet: FaceQnetParams | None = None
    serfiq: SerFiqParams | None = None
    crfiqa: CrFiqaParams | None = None
    sddfiqa: SddFiqaParams | None = None
    magface: MagFaceParams | None = None
    faceqan: FaceQanParams | None = None
    huo: HuoParams | None = None
    fused: FusedParams | None = None


@dataclass
class EdiffiqaParams:
    eps: float = MISSING
    top: float = MISSING


@dataclass
class LabelConfig:
    target: str = MISSING
    fr_models: list[Any] = MISSING  # registry names or {name, weights, options} mappings
    seed: int = MISSING
    correction: str = MISSING
    ediffiqa: EdiffiqaParams = MISSING
    methods: LabelMethods = MISSING


@dataclass
class RegressorHead:
    """The regressor settings that do not name the backbone (also the second fit of distill)."""

    head: str = MISSING
    head_hidden: int = MISSING
    loss: str = MISSING
    lr: float = MISSING
    backbone_lr: float = MISSING
    weight_decay: float = MISSING
    scheduler: str = MISSING
    freeze: str = MISSING
    unfreeze_at_epoch: int | None = MISSING
    consistency_weight: float = MISSING


@dataclass
class RegressorConfig(RegressorHead):
    name: str = MISSING
    backbone: str = MISSING
    pretrained: bool = MISSING
    backbone_weights: str | None = MISSING
    backbone_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class NetConfig:
    name: str = MISSING
    weights: str | None = MISSING
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudentConfig(NetConfig):
    pretrained: bool = MISSING


@dataclass
class DistillConfig:
    name: str = MISSING
    teacher: NetConfig = MISSING
    teacher_class_weights: str | None = MISSING
    teacher_head: str = MISSING
    student: StudentConfig = MISSING
    loss_weights: list[float] = MISSING
    temperature: float = MISSING
    scale: float = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    scheduler: str = MISSING
    lr_step_epochs: int = MISSING
    lr_gamma: float = MISSING
    max_epochs: int = MISSING
    regressor: RegressorHead = MISSING


@dataclass
class TrainConfig:
    batch_size: int = MISSING
    num_workers: int = MISSING
    augment: bool = MISSING
    seed: int = MISSING
    onnx_max_abs_diff: float = MISSING
    resume: bool = MISSING
    early_stopping_patience: int | None = MISSING
    val_edc: bool = MISSING


@dataclass
class LoggerConfig:
    backend: str = MISSING
    project: str = MISSING
    entity: str | None = MISSING
    mode: str = MISSING


@dataclass
class EvalConfig:
    benchmark: dict[str, Any] = MISSING  # format + its keys (conf/eval/benchmark/)
    bin_root: str | None = MISSING  # eval=insightface: folder of the .bin files
    benchmarks: list[dict[str, Any]] = MISSING  # more benchmarks of the matrix
    fr_models: list[Any] = MISSING  # registry names or {name, weights, options} mappings
    methods: list[str] = MISSING
    quality_models: dict[str, Any] = MISSING  # name -> {path, template, colour, mean, std, ...}
    fmr: float = MISSING
    extra_fmrs: list[float] = MISSING
    discard_limits: list[float] = MISSING
    pair_quality: str = MISSING


SCHEMAS: dict[str, type | dict[str, type]] = {
    "paths": PathsConfig,
    "data": DataConfig,
    "fr": FRConfig,
    "extract": ExtractConfig,
    "prepare": PrepareConfig,
    "label": LabelConfig,
    "model": {"regressor": RegressorConfig, "distill": DistillConfig},  # by model.name
    "train": TrainConfig,
    "logger": LoggerConfig,
    "eval": EvalConfig,
}
CHOICES: dict[str, tuple[Any, ...]] = {
    "logger.backend": ("wandb", "csv", "none"),
    "eval.benchmark.format": ("prepared", "bin", "pairs_txt", "folder"),
    "label.target": (
        "faceqnet",
        "serfiq",
        "crfiqa",
        "sddfiqa",
        "magface",
        "faceqan",
        "huo",
        "fused",
    ),
    "label.correction": ("none", "ediffiqa"),
}


def validate_config(cfg: DictConfig) -> None:
    """Check every schema'd group of ``cfg`` (types, missing keys, closed choices)."""
    try:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as err:
        raise ConfigError(f"config key {err.full_key}: {str(err.msg).splitlines()[0]}") from None
    for key, schema in SCHEMAS.items():
        if key not in cfg:
            raise ConfigError(f"config group {key!r} is missing")
        if isinstance(schema, dict):  # one schema per option, chosen by the group's name
            name = cfg[key].get("name")
            if name not in schema:
                raise ConfigError(f"{key}.name={name!r}; choose one of {', '.join(schema)}")
            schema = schema[name]
        try:
            merged = OmegaConf.merge(OmegaConf.structured(schema), cfg[key])
        except OmegaConfBaseException as err:
            reason = str(err.msg).splitlines()[0]
            raise ConfigError(f"invalid config key {key}.{err.full_key}: {reason}") from None
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"config keys missing: {', '.join(f'{key}.{m}' for m in missing)}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; choose one of {', '.join(map(str, allowed))}")


def plain_container(value: Any) -> Any:
    """Hydra/OmegaConf containers -> plain dicts and lists, so hyper-parameters saved in a
    checkpoint load without omegaconf."""
    if isinstance(value, Mapping | DictConfig):
        return {str(k): plain_container(v) for k, v in value.items()}
    if isinstance(value, list | tuple | ListConfig):
        return [plain_container(v) for v in value]
    return value
