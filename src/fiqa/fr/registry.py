"""The FR model registry: ``register_fr_model(name)`` builders and ``load_fr_model``.

A builder turns an ``FRSpec`` (name, weights path, device, head dropout and the remaining keys
of the ``fr`` config as ``options``) into an ``FRModel``. Architecture modules register
themselves on import; ``fiqa.fr`` imports them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fiqa.fr.model import FRModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FRSpec:
    """What a builder receives.

    Attributes:
        name: Registry name.
        weights: Weights file (checked to exist), or None for the model's default file.
        device: Torch device to put the network on.
        dropout: Head dropout used by ``net.forward`` in train mode.
        options: The ``options`` mapping of the ``fr`` config (architecture-specific, e.g. the
            input size of an ONNX model).
        pretrained: Load the weights (False: a randomly initialised network, e.g. a student or
            a quality backbone trained from scratch; black-box models refuse it).
    """

    name: str
    weights: Path | None
    device: torch.device
    dropout: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    pretrained: bool = True

    def require_weights(self, what: str) -> Path:
        """The weights path, or a ValueError saying which file the model needs.

        Args:
            what: Description of the expected file, e.g. ``"an arcface_torch backbone.pth"``.
        """
        if self.weights is None:
            raise ValueError(
                f"FR model {self.name!r} has no bundled weights: set fr.weights (or the "
                f"'weights' key of its label.fr_models entry) to {what}"
            )
        return self.weights

    def option(self, key: str, default: Any) -> Any:
        """``options[key]`` or ``default`` when absent or null."""
        value = self.options.get(key)
        return default if value is None else value


FRBuilder = Callable[[FRSpec], FRModel]
FR_BUILDERS: dict[str, FRBuilder] = {}


def register_fr_model(*names: str) -> Callable[[FRBuilder], FRBuilder]:
    """Decorator adding ``builder(spec) -> FRModel`` under each of ``names``."""

    def decorate(builder: FRBuilder) -> FRBuilder:
        for name in names:
            if name in FR_BUILDERS:
                raise ValueError(f"FR model {name!r} is registered twice")
            FR_BUILDERS[name] = builder
        return builder

    return decorate


def load_fr_model(
    name_or_config: str | Mapping[str, Any],
    device: str | torch.device = "cpu",
    dropout: float = 0.0,
    pretrained: bool = True,
) -> FRModel:
    """Build a registered FR model with its pretrained weights, in eval mode.

    Args:
        name_or_config: Registry name (``"sface"``) or a mapping / DictConfig with ``name``,
            optionally ``weights`` (a path; None = the model's bundled file, if it has one)
            and ``options`` (architecture-specific). Other keys (``batch_size``, ``flip``) are
            for the extraction loop and ignored here.
        device: Torch device to put the network on.
        dropout: Dropout before the embedding layer used by ``net.forward`` in train mode.
        pretrained: Load the weights; False builds the architecture randomly initialised.

    Returns:
        The loaded ``FRModel``.

    Raises:
        ValueError: If the name is not registered (the message lists the known names), the
            config has no ``name``, the model needs weights and none are given, or the
            weights do not fit the architecture (the first mismatching keys are listed).
        FileNotFoundError: If the weights file does not exist.
    """
    if isinstance(name_or_config, str):
        name, weights, options = name_or_config, None, {}
    elif isinstance(name_or_config, Mapping):
        if name_or_config.get("name") is None:
            raise ValueError(
                f"FR model config needs a 'name' (one of {sorted(FR_BUILDERS)}), "
                f"got keys {sorted(map(str, name_or_config))}"
            )
        name, weights = str(name_or_config["name"]), name_or_config.get("weights")
        options = dict(name_or_config.get("options") or {})
    else:
        raise TypeError(
            f"expected an FR model name or config mapping, got {type(name_or_config).__name__}"
        )
    if name not in FR_BUILDERS:
        raise ValueError(f"unknown FR model {name!r}; known: {', '.join(sorted(FR_BUILDERS))}")
    weights_path = Path(str(weights)).expanduser() if weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise FileNotFoundError(f"weights file {weights_path} for FR model {name!r} not found")
    spec = FRSpec(name, weights_path, torch.device(device), float(dropout), options, pretrained)
    model = FR_BUILDERS[name](spec)
    log.info("loaded FR model %s from %s on %s", name, model.info.weights_path, model.device)
    return model
