"""The quality regressor: an FR backbone (knowledge transfer) plus a small regression head.

The LightningModule takes plain values only, so ``save_hyperparameters()`` and
``QualityRegressor.load_from_checkpoint(path)`` work without Hydra. The backbone is any PyTorch
model of the FR zoo (``fiqa.fr``: sface, iresnet18..200, mobilefacenet, adaface_ir*, ...; a
distilled student is one of them with the student's weights file), initialised from its FR
weights or from scratch.

eDifFIQA's representation-consistency term keeps the backbone's embedding close to the original
FR model's: with ``consistency_weight`` = theta > 0 the loss is, as in the public eDifFIQA code,
``(1 - theta) * L_quality + theta * (1 - cos(backbone(x), FR(x)))`` (theta = 0.5 there); the original
model is rebuilt from the registry for training only and is not part of the checkpoint.

With ``freeze=trunk`` and ``train_blocks`` = k > 0 the top k blocks of the trunk train too
(``fiqa.quality.backbone``); training on cached activations then feeds ``embed`` the
activation at the cut, which runs the top blocks, the embedding layers and the head.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from fiqa.core.containers import plain_container
from fiqa.fr import load_fr_model
from fiqa.quality.backbone import (
    FREEZE,
    activation_shape,
    build_backbone,
    head_parameter_names,
    top_block_parameter_names,
    trunk_cut,
)
from fiqa.quality.calibration import CHECKPOINT_KEY as CALIBRATION_KEY
from fiqa.quality.metrics import mean_absolute_error, pearson, spearman
from fiqa.quality.optim import SCHEDULERS, param_groups, with_schedule

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp")
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "mse": nn.MSELoss,
}
TARGET_SCALING_KEY = "fiqa_target_scaling"  # checkpoint entry of QualityRegressor.target_scaling


def check_choice(key: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"unknown model.{key} {value!r}; choose one of {sorted(choices)}")


def checkpoint_hyper_parameters(checkpoint: Path) -> Mapping[str, Any] | None:
    """A checkpoint's ``hyper_parameters``, read without loading its tensors (memory-mapped,
    ``weights_only`` as Lightning loads it), or None for a file that is no such checkpoint."""
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError):
        return None
    hparams = loaded.get("hyper_parameters") if isinstance(loaded, dict) else None
    return hparams if isinstance(hparams, Mapping) else None


def build_head(name: str, in_dim: int, hidden: int) -> nn.Module:
    """Regression head ``in_dim -> 1``: "linear", or "mlp" (in -> hidden -> 1, GELU)."""
    check_choice("head", name, HEADS)
    if name == "linear":
        return nn.Linear(in_dim, 1)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


class QualityRegressor(pl.LightningModule):
    """Face image quality regressor: ``forward(faces) -> (N,)`` quality, higher = better.

    Args:
        backbone: FR registry name of a PyTorch model (see ``fiqa.fr``).
        pretrained: Initialise the backbone from the FR weights (False: from scratch).
        backbone_weights: FR weights file (or a distilled student's); None = the bundled
            default (sface).
        backbone_options: Architecture options of the backbone (e.g. a student's ``blocks``).
        head: "linear" or "mlp".
        head_hidden: Hidden width of the MLP head (eDifFIQA: 1024).
        loss: "l1", "smooth_l1" or "mse".
        lr: Learning rate of the head.
        backbone_lr: Learning rate of the backbone.
        weight_decay: AdamW weight decay (weight matrices only).
        scheduler: "cosine" (per step over the run), "step" (x0.1 at 60% and 85%) or "none".
        freeze: "none", "trunk" (everything but the backbone's embedding layers is fixed: no
            backward pass through the convolutions, affordable on a CPU) or "backbone" (only the
            head trains). Frozen parts get no gradients and keep their BatchNorm statistics.
        unfreeze_at_epoch: With ``freeze`` != "none": the epoch at which the frozen part joins
            training at ``backbone_lr`` (``fiqa.train.callbacks.UnfreezeBackbone``); None = never.
        consistency_weight: theta of eDifFIQA's representation-consistency term, in [0, 1): the
            loss is (1 - theta) L_quality + theta (1 - cos(backbone(x), FR(x))) (0 = off).
        train_blocks: With ``freeze`` = "trunk": the last that many blocks of the trunk train
            too (``fiqa.quality.backbone``; 0 = the whole trunk frozen).
    """

    # Hyper-parameters added after checkpoints were first written, with the value that gives
    # an older checkpoint its behaviour (``load_from_checkpoint`` fills them in).
    ADDED_HPARAMS: ClassVar[dict[str, Any]] = {"train_blocks": 0}

    def __init__(
        self,
        backbone: str,
        pretrained: bool,
        backbone_weights: str | None,
        backbone_options: dict[str, Any] | None,
        head: str,
        head_hidden: int,
        loss: str,
        lr: float,
        backbone_lr: float,
        weight_decay: float,
        scheduler: str,
        freeze: str,
        unfreeze_at_epoch: int | None,
        consistency_weight: float,
        train_blocks: int,
    ) -> None:
        super().__init__()
        for key, value, choices in (("head", head, HEADS), ("loss", loss, LOSSES),
                                    ("scheduler", scheduler, SCHEDULERS),
                                    ("freeze", freeze, FREEZE)):  # fmt: skip
            check_choice(key, value, choices)
        if not 0 <= consistency_weight < 1:
            raise ValueError(
                f"model.consistency_weight must be in [0, 1), got {consistency_weight}"
            )
        if train_blocks and freeze != "trunk":
            raise ValueError(
                f"model.train_blocks={train_blocks} needs model.freeze=trunk (got {freeze!r}): "
                "it trains the top blocks of a frozen trunk"
            )
        backbone_options = plain_container(backbone_options)  # stored as plain values
        self.save_hyperparameters()
        self.backbone, self.backbone_info = build_backbone(
            backbone, pretrained, backbone_weights, backbone_options
        )
        self.head = build_head(head, self.backbone_info.embedding_size, head_hidden)
        # the first trunk block that trains, and the activation shape there (None: no cut)
        self.cut = trunk_cut(self.backbone, backbone, train_blocks)
        self.cut_shape = (
            None if self.cut is None
            else activation_shape(self.backbone, self.cut, self.input_size)
        )  # fmt: skip
        self.loss_fn = LOSSES[loss]()
        self._frozen_names = self._names_to_freeze()
        for param in self.frozen_parameters():
            param.requires_grad_(False)
        # FR loaders return eval-mode nets and Lightning keeps each module's mode at fit start.
        self.train()
        self._fr_reference: tuple[nn.Module, ...] = ()  # the consistency term's FR model
        # How labels became the targets it predicts (fiqa.quality.targets), set by the training
        # chain and kept in the checkpoint.
        self.target_scaling: dict[str, Any] | None = None
        # Raw output -> 0-100 (fiqa.quality.calibration), fitted after training on the best
        # model and kept in the checkpoint; None before (and in older checkpoints).
        self.calibration: dict[str, Any] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """Face ``(height, width)`` the backbone takes (its FR model's)."""
        return self.backbone_info.input_size

    @property
    def template(self) -> str:
        """Alignment template of the backbone's FR model."""
        return self.backbone_info.template

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Quality of float (N, 3, H, W) RGB faces in 0..255; returns (N,)."""
        return self.head(self.backbone(faces)).squeeze(-1)

    def _names_to_freeze(self) -> set[str]:
        names = {n for n, _ in self.backbone.named_parameters()}
        if self.hparams.freeze == "backbone":
            return names
        if self.hparams.freeze == "trunk":
            names -= head_parameter_names(self.backbone, self.input_size)
            if self.cut is not None:
                names -= top_block_parameter_names(self.backbone, self.cut)
            return names
        return set()

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The backbone parameters ``freeze`` keeps fixed (empty for "none")."""
        return [p for n, p in self.backbone.named_parameters() if n in self._frozen_names]

    def train(self, mode: bool = True) -> QualityRegressor:
        """Switch train/eval mode; modules whose parameters are all frozen stay in eval mode
        (their BatchNorm statistics do not drift)."""
        super().train(mode)
        for module in self.backbone.modules():
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
        return self

    def setup(self, stage: str) -> None:
        """Build the original FR model for the consistency term (training only)."""
        if stage == "fit" and self.hparams.consistency_weight > 0 and not self._fr_reference:
            hp = self.hparams
            fr = load_fr_model(
                {
                    "name": hp.backbone,
                    "weights": hp.backbone_weights,
                    "options": hp.backbone_options,
                }
            )
            fr.net.requires_grad_(False)
            self._fr_reference = (fr.net.to(self.device).eval(),)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's embedding of a batch of ``image`` s, or of cached frozen-part
        ``features`` (``fiqa.train.frozen``: the trunk's output for ``freeze=trunk``, its
        flattened activation at the cut with ``train_blocks``, the backbone's embedding for
        ``freeze=backbone``)."""
        if "features" not in batch:
            return self.backbone(batch["image"])
        features = batch["features"]
        if self.hparams.freeze == "backbone":
            return features
        if self.cut_shape is not None:  # channels-last: the layout the convolutions run fastest
            activation = features.view(len(features), *self.cut_shape)
            activation = activation.contiguous(memory_format=torch.channels_last)
            features = self.backbone.forward_from(activation, self.cut)
        return self.backbone.forward_head(features)

    def predict_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Quality of a batch of images or cached features, ``(N,)``."""
        return self.head(self.embed(batch)).squeeze(-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step on a batch {"image" or "features", "quality", "sample_id"}."""
        embedding = self.embed(batch)
        pred = self.head(embedding).squeeze(-1)
        loss = self.loss_fn(pred, batch["quality"])
        self.log("train/quality_loss", loss, on_step=True, on_epoch=False, batch_size=len(pred))
        if self._fr_reference:
            (reference,) = self._fr_reference
            with torch.no_grad():
                target = reference.to(embedding.device)(batch["image"])
            consistency = (1 - F.cosine_similarity(embedding, target, dim=1)).mean()
            self.log("train/consistency", consistency, on_step=True, batch_size=len(pred))
            theta = self.hparams.consistency_weight
            loss = (1 - theta) * loss + theta * consistency
        if not torch.isfinite(loss):
            ids = batch["sample_id"][:8].tolist()
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {self.current_epoch}, "
                f"batch {batch_idx} (first sample_ids {ids}); check the labels for NaN/inf "
                "and lower the learning rates"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(pred))
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start a fresh collection of validation predictions."""
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        """Collect predictions (metrics over the whole epoch); returned for callbacks."""
        pred = self.predict_batch(batch).detach().float()
        self._val_outputs.append((pred, batch["quality"].float(), batch["sample_id"].long()))
        return {"pred": pred, "sample_id": batch["sample_id"]}

    def on_validation_epoch_end(self) -> None:
        """Log val/loss, val/spearman, val/pearson and val/mae over all validation samples."""
        if not self._val_outputs:
            return
        preds, target, ids = (torch.cat(parts) for parts in zip(*self._val_outputs, strict=True))
        self._val_outputs = []
        if self.trainer.world_size > 1:
            # Every rank sees all samples; DistributedSampler padding duplicates are dropped.
            preds, target, ids = (self.all_gather(t).flatten() for t in (preds, target, ids))
            keep = torch.as_tensor(_first_occurrences(ids), device=preds.device)
            preds, target = preds[keep], target[keep]
        metrics = {
            "val/loss": float(self.loss_fn(preds, target).item()),
            "val/spearman": spearman(preds, target),
            "val/pearson": pearson(preds, target),
            "val/mae": mean_absolute_error(preds, target),
        }
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(preds))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any
    ) -> QualityRegressor:
        """Lightning's ``load_from_checkpoint``; an ``ADDED_HPARAMS`` entry a checkpoint from
        before it lacks (and ``kwargs`` does not give) takes the value of that time."""
        stored = checkpoint_hyper_parameters(Path(checkpoint_path))
        added = {k: v for k, v in cls.ADDED_HPARAMS.items() if stored is not None
                 and k not in stored}  # fmt: skip
        return super().load_from_checkpoint(checkpoint_path, *args, **(added | kwargs))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the target scaling and the calibration with the weights."""
        checkpoint[TARGET_SCALING_KEY] = self.target_scaling
        checkpoint[CALIBRATION_KEY] = self.calibration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the target scaling and calibration (None in checkpoints from before)."""
        self.target_scaling = checkpoint.get(TARGET_SCALING_KEY)
        self.calibration = checkpoint.get(CALIBRATION_KEY)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Quality of a batch (for ``Trainer.predict``)."""
        return self.predict_batch(batch)

    def configure_optimizers(self) -> Any:
        """AdamW with separate head/backbone learning rates; cosine or step decay per step."""
        hp = self.hparams
        groups = param_groups(list(self.head.parameters()), hp.lr, hp.weight_decay)
        groups += param_groups(list(self.backbone.parameters()), hp.backbone_lr, hp.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        return with_schedule(
            optimizer, hp.scheduler, lambda: self.trainer.estimated_stepping_batches
        )


def _first_occurrences(ids: torch.Tensor) -> list[int]:
    """Index of the first occurrence of each id (order of first appearance)."""
    seen: dict[int, int] = {}
    for index, value in enumerate(ids.tolist()):
        seen.setdefault(value, index)
    return sorted(seen.values())
