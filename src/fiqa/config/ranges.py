"""Allowed value ranges of the numeric config keys, checked by ``load_settings`` at start.

A wrong value (``prepare.shard_size=0``, ``eval.fmr=2``) fails before any model or image is
loaded, naming the key and its range, instead of deep inside a stage. ``RANGES`` holds scalar
keys, ``ELEMENT_RANGES`` list keys whose every element is checked. A key absent from the
composed config (a ``model=distill`` key under ``model=regressor``) or null (an optional one:
``train.early_stopping_patience``) is skipped; types are the schemas' (``fiqa.config.schemas``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fiqa.config.typed import ConfigError


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; ``None`` bounds are open to infinity.

    Attributes:
        low: Lower bound.
        high: Upper bound.
        low_open: Whether ``low`` itself is excluded.
        high_open: Whether ``high`` itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


AT_LEAST_1 = Range(1)  # sizes and counts
AT_LEAST_0 = Range(0)  # worker counts, weights, epochs
POSITIVE = Range(0, low_open=True)  # learning rates, scales, tolerances
UNIT = Range(0, 1)  # [0, 1]: thresholds, failure rates
UNIT_OPEN = Range(0, 1, low_open=True, high_open=True)  # (0, 1): FMRs, probabilities
FRACTION = Range(0, 1, high_open=True)  # [0, 1): a share that cannot be everything
SHARE = Range(0, 1, low_open=True)  # (0, 1]: a share that must be something

_REGRESSOR = {  # model=regressor, and model=distill's regressor.*
    "head_hidden": AT_LEAST_1,
    "lr": POSITIVE,
    "backbone_lr": AT_LEAST_0,
    "weight_decay": AT_LEAST_0,
    "unfreeze_at_epoch": AT_LEAST_0,
    "consistency_weight": FRACTION,  # QualityRegressor: [0, 1)
    "train_blocks": AT_LEAST_0,  # and <= the backbone's trunk blocks (QualityRegressor)
}

RANGES: dict[str, Range] = {
    "prepare.score_threshold": UNIT,
    "prepare.pad_ratio": AT_LEAST_0,
    "prepare.num_workers": AT_LEAST_0,
    "prepare.val_fraction": FRACTION,
    "prepare.val_max_faces": AT_LEAST_1,
    "prepare.val_min_images": AT_LEAST_1,
    "prepare.shard_size": AT_LEAST_1,
    "prepare.max_image_pixels": AT_LEAST_1,
    "prepare.max_failure_rate": UNIT,
    "data.min_images": AT_LEAST_1,
    "data.max_identities": AT_LEAST_1,
    "data.max_images_per_identity": AT_LEAST_1,
    "extract.num_nodes": AT_LEAST_1,
    "extract.num_workers": AT_LEAST_0,
    "extract.part_rows": AT_LEAST_1,
    "fr.batch_size": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.num_workers": AT_LEAST_0,
    "train.onnx_max_abs_diff": POSITIVE,
    "train.calibration_faces": AT_LEAST_1,
    "train.early_stopping_patience": AT_LEAST_1,
    "train.checkpoint_every_n_steps": AT_LEAST_1,
    "label.ediffiqa.eps": AT_LEAST_0,
    "label.ediffiqa.top": SHARE,
    "label.methods.serfiq.passes": Range(2),  # a spread needs two embeddings
    "label.methods.serfiq.dropout": UNIT_OPEN,
    "label.methods.crfiqa.chunk_rows": AT_LEAST_1,
    "label.methods.sddfiqa.samples": AT_LEAST_1,
    "label.methods.sddfiqa.repeats": AT_LEAST_1,
    "label.methods.diffiqa.repeats": AT_LEAST_1,
    "label.methods.diffiqa.t": AT_LEAST_0,  # and < its schedule's timesteps (check_ranges)
    "ddpm.unet.sample_size": AT_LEAST_1,
    "ddpm.unet.base_width": AT_LEAST_1,
    "ddpm.unet.layers_per_block": AT_LEAST_1,
    "ddpm.schedule.timesteps": AT_LEAST_1,
    "ddpm.schedule.beta_start": UNIT_OPEN,
    "ddpm.schedule.beta_end": UNIT_OPEN,
    "ddpm.train_t_max": AT_LEAST_1,  # and <= ddpm.schedule.timesteps (DDPMSettings)
    "ddpm.lr": POSITIVE,
    "ddpm.ema_decay": FRACTION,
    "ddpm.batch_size": AT_LEAST_1,
    "ddpm.max_steps": AT_LEAST_1,
    "ddpm.checkpoint_every": AT_LEAST_1,
    "ddpm.grid_faces": AT_LEAST_0,
    "ddpm.num_workers": AT_LEAST_0,
    **{f"model.{key}": r for key, r in _REGRESSOR.items()},
    **{f"model.regressor.{key}": r for key, r in _REGRESSOR.items()},
    "model.temperature": POSITIVE,
    "model.scale": POSITIVE,
    "model.lr_step_epochs": AT_LEAST_1,
    "model.lr_gamma": POSITIVE,
    "model.max_epochs": AT_LEAST_1,
    "eval.fmr": UNIT_OPEN,
    "eval.target_fnmr": UNIT_OPEN,
    "study.seeds": AT_LEAST_1,
    "eval.bootstrap.resamples": AT_LEAST_0,
    "eval.bootstrap.level": UNIT_OPEN,
}
ELEMENT_RANGES: dict[str, Range] = {
    "label.methods.huo.weights": AT_LEAST_0,
    "ddpm.unet.channel_mults": AT_LEAST_1,
    "ddpm.unet.attention_levels": AT_LEAST_0,
    "ddpm.grid_t": AT_LEAST_0,
    "model.loss_weights": AT_LEAST_0,
    "eval.extra_fmrs": UNIT_OPEN,
    "eval.discard_limits": SHARE,
    "eval.discard_shares": SHARE,
    "eval.pairs.all_up_to": AT_LEAST_0,
    "eval.pairs.genuine_per_identity": AT_LEAST_1,
    "eval.pairs.impostors": AT_LEAST_1,
}

_ABSENT = object()


def check_ranges(cfg: DictConfig) -> None:
    """Check every key of ``RANGES`` and ``ELEMENT_RANGES`` present in ``cfg`` (resolved).

    Raises:
        ConfigError: Naming the first key out of range and the range.
    """
    for key, allowed in RANGES.items():
        _check(key, _value(cfg, key), allowed)
    for key, allowed in ELEMENT_RANGES.items():
        values = _value(cfg, key)
        for i, value in enumerate(values if isinstance(values, list) else []):
            _check(f"{key}[{i}]", value, allowed)
    t, timesteps = (_value(cfg, f"label.methods.diffiqa.{k}") for k in ("t", "schedule.timesteps"))
    if isinstance(t, int) and isinstance(timesteps, int) and t >= timesteps:
        raise ConfigError(
            f"label.methods.diffiqa.t={t}: must be < label.methods.diffiqa.schedule.timesteps "
            f"({timesteps})"
        )


def _value(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _check(key: str, value: Any, allowed: Range) -> None:
    if value is _ABSENT or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r}: must be a number {allowed}")
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: must be {allowed}")
