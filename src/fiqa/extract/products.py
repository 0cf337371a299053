"""What an extraction pass computes besides the embedding: per-face batch products as plug-ins.

A ``BatchProduct`` turns one batch of an FR network's pass into one value (or vector) per face:
SER-FIQ scores, FaceQAN scores, embedding norms, low-level features... The quality methods
define their products in ``fiqa.label``; this engine only runs them, so ``extract`` never
depends on a method. The backbone runs once per batch for the embedding and every product
(``Batch.features`` / ``Batch.raw`` are shared), and products that draw random numbers get a
generator seeded by (seed, product stream, row batch): the same draws on any rank, device count
and after any resume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fiqa.core.provenance import digest


@dataclass
class Batch:
    """One row batch of an extraction pass, as products see it.

    Attributes:
        net: The FR network (float ``(N, 3, H, W)`` RGB 0..255 -> ``(N, D)`` raw embeddings).
        x: The batch's faces, float ``(n, 3, H, W)`` in the network's template.
        raw: Unnormalised embeddings of ``x`` (no mirror), ``(n, D)`` float32.
        features: ``net.forward_features(x)`` for white-box networks, else None.
        index: Row batch number (rows ``[index * B, (index + 1) * B)``).
    """

    net: nn.Module
    x: torch.Tensor
    raw: torch.Tensor
    features: torch.Tensor | None
    index: int

    def generator(self, seed: int, stream: int) -> torch.Generator:
        """Random source of this batch for one product stream (see ``batch_generator``)."""
        return batch_generator(seed, stream, self.index, self.x.device)


def batch_generator(
    seed: int, stream: int, batch_index: int, device: torch.device
) -> torch.Generator:
    """Random source of one row batch and one product (``stream``): the same (seed, stream,
    batch) gives the same draws on any rank, device count and after any resume."""
    entropy = [int(seed), int(stream), int(batch_index)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


class BatchProduct(ABC):
    """A per-face output of an extraction pass (subclass as a frozen dataclass).

    Class attributes:
        name: Output key (``"serfiq"``); results are returned under it.
        dtype: Storage dtype of the cached product.
        ndim: Dimensions of the product array: 1 for a score per face, 2 for a vector.
        white_box: What the product needs a PyTorch network for (the error names it), or None
            when any FR model (ONNX, dlib) can make it.
        gradients: The product back-propagates to the input (FaceQAN).
        seeded: The product draws random numbers per row batch, so the batch size is part of
            its cache key.

    The dataclass fields (settings) are the rest of the key: another setting is another
    cached file in the same cache entry.
    """

    name: ClassVar[str]
    dtype: ClassVar[type] = np.float32
    ndim: ClassVar[int] = 1
    white_box: ClassVar[str | None] = None
    gradients: ClassVar[bool] = False
    seeded: ClassVar[bool] = False

    def stem(self, batch_size: int) -> str:
        """Cache file stem: the name, plus a digest of the settings when it has any."""
        settings = asdict(self) if is_dataclass(self) and fields(self) else {}
        if self.seeded:
            settings["batch_size"] = batch_size
        return f"{self.name}-{digest(settings, 12)}" if settings else self.name

    @abstractmethod
    def compute(self, batch: Batch) -> torch.Tensor:
        """``(n, ...)`` values of the batch's faces."""


@dataclass(frozen=True)
class Request:
    """The products an extraction pass computes besides the L2-normalised embedding."""

    products: tuple[BatchProduct, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.products]
        if len(set(names)) != len(names):
            raise ValueError(f"a request names a product twice: {names}")

    def stems(self, batch_size: int) -> dict[str, str]:
        """``{output key: cache file stem}``, the embedding first."""
        return {"embedding": "embedding"} | {p.name: p.stem(batch_size) for p in self.products}

    def layouts(self, batch_size: int) -> dict[str, tuple[Any, int]]:
        """``{cache file stem: (storage dtype, ndim)}``."""
        stems = {p.stem(batch_size): (p.dtype, p.ndim) for p in self.products}
        return {"embedding": (np.float16, 2)} | stems

    @property
    def white_box(self) -> str | None:
        """What the first product that needs a PyTorch network needs it for, or None."""
        return white_box_need(self.products)

    @property
    def gradients(self) -> bool:
        """A product back-propagates to the input (the Trainer must not run in inference mode)."""
        return gradient_need(self.products)

    def merged(self, other: Request) -> Request:
        """This request plus the products of ``other`` it lacks (by name)."""
        have = {p.name for p in self.products}
        return Request(self.products + tuple(p for p in other.products if p.name not in have))


Products = Iterable[BatchProduct | type[BatchProduct]]


def white_box_need(products: Products) -> str | None:
    """What the first of ``products`` (instances or classes) that needs a PyTorch network
    needs it for, or None."""
    return next((p.white_box for p in products if p.white_box), None)


def gradient_need(products: Products) -> bool:
    """Whether one of ``products`` (instances or classes) back-propagates to the input."""
    return any(p.gradients for p in products)
