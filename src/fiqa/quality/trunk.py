"""Quality regressors that share a frozen FR trunk, scored from one pass of the FR network.

A regressor trained with ``freeze=trunk`` (or ``backbone``) on pretrained weights, never
unfrozen, without the consistency term and without ``train_blocks`` (whose top trunk blocks
train), keeps its frozen part exactly as the pretrained FR model has it: its score of a face is
``head(forward_head(forward_features(x)))`` with the FR network's own ``forward_features``
(``trunk``), or ``head(FR(x))`` (``backbone``); any other regressor is scored from its own
file. Scoring k such regressors through their own files runs the same trunk k times per face.
``QualityScore`` makes a regressor's score an extraction product (``fiqa.extract``): the
extraction engine runs the FR network once per batch and every requested product reads its
``Batch.features`` / ``Batch.raw``, so k regressors cost one trunk pass plus k small heads,
cached per model in the FR model's cache entry.

Nothing is trusted on the hyper-parameters alone: ``quality_score`` compares every frozen
tensor of the checkpoint with the FR network the extractor runs and refuses (``None``, logged)
a checkpoint whose frozen part differs; its caller then scores it from its own file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fiqa.core.provenance import file_sha256
from fiqa.extract import Batch, BatchProduct, FREntry
from fiqa.quality.backbone import head_parameter_names
from fiqa.quality.model import QualityRegressor, checkpoint_hyper_parameters

log = logging.getLogger(__name__)

PARTS = ("trunk", "backbone")  # the frozen parts a pass of the FR network computes


@dataclass(frozen=True)
class TrunkSpec:
    """The FR network a regressor's frozen part is, and which part.

    Attributes:
        backbone: FR registry name (``fiqa.fr``).
        weights: Its weights file; None = the bundled file (sface).
        options: Architecture options.
        part: ``trunk`` (everything before ``forward_head``) or ``backbone`` (all of it).
    """

    backbone: str
    weights: str | None
    options: Mapping[str, Any] = field(hash=False)
    part: str

    @property
    def network(self) -> str:
        """The FR network as a grouping key: regressors with the same key share one pass."""
        config = {"name": self.backbone, "weights": self.weights, "options": dict(self.options)}
        return json.dumps(config, sort_keys=True, default=str)

    def fr_entry(self, batch_size: int) -> FREntry:
        """The extraction entry of the FR network (no mirror: a regressor scores the face)."""
        return FREntry(self.backbone, self.weights, batch_size, False, dict(self.options))


def pretrained_frozen_part(hparams: Mapping[str, Any]) -> bool:
    """Whether a regressor's frozen part stays exactly its pretrained FR model's: ``freeze``
    trunk or backbone, pretrained, no ``unfreeze_at_epoch``, no consistency term (training may
    then cache its outputs: ``fiqa.train.frozen``)."""
    return (
        hparams.get("freeze") in PARTS
        and bool(hparams.get("pretrained"))
        and hparams.get("unfreeze_at_epoch") is None
        and not hparams.get("consistency_weight")
    )


def shares_frozen_part(hparams: Mapping[str, Any]) -> bool:
    """Whether a regressor may be scored from its FR network's pass: its frozen part is the
    pretrained FR model's and it is all of the trunk (no ``train_blocks``, whose top blocks
    changed; absent from older checkpoints: 0)."""
    return pretrained_frozen_part(hparams) and not hparams.get("train_blocks")


def shared_trunk(checkpoint: Path) -> TrunkSpec | None:
    """The FR network and frozen part a quality checkpoint shares, from its hyper-parameters.

    Args:
        checkpoint: A Lightning ``.ckpt`` of ``QualityRegressor``.

    Returns:
        The spec, or None when the frozen part is not the pretrained FR model's (or the file
        is no readable quality checkpoint: its scorer then names the problem).
    """
    hparams = checkpoint_hyper_parameters(Path(checkpoint))
    if hparams is None or not shares_frozen_part(hparams) or "backbone" not in hparams:
        return None
    weights = hparams.get("backbone_weights")
    return TrunkSpec(
        backbone=str(hparams["backbone"]),
        weights=None if weights is None else str(weights),
        options=dict(hparams.get("backbone_options") or {}),
        part=str(hparams["freeze"]),
    )


@dataclass(frozen=True)
class QualityScore(BatchProduct):
    """A quality regressor's score of each face, from the FR network's shared pass.

    Keyed by the checkpoint's SHA-256 (not its path): a retrained model is another product,
    the same file moved is the same one. Build it with ``quality_score``, which checks the
    frozen part first.

    Attributes:
        sha256: SHA-256 of the checkpoint file.
        part: The frozen part the FR network's pass stands in for (``trunk`` or ``backbone``).
        model: The loaded regressor (not part of the cache key).
    """

    sha256: str
    part: str
    model: QualityRegressor = field(compare=False, repr=False)

    dtype: ClassVar[type] = np.float32
    ndim: ClassVar[int] = 1
    white_box: ClassVar[str | None] = "shared-trunk quality scores"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"quality-{self.sha256[:16]}"

    def stem(self, batch_size: int) -> str:
        """The name: the checkpoint's hash is the whole key (the batch size changes nothing)."""
        return self.name

    def compute(self, batch: Batch) -> torch.Tensor:
        model = self.model
        if model.device != batch.x.device:
            model.to(batch.x.device)
        model.eval()  # the loader's mode, restated: BatchNorm must use its statistics
        with torch.no_grad():
            if self.part == "trunk":
                embedding = model.backbone.forward_head(batch.features)
            else:
                embedding = batch.raw
            return model.head(embedding).squeeze(-1).float()


