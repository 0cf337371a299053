"""Training on a frozen trunk from cached features: the frozen part runs once per face.

With ``model.freeze=trunk`` the trunk's output (``net.forward_features``) does not change during
training, and with ``freeze=backbone`` neither does the backbone's embedding: every epoch of the
image path recomputes them. ``FrozenOutput`` makes them extraction products, computed once
through the extraction cache (so every regressor trained on the same faces and backbone shares
them, e.g. one per label method), for each face and its mirror (the flip augmentation); the
trainable part (the backbone's embedding layers and the head, or the head alone) then trains on
them. The predictions equal the image path's to float16 rounding of the stored features.
Shift and scale augmentation need the images, so a cached run augments by flipping only.

Used when ``train.cache_frozen`` and the frozen part is exactly the pretrained FR model's: a
pretrained backbone, ``freeze`` trunk or backbone, no ``unfreeze_at_epoch`` and no consistency
term (``fiqa.quality.trunk.shares_frozen_part``, the condition under which evaluation scores the
trained model from the FR network's pass too).
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


def frozen_features(
    model: Mapping[str, Any], source: FaceSource, extractor: Extractor, batch_size: int
) -> dict[str, np.ndarray]:
    """``{"direct": (n, F), "mirror": (n, F)}`` float16 frozen outputs of every face of
    ``source`` (memory-mapped from the extraction cache)."""
    part = str(model["freeze"])
    fr = FREntry(str(model["backbone"]), model.get("backbone_weights"), batch_size, False,
                 dict(model.get("backbone_options") or {}))  # fmt: skip
    out = extractor.outputs(fr, source, Request((FrozenOutput(part, False),
                                                 FrozenOutput(part, True))))  # fmt: skip
    return {"direct": out[part], "mirror": out[f"{part}_mirror"]}
