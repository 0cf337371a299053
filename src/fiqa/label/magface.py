"""MagFace (Meng et al., CVPR 2021): quality = L2 norm of the unnormalised embedding.

MagFace's loss ties the magnitude a_i = ||f_i||_2 of a face's raw embedding f_i to how close it
sits to its class centre, so q_i = a_i ranks faces by recognisability. The score is only
meaningful for a network trained with the MagFace loss (``magface_iresnet*``); other models give
norms too, with no such guarantee.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fiqa.extract.products import Batch, BatchProduct

log = logging.getLogger(__name__)


def magface_quality(raw_embeddings: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` unnormalised embeddings -> ``(n,)`` float32 norms ||f_i||_2."""
    if raw_embeddings.ndim != 2:
        raise ValueError(f"expected (n, d) embeddings, got shape {tuple(raw_embeddings.shape)}")
    return torch.linalg.vector_norm(raw_embeddings.float(), dim=1)


@dataclass
class MagFaceSettings:
    """MagFace settings (``label.methods.magface``).

    Attributes:
        model: The MagFace FR model, ``{name, weights, options}`` (its own model, not
            ``label.fr_models``).
    """

    model: dict[str, Any]

    def __post_init__(self) -> None:
        name = str(self.model.get("name"))
        if not name.startswith("magface"):
            log.warning("label.methods.magface.model=%s is not a MagFace model", name)


@dataclass(frozen=True)
class EmbeddingNorm(BatchProduct):
    """Norm of the unnormalised embedding (any FR model, black boxes included)."""

    name: ClassVar[str] = "norm"

    def compute(self, batch: Batch) -> torch.Tensor:
        return magface_quality(batch.raw)