def quality_score(checkpoint: Path, spec: TrunkSpec, fr_net: nn.Module) -> QualityScore | None:
    """The shared-pass product of a checkpoint, after checking its frozen part is ``fr_net``.

    Args:
        checkpoint: The quality checkpoint (``shared_trunk`` gave ``spec``).
        spec: Its frozen part.
        fr_net: The FR network the extractor runs for ``spec.fr_entry``.

    Returns:
        The product, or None (with a warning saying why) when the checkpoint cannot be loaded
        or a frozen tensor differs from ``fr_net``'s: the caller scores it from its file.
    """
    try:
        model = QualityRegressor.load_from_checkpoint(checkpoint, map_location="cpu",
                                                      pretrained=False).eval()  # fmt: skip
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("%s: not scored from the shared %s pass: cannot load it (%s)", checkpoint,
                    spec.backbone, reason)  # fmt: skip
        return None
    why = frozen_mismatch(model.backbone, fr_net, spec.part, model.input_size)
    if why is not None:
        log.warning("%s: not scored from the shared %s pass, its frozen %s is not the FR "
                    "network's (%s); scoring it from its own file", checkpoint, spec.backbone,
                    spec.part, why)  # fmt: skip
        return None
    return QualityScore(file_sha256(str(checkpoint)), spec.part, model)


def frozen_keys(state: Mapping[str, torch.Tensor], head_modules: set[str]) -> set[str]:
    """State-dict keys outside the modules ``head_modules`` (parameters and buffers alike)."""
    return {key for key in state if key.rpartition(".")[0] not in head_modules}


def frozen_mismatch(
    backbone: nn.Module, fr_net: nn.Module, part: str, input_size: tuple[int, int]
) -> str | None:
    """Why a regressor's frozen part is not ``fr_net``'s, or None when every tensor is equal.

    For ``trunk`` the frozen part is everything but the modules whose parameters
    ``forward_head`` uses (their BatchNorm statistics train with them); for ``backbone`` it is
    every parameter and buffer.
    """
    if part not in PARTS:
        return f"unknown frozen part {part!r}"
    head_modules: set[str] = set()
    if part == "trunk":
        names = head_parameter_names(backbone, input_size)
        head_modules = {name.rpartition(".")[0] for name in names}
    mine, theirs = backbone.state_dict(), fr_net.state_dict()
    keys, fr_keys = frozen_keys(mine, head_modules), frozen_keys(theirs, head_modules)
    if keys != fr_keys:
        odd = sorted(keys ^ fr_keys)
        return f"{len(odd)} tensors are in one network only (first {odd[:3]})"
    differ = sorted(key for key in keys if not _equal(mine[key], theirs[key]))
    if differ:
        return f"{len(differ)} of {len(keys)} frozen tensors differ (first {differ[:3]})"
    return None


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and values (bit for bit: a frozen tensor is a copy, never rounded)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(torch.equal(a.detach().cpu(), b.detach().cpu()))
