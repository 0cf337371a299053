"""Face-recognition (FR) models looked up by name: ``load_fr_model("sface")``.

Each registry entry builds an ``FRModel`` from a weights path (None = the model's default
file), a device and a head dropout. New architectures plug in with ``register_fr_model``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from fiqa.fr.model import FRModel, FRModelInfo
from fiqa.fr.sface import (
    EMBEDDING_SIZE,
    INPUT_SIZE,
    SFaceNet,
    default_sface_path,
    load_sface_state_dict,
)
from fiqa.provenance import file_sha256

log = logging.getLogger(__name__)

__all__ = [
    "FR_MODELS",
    "FRModel",
    "FRModelInfo",
    "SFaceNet",
    "load_fr_model",
    "register_fr_model",
]

FRBuilder = Callable[[Path | None, torch.device, float], FRModel]
FR_MODELS: dict[str, FRBuilder] = {}


def register_fr_model(name: str) -> Callable[[FRBuilder], FRBuilder]:
    """Decorator adding ``builder(weights, device, dropout) -> FRModel`` under ``name``."""

    def decorate(builder: FRBuilder) -> FRBuilder:
        FR_MODELS[name] = builder
        return builder

    return decorate


@functools.lru_cache(maxsize=4)
def _cached_sface_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Dequantising the ONNX file costs ~0.3 s; do it once per process and path."""
    return load_sface_state_dict(path)


@register_fr_model("sface")
def _build_sface(weights: Path | None, device: torch.device, dropout: float) -> FRModel:
    path = (weights if weights is not None else default_sface_path()).resolve()
    net = SFaceNet(dropout=dropout)
    net.load_state_dict(_cached_sface_state_dict(str(path)))
    info = FRModelInfo(
        name="sface",
        embedding_size=EMBEDDING_SIZE,
        input_size=INPUT_SIZE,
        colour="RGB",
        template="arcface_112",
        weights_path=str(path),
        weights_sha256=file_sha256(str(path)),
    )
    return FRModel(net, info, device)


def load_fr_model(
    name_or_config: str | Mapping[str, Any],
    device: str | torch.device = "cpu",
    dropout: float = 0.0,
) -> FRModel:
    """Build a registered FR model with its pretrained weights, in eval mode.

    Args:
        name_or_config: Registry name (``"sface"``) or a mapping / DictConfig with ``name``
            and optionally ``weights`` (a path; None = the model's default file). Other keys
            are ignored.
        device: Torch device to put the network on.
        dropout: Dropout before the embedding layer used by ``net.forward`` in train mode.

    Returns:
        The loaded ``FRModel``.

    Raises:
        ValueError: If the name is not registered (the message lists the known names) or the
            config has no ``name``.
        FileNotFoundError: If the weights file does not exist.
    """
    if isinstance(name_or_config, str):
        name, weights = name_or_config, None
    elif isinstance(name_or_config, Mapping):
        if name_or_config.get("name") is None:
            raise ValueError(
                f"FR model config needs a 'name' (one of {sorted(FR_MODELS)}), "
                f"got keys {sorted(map(str, name_or_config))}"
            )
        name, weights = str(name_or_config["name"]), name_or_config.get("weights")
    else:
        raise TypeError(
            f"expected an FR model name or config mapping, got {type(name_or_config).__name__}"
        )
    if name not in FR_MODELS:
        raise ValueError(f"unknown FR model {name!r}; known: {', '.join(sorted(FR_MODELS))}")
    weights_path = Path(str(weights)).expanduser() if weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise FileNotFoundError(f"weights file {weights_path} for FR model {name!r} not found")
    model = FR_MODELS[name](weights_path, torch.device(device), float(dropout))
    log.info("loaded FR model %s from %s on %s", name, model.info.weights_path, model.device)
    return model
