"""Training on a frozen trunk from cached features: the frozen part runs once per face.

With ``model.freeze=trunk`` the trunk's output (``net.forward_features``) does not change during
training, and with ``freeze=backbone`` neither does the backbone's embedding: every epoch of the
image path recomputes them. ``FrozenOutput`` makes them extraction products, computed once
through the extraction cache (so every regressor trained on the same faces and backbone shares
them, e.g. one per label method), for each face and its mirror (the flip augmentation); the
trainable part (the backbone's embedding layers and the head, or the head alone) then trains on
them. The predictions equal the image path's to float16 rounding of the stored features.
Shift and scale augmentation need the images, so a cached run augments by flipping only.

With ``model.train_blocks`` = k > 0 (``fiqa.quality.backbone``) the top k trunk blocks train, so
the cached output is ``TrunkActivation``: the activation at the cut below them, stored flattened
``(n, C * H * W)`` float16 (one cache file per cut), which the regressor reshapes and runs
through the top blocks. A face (and again its mirror) takes 2 C H W bytes, more than the
trunk's output for a cut below the last downsampling; for SFace 100,352 at k = 1
(1024 x 7 x 7, as its trunk output), 200,704 at k = 2 .. 7 (512 x 14 x 14), 401,408 at k = 8, 9
(256 x 28 x 28).

Used when ``train.cache_frozen`` and the frozen part is exactly the pretrained FR model's: a
pretrained backbone, ``freeze`` trunk or backbone, no ``unfreeze_at_epoch`` and no consistency
term (``fiqa.quality.trunk.pretrained_frozen_part``; without ``train_blocks`` it is also the
condition under which evaluation scores the trained model from the FR network's pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from fiqa.extract import Batch, BatchProduct, Extractor, FaceSource, FREntry, Request


@dataclass(frozen=True)
class FrozenOutput(BatchProduct):
    """The output of the frozen ``part`` of a face (or of its mirror)."""

    part: str
    mirror: bool

    dtype: ClassVar[type] = np.float16
    ndim: ClassVar[int] = 2
    white_box: ClassVar[str | None] = "cached training features"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.part}_mirror" if self.mirror else self.part

    def compute(self, batch: Batch) -> torch.Tensor:
        if not self.mirror:
            out = batch.features if self.part == "trunk" else batch.raw
        else:
            mirrored = batch.x.flip(3)
            net = batch.net
            out = net.forward_features(mirrored) if self.part == "trunk" else net(mirrored)
        return out.half()


@dataclass(frozen=True)
class TrunkActivation(BatchProduct):
    """The activation of a face (or of its mirror) at trunk block ``cut``, flattened:
    ``net.forward_to(x, cut)`` (``fiqa.fr.layers.BlockTrunk``) as ``(n, C * H * W)``."""

    cut: int
    mirror: bool

    dtype: ClassVar[type] = np.float16
    ndim: ClassVar[int] = 2
    white_box: ClassVar[str | None] = "cached training activations"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"trunk_cut{self.cut}" + ("_mirror" if self.mirror else "")

    def compute(self, batch: Batch) -> torch.Tensor:
        x = batch.x.flip(3) if self.mirror else batch.x
        return batch.net.forward_to(x, self.cut).flatten(1).half()


def frozen_features(
    model: Mapping[str, Any],
    source: FaceSource,
    extractor: Extractor,
    batch_size: int,
    cut: int | None = None,
) -> dict[str, np.ndarray]:
    """``{"direct": (n, F), "mirror": (n, F)}`` float16 frozen outputs of every face of
    ``source`` (memory-mapped from the extraction cache): the frozen part's, or with ``cut``
    (``QualityRegressor.cut``) the flattened trunk activation there."""
    fr = FREntry(str(model["backbone"]), model.get("backbone_weights"), batch_size, False,
                 dict(model.get("backbone_options") or {}))  # fmt: skip
    if cut is None:
        part = str(model["freeze"])
        products: tuple[BatchProduct, ...] = (FrozenOutput(part, False), FrozenOutput(part, True))
    else:
        products = (TrunkActivation(cut, False), TrunkActivation(cut, True))
    direct, mirror = products
    out = extractor.outputs(fr, source, Request(products))
    return {"direct": out[direct.name], "mirror": out[mirror.name]}
